"""Report rendering on hand-made evidence: every section present, real inline SVG, nothing external."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgebench.config import BudgetConfig
from edgebench.decide.evidence import MemoryEstimate, ModelEvidence
from edgebench.decide.rank import rank
from edgebench.decide.route import route
from edgebench.measure.throughput import ThroughputResult
from edgebench.report import SECTION_IDS, render_report
from test_decide import RAM_MIB, make_model, make_throughput, seed_like

PROVENANCE = {
    "llama_cpp_build": "b1234 (abcdef0), gcc 12, x86_64",
    "host_fingerprint": "host-fp",
    "host": "test box, 16 GiB",
}
PLOTS = ("thread-scaling", "depth-scaling", "memory-plot", "quality", "pareto")


def _sweep(name: str, base_pp: float, base_tg: float) -> list[ThroughputResult]:
    rows = []
    for kv in ("f16", "q4_0"):
        for t in (1, 2, 4):
            rows.append(
                make_throughput(name, "pp", base_pp * t * (1.0 if kv == "f16" else 0.9), threads=t, kv=kv)
            )
            rows.append(make_throughput(name, "tg", base_tg * min(t, 2) / 2, threads=t, kv=kv))
    for d in (512, 4096):
        rows.append(make_throughput(name, "tg", base_tg * (0.9 if d == 512 else 0.7), depth=d))
    return rows


def _evidence() -> list[ModelEvidence]:
    ev = seed_like()
    rich = [e.model_copy(update={"throughput": [*e.throughput, *_sweep(e.name, 10, 5)]}) for e in ev[:2]]
    planned = make_model(
        "planned",
        params=3e9,
        tg=4.0,
        predicted=MemoryEstimate(ctx=8192, host_total_mib=2600, model_mib=2000, kv_mib=300, compute_mib=250),
    )
    return [*rich, *ev[2:], planned]


def _render(ev: list[ModelEvidence], out: Path) -> tuple[Path, Path]:
    b = BudgetConfig()
    ranking = rank(ev, b)
    routing = route(ev, b, ram_total_mib=RAM_MIB, ranking=ranking)
    return render_report(ev, ranking, routing, PROVENANCE, out)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The full hand-made set rendered once (matplotlib is the slow part)."""
    return _render(_evidence(), tmp_path_factory.mktemp("report"))


def _sections(html: str) -> dict[str, str]:
    found = re.findall(r'<section id="([^"]+)">(.*?)</section>', html, flags=re.S)
    return dict(found)


def test_every_section_is_present_with_inline_svg_and_no_external_urls(rendered: tuple[Path, Path]) -> None:
    md, html_path = rendered
    html = html_path.read_text()
    sections = _sections(html)
    assert tuple(sections) == SECTION_IDS
    for sid in PLOTS:
        body = sections[sid]
        svgs = re.findall(r"<svg\b.*?</svg>", body, flags=re.S)
        assert len(svgs) == 1, sid
        svg = svgs[0]
        assert svg.count("<path") > 0 and (svg.count("<path") + svg.count("<use")) > 10, sid
        # Data artists carry a "data-" gid; their groups hold real marks, not just axes.
        marks = re.findall(
            rf'<g id="{re.escape(sid.split("-")[0])}[^"]*data-[^"]*">(.*?)</g>', svg, flags=re.S
        )
        assert marks and any("<path" in m or "<use" in m for m in marks), sid
        assert "<text" in svg  # svg.fonttype = none keeps text as text
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "<link" not in html and "<script" not in html
    # Ids are unique across the page even with five inline figures.
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    text = md.read_text()
    for sid in PLOTS:
        assert (md.parent / "plots" / f"{sid}.svg").is_file()
        assert f"](plots/{sid}.svg)" in text


def test_numbers_are_labelled_measured_or_predicted(rendered: tuple[Path, Path]) -> None:
    _, html_path = rendered
    sections = _sections(html_path.read_text())
    assert "prefill t/s (measured)" in sections["throughput"]
    memory = sections["memory"]
    assert "<td>predicted</td>" in memory and "<td>measured</td>" in memory
    assert "anonymous MiB (measured)" in memory and "<td>403</td>" in memory  # 1075 × 0.375
    assert "predicted" in sections["memory-plot"]
    assert "(measured)" in sections["routing"] and "(measured)" in sections["quality"]
    assert "build" in sections["provenance"] and "sha-q2b" in sections["provenance"]
    assert "edgebench version" in sections["provenance"]


def test_model_map_routing_and_ties_reach_the_page(rendered: tuple[Path, Path]) -> None:
    md, html_path = rendered
    sections = _sections(html_path.read_text())
    assert "q2b" in sections["model-map"] and "Bigger and not better" in sections["model-map"]
    assert "Do not use" in sections["routing"] and "tool refusal" in sections["routing"]
    assert "tied with" in sections["ranking"]
    assert "| fast chat |" in md.read_text()


def test_sections_without_data_say_not_measured_yet(tmp_path: Path) -> None:
    bare = ModelEvidence(name="bare", sha256="x", backend="cpu", file_size=None, params=None, quant=None)
    md, html_path = _render([bare], tmp_path)
    sections = _sections(html_path.read_text())
    assert tuple(sections) == SECTION_IDS
    for sid in ("throughput", "memory", "context", *PLOTS, "ranking"):
        assert "not measured yet" in sections[sid], sid
        assert "<svg" not in sections[sid]
    assert "not measured yet" in md.read_text()
    _, empty_html = _render([], tmp_path / "empty")
    assert tuple(_sections(empty_html.read_text())) == SECTION_IDS


def test_thread_axes_have_integer_ticks() -> None:
    from edgebench.report.plots import thread_scaling

    e = seed_like()[0]
    rows = [t for t in _sweep(e.name, 10, 5) if t.config.threads in (1, 2)]
    ev = [e.model_copy(update={"throughput": rows})]
    svg = thread_scaling(ev)
    assert svg is not None
    blocks = re.split(r'<g id="threads-(?=[xy]tick_)', svg)[1:]
    xticks = [m for b in blocks if b.startswith("xtick_") for m in re.findall(r">([^<>]+)</text>", b)]
    numbers = [t.strip() for t in xticks if re.fullmatch(r"\s*[0-9.]+\s*", t)]
    assert numbers and all(t.isdigit() for t in numbers), numbers  # 1, 2 — never 1.25 or 1.5
