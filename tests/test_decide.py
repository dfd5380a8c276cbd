"""Decide rules on hand-made record sets: ties, Pareto domination, model map, routing, do-not-use, schema.

The factories below build `ThroughputResult` / `SuiteScore` / `ModelEvidence` records by hand
(shaped like seeds 000 and 001); test_report.py reuses them.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgebench.config import BudgetConfig
from edgebench.decide.evidence import ContextEvidence, MemoryEstimate, ModelEvidence
from edgebench.decide.export import routing_document, routing_toml, validate_routing, write_routing
from edgebench.decide.rank import Ranking, rank
from edgebench.decide.route import route
from edgebench.decide.routing import Routing
from edgebench.measure.space import CpuSet, Point
from edgebench.measure.throughput import ThermalSnap, ThroughputResult
from edgebench.quality.score import CategoryScore, ItemScore, SuiteScore

RAM_MIB = 16384  # the hand-made host: 16 GiB, default 1024 MiB reserve → 15360 MiB usable
CATS = ("reasoning", "factual", "code", "instruction", "tool_call", "math")

# ------------------------------------------------------------------------------------------ factories


def make_throughput(
    model: str,
    kind: str,
    mean: float | None,
    *,
    threads: int = 4,
    kv: str = "q4_0",
    depth: int = 0,
    status: str = "ok",
    rel: float = 0.02,
    rss: float = 1000.0,
) -> ThroughputResult:
    point = Point(threads=threads, kv=kv, fa="on", ubatch=512, cpus=CpuSet(name="all", cpus=None))
    ok = status == "ok" and mean is not None
    snap = ThermalSnap(governor="performance", mean_mhz=2000.0, max_temp_c=50.0)
    return ThroughputResult(
        model=model,
        model_sha256=f"sha-{model}",
        point=point,
        config=point.runtime(),
        test=f"pp512 @ d{depth}" if kind == "pp" else f"tg128 @ d{depth}",
        kind=kind,
        n_prompt=512 if kind == "pp" else 0,
        n_gen=128 if kind == "tg" else 0,
        depth=depth,
        status=status,
        cause="ok" if ok else status,
        samples_ts=[mean] * 3 if ok and mean is not None else [],
        n=3 if ok else 0,
        mean_ts=mean if ok else None,
        sd_ts=mean * rel if ok and mean is not None else None,
        ci_low=mean * (1 - rel) if ok and mean is not None else None,
        ci_high=mean * (1 + rel) if ok and mean is not None else None,
        rel_ci=rel if ok else None,
        processes=1,
        peak_rss_mib=rss,
        wall_s=10.0,
        bytes_per_token=None,
        bandwidth_gbs=20.0,
        efficiency=0.5 if kind == "tg" and ok else None,
        thermal_before=snap,
        thermal_after=snap,
        drift=False,
        bench_row=None,
        build_id="build-b1234",
        host_fingerprint="host-fp",
        measured_at="2026-01-01T00:00:00+00:00",
    )


def make_suite(
    target: str,
    cats: dict[str, float],
    *,
    quality: tuple[float, float, float] | None = None,
    latency: float = 5.0,
    sd: float = 1.5,
    failures: dict[str, dict[str, int]] | None = None,
    template_missing: bool = False,
    suite: str = "core",
    items_per_cat: int = 2,
    runs_per_item: int = 4,
) -> SuiteScore:
    failures = failures or {}
    items, categories = [], []
    for cat, mean in cats.items():
        fails = failures.get(cat, {})
        for i in range(items_per_cat):
            items.append(
                ItemScore(
                    item=f"{cat}-{i}",
                    category=cat,
                    weight=1.0,
                    runs=runs_per_item,
                    pass_rate=mean,
                    pass_at_1=mean >= 0.5,
                    pass_hat_k=mean == 1.0,
                    failures={k: v // items_per_cat for k, v in fails.items()},
                )
            )
        categories.append(
            CategoryScore(
                category=cat,
                weight=1.0,
                items=items_per_cat,
                greedy_passed=round(mean * items_per_cat),
                wilson_low=max(0.0, mean - 0.3),
                wilson_high=min(1.0, mean + 0.3),
                mean=mean,
                ci_low=max(0.0, mean - 0.15),
                ci_high=min(1.0, mean + 0.15),
                failures=fails,
            )
        )
    w = sum(cats.values()) / len(cats)
    wq = quality or (w, max(0.0, w - 0.1), min(1.0, w + 0.1))
    return SuiteScore(
        target=target,
        suite=suite,
        mode="chat",
        runs=len(items) * runs_per_item,
        items=items,
        categories=categories,
        weighted=wq[0],
        weighted_low=wq[1],
        weighted_high=wq[2],
        mean_latency_s=latency,
        latency_sd_s=sd,
        template_missing=template_missing,
    )


def make_context(
    stable: int | None, host: float | None, tried: dict[int, bool] | None = None
) -> ContextEvidence:
    if tried is None:
        tried = {c: True for c in (4096, 8192, 16384, 32768) if stable is not None and c <= stable}
    return ContextEvidence(
        stable_ctx=stable,
        tried=tried,
        host_total_mib=host,
        anon_mib=None if host is None else host * 0.375,
        model_mib=None if host is None else host * 0.6,
        kv_mib=None if host is None else host * 0.1,
        compute_mib=None if host is None else host * 0.2,
        load_s=8.0,
    )


def make_model(
    name: str,
    *,
    params: float | None = None,
    backend: str = "cpu",
    pp: float | None = None,
    tg: float | None = None,
    context: ContextEvidence | None = None,
    quality: SuiteScore | None = None,
    chat_template: bool = True,
    throughput: list[ThroughputResult] | None = None,
    predicted: MemoryEstimate | None = None,
) -> ModelEvidence:
    best_pp = make_throughput(name, "pp", pp) if pp is not None else None
    best_tg = make_throughput(name, "tg", tg) if tg is not None else None
    rows = throughput if throughput is not None else [r for r in (best_pp, best_tg) if r is not None]
    return ModelEvidence(
        name=name,
        sha256=f"sha-{name}",
        backend=backend,
        file_size=int(params * 0.6) if params else None,
        params=int(params) if params else None,
        quant="Q4_K_M",
        chat_template=chat_template,
        best_pp=best_pp,
        best_tg=best_tg,
        throughput=rows,
        context=context,
        quality=quality,
        predicted_memory=predicted,
    )


def _cats(base: float, **over: float) -> dict[str, float]:
    return {c: over.get(c, base) for c in CATS}


def seed_like() -> list[ModelEvidence]:
    """Seeds 000/001 in miniature: 0.8B fast, 2B default, 4B bigger-not-better, 9B quality, 27B too big."""
    return [
        make_model(
            "q0.8b",
            params=0.8e9,
            pp=54.6,
            tg=12.07,
            context=make_context(16384, 1075),
            quality=make_suite("q0.8b", _cats(0.55, tool_call=0.9), quality=(0.55, 0.40, 0.70), latency=4.9),
        ),
        make_model(
            "q2b",
            params=2e9,
            pp=32.4,
            tg=8.68,
            context=make_context(32768, 1863),
            quality=make_suite(
                "q2b", _cats(0.72, tool_call=0.95), quality=(0.72, 0.62, 0.83), latency=6.1, sd=2.0
            ),
        ),
        make_model(
            "q4b",
            params=4e9,
            pp=13.0,
            tg=3.62,
            context=make_context(16384, 3324),
            quality=make_suite(
                "q4b", _cats(0.72, tool_call=0.9), quality=(0.72, 0.60, 0.85), latency=17.4, sd=4.0
            ),
        ),
        make_model(
            "q9b",
            params=9e9,
            pp=7.6,
            tg=2.48,
            context=make_context(8192, 5250),
            quality=make_suite(
                "q9b", _cats(0.92, tool_call=1.0), quality=(0.92, 0.85, 0.98), latency=18.2, sd=4.0
            ),
        ),
        make_model(
            "q27b",
            params=27e9,
            pp=1.37,
            tg=0.62,
            context=make_context(4096, 15503),
            quality=make_suite("q27b", _cats(0.5), quality=(0.5, 0.3, 0.7), latency=140.0, sd=30.0),
        ),
        make_model(
            "claude-2b",
            params=2e9,
            pp=32.0,
            tg=8.5,
            context=make_context(32768, 1850),
            quality=make_suite(
                "claude-2b",
                _cats(0.75, tool_call=0.0, reasoning=1.0),
                quality=(0.7, 0.58, 0.8),
                latency=6.3,
                failures={"tool_call": {"refused": 8}},
            ),
        ),
        make_model(
            "thinker-1.2b",
            params=1.2e9,
            pp=40.0,
            tg=9.6,
            context=make_context(16384, 1300),
            quality=make_suite(
                "thinker-1.2b",
                _cats(0.5),
                latency=25.0,
                sd=8.0,
                failures={"reasoning": {"timeout": 8}, "math": {"empty": 6}},
            ),
        ),
        make_model("base-270m", params=0.27e9, pp=400.0, tg=60.0, chat_template=False),
        make_model(
            "npu-1.7b",
            backend="npu",
            quality=make_suite(
                "npu-1.7b", _cats(0.7, tool_call=1.0), quality=(0.7, 0.55, 0.82), latency=4.0, sd=1.0
            ),
        ),
    ]


def _decide(ev: list[ModelEvidence], **budget: float) -> tuple[Ranking, Routing]:
    b = BudgetConfig(**budget)  # type: ignore[arg-type]
    ranking = rank(ev, b)
    return ranking, route(ev, b, ram_total_mib=RAM_MIB, ranking=ranking)


def _line(routing: Routing, role: str) -> list[str | None]:
    return [ln.model for ln in routing.model_map if ln.role == role]


def _dnu(routing: Routing) -> dict[str, set[str]]:
    return {d.model: {c.rule for c in d.causes} for d in routing.do_not_use}


# -------------------------------------------------------------------------------------------- rank


def test_overlapping_composite_cis_are_declared_tied() -> None:
    ranking, _ = _decide(seed_like())
    pos = {r.name: r.position for r in ranking.rows}
    assert pos["q0.8b"] == pos["q2b"]  # composites overlap: one group, not ordered by noise
    row = next(r for r in ranking.rows if r.name == "q0.8b")
    assert "q2b" in row.tied_with and "tied" in row.because
    assert pos["q9b"] > pos["q2b"]  # clear of the top group
    for g_hi, g_lo in zip(ranking.groups[1:], ranking.groups[:-1], strict=True):
        assert g_hi.high < g_lo.low  # every group lies beyond noise below the one above it
    assert all(r.because for r in ranking.rows)


def test_two_models_apart_beyond_noise_are_not_tied() -> None:
    a = make_model("a", quality=make_suite("a", _cats(0.9), quality=(0.9, 0.85, 0.95), latency=5, sd=0.5))
    b = make_model("b", quality=make_suite("b", _cats(0.3), quality=(0.3, 0.2, 0.4), latency=20, sd=0.5))
    ranking, _ = _decide([b, a])
    assert [(r.name, r.position, r.tied_with) for r in ranking.rows] == [("a", 1, []), ("b", 2, [])]
    r = ranking.rows[0]
    assert r.composite_low <= r.composite <= r.composite_high
    assert r.composite == pytest.approx(0.9 * 60 / 5)


def test_dominated_models_are_named_with_who_dominates_them() -> None:
    ranking, _ = _decide(seed_like())
    pareto = {p.name: p for p in ranking.pareto}
    assert not pareto["q4b"].on_front
    assert "q2b" in pareto["q4b"].dominated_by  # as good, faster and smaller: seed 001 finding 5
    assert "q2b" in pareto["q4b"].because
    assert not pareto["q27b"].on_front
    for name in ("q2b", "q9b", "npu-1.7b"):
        assert pareto[name].on_front, pareto[name].because
    # Seed 001 finding 1: the NPU model is faster beyond noise at a quality within noise.
    assert pareto["q0.8b"].dominated_by == ["npu-1.7b"]
    assert "RAM not compared" in pareto["q0.8b"].because


def test_missing_ram_never_makes_a_model_dominated() -> None:
    fast = make_model(
        "fast", quality=make_suite("fast", _cats(0.7), quality=(0.7, 0.6, 0.8), latency=4, sd=0.3)
    )
    slow = make_model(
        "slow",
        context=make_context(8192, 500),
        quality=make_suite("slow", _cats(0.7), quality=(0.7, 0.6, 0.8), latency=10, sd=0.3),
    )
    ranking, _ = _decide([fast, slow])
    pareto = {p.name: p for p in ranking.pareto}
    # fast has no RAM figure: RAM is not compared, so fast dominates slow on latency alone.
    assert pareto["slow"].dominated_by == ["fast"]
    assert pareto["fast"].on_front and pareto["fast"].ram_source == "not measured"


# ------------------------------------------------------------------------------------------- route


def test_model_map_follows_the_seed() -> None:
    _, routing = _decide(seed_like())
    # Decode speed among models that fit and are usable: base-270m decodes faster but has no template.
    assert _line(routing, "fastest") == ["q0.8b"]
    assert _line(routing, "default") == ["q2b"]
    assert _line(routing, "quality") == ["q9b"]
    default = next(ln for ln in routing.model_map if ln.role == "default")
    assert "tool_call" in default.because and default.numbers["stable_ctx"] == 32768
    assert "q0.8b" in default.because  # the composite tie is declared, then settled by quality


def test_model_that_does_not_fit_is_not_practical() -> None:
    _, routing = _decide(seed_like())
    lines = {ln.model: ln for ln in routing.model_map if ln.role == "not_practical"}
    assert "q27b" in lines
    because = lines["q27b"].because
    assert "does not fit" in because and "15503" in because and "15360" in because
    assert "latency 140.0 s > 120 s" in because and "stable ctx 4096 < floor 8192" in because
    assert "q2b" not in lines
    assert all(r.primary is None or r.primary.model != "q27b" for r in routing.routes)


def test_predicted_memory_judges_fit_when_nothing_was_measured() -> None:
    big = make_model(
        "big",
        quality=make_suite("big", _cats(0.8), latency=10),
        predicted=MemoryEstimate(
            ctx=8192, host_total_mib=20000, model_mib=18000, kv_mib=1000, compute_mib=500
        ),
    )
    _, routing = _decide([big])
    line = next(ln for ln in routing.model_map if ln.role == "not_practical")
    assert line.model == "big" and "predicted" in line.because


def test_tool_refusing_model_lands_in_do_not_use() -> None:
    _, routing = _decide(seed_like())
    dnu = _dnu(routing)
    assert dnu["claude-2b"] == {"tool_refusal"}
    cause = next(d for d in routing.do_not_use if d.model == "claude-2b").causes[0]
    assert "refused 8" in cause.detail and "of 8 tool-call runs" in cause.detail
    used = {c.model for r in routing.routes for c in (r.primary, r.backup) if c is not None}
    assert "claude-2b" not in used
    reasoning = next(r for r in routing.routes if r.use_case == "reasoning")
    assert reasoning.primary is not None and reasoning.primary.model != "claude-2b"


def test_thinking_loops_template_missing_and_context_failure_causes() -> None:
    broken = make_model(
        "noctx",
        context=make_context(None, None, tried={4096: False, 8192: False}),
        quality=make_suite("noctx", _cats(0.6)),
    )
    _, routing = _decide([*seed_like(), broken])
    dnu = _dnu(routing)
    assert "thinking_loops" in dnu["thinker-1.2b"]
    loops = next(c for d in routing.do_not_use if d.model == "thinker-1.2b" for c in d.causes)
    assert loops.detail.startswith("14 of 48 runs timed out or came back empty")
    assert dnu["base-270m"] == {"template_missing"}
    assert dnu["noctx"] == {"context_failure"}
    detail = next(d for d in routing.do_not_use if d.model == "noctx").causes[0].detail
    assert "4096 failed" in detail


def test_bigger_and_not_better_is_flagged() -> None:
    _, routing = _decide(seed_like())
    flags = {f.bigger: f for f in routing.bigger_not_better}
    assert flags["q4b"].smaller == "q2b"  # the best-scoring smaller, faster model
    assert "q0.8b" in flags["q4b"].also
    assert "17.4 s vs 6.1 s" in flags["q4b"].because and "4B params vs 2B params" in flags["q4b"].because
    assert "q9b" not in flags  # better beyond noise than every smaller model
    dnu = _dnu(routing)
    assert "bigger_not_better" in dnu["q4b"]  # and dominated by q2b: do not use
    # q2b vs q0.8b: a higher point estimate within noise. Flagged (unproven), still usable.
    assert flags["q2b"].smaller == "q0.8b" and "within noise" in flags["q2b"].because
    assert "q2b" not in dnu


def test_routing_table_rows_and_reasons() -> None:
    _, routing = _decide(seed_like())
    routes = {r.use_case: r for r in routing.routes}
    assert set(routes) == {
        "fast_chat",
        "reasoning",
        "code",
        "tool_calling",
        "factual",
        "deep_analysis",
        "background",
    }
    assert routes["deep_analysis"].primary is not None and routes["deep_analysis"].primary.model == "q9b"
    tool = routes["tool_calling"]
    assert tool.primary is not None and tool.primary.score >= 0.5 and tool.backup is not None
    for r in routes.values():
        assert r.why
        if r.primary is not None:
            assert r.primary.backend in r.why and r.primary.model in r.why
    # code: every model within budget ties at 0.72-0.7 ± 0.15, so the fastest wins.
    code = routes["code"]
    assert code.primary is not None and code.primary.model == "npu-1.7b" and "lower mean latency" in code.why


def test_missing_evidence_is_not_measured_never_a_crash() -> None:
    bare = ModelEvidence(name="bare", sha256="x", backend="cpu", file_size=None, params=None, quant=None)
    failed = make_model(
        "oom",
        params=1e9,
        throughput=[make_throughput("oom", "tg", None, status="oom-killed")],
    )
    ranking, routing = _decide([bare, failed])
    assert {u.name for u in ranking.unranked} == {"bare", "oom"}
    assert all(r.primary is None and "no model qualifies" in r.why for r in routing.routes)
    missing = {n.model: n.missing for n in routing.not_measured}
    assert missing["bare"] == ["throughput", "context", "quality", "memory"]
    assert all(ln.model is None for ln in routing.model_map if ln.role != "not_practical")
    oom = next(ln for ln in routing.model_map if ln.role == "not_practical")
    assert oom.model == "oom" and "oom-killed" in oom.because
    assert validate_routing(routing_document(routing)) == []
    _, empty = _decide([])
    assert validate_routing(routing_document(empty)) == []


def test_scores_from_another_suite_are_not_compared() -> None:
    a = make_model("a", quality=make_suite("a", _cats(0.8)))
    b = make_model("b", quality=make_suite("b", _cats(0.8)))
    c = make_model("c", quality=make_suite("c", _cats(0.9), suite="seed14"))
    ranking, _ = _decide([a, b, c])
    assert ranking.suite == "core"
    assert [u.name for u in ranking.unranked] == ["c"] and "not comparable" in ranking.unranked[0].because


# ------------------------------------------------------------------------------------------ schema


def test_routing_file_validates_and_round_trips(tmp_path: Path) -> None:
    _, routing = _decide(seed_like())
    js, tm = write_routing(routing, tmp_path)
    doc = json.loads(js.read_text())
    assert validate_routing(doc) == []
    assert tomllib.loads(tm.read_text()) == doc
    assert doc["budgets"]["ram_total_mib"] == RAM_MIB
    assert routing_toml(doc).startswith("# edgebench routing table")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("routes",), None),  # a required key gone
        (("model_map", 0, "role"), "best"),  # not a role
        (("do_not_use", 0, "causes", 0, "rule"), "vibes"),
        (("routes", 0, "primary", "score"), "high"),
        (("budgets", "tool_call_floor"), 1.5),
        (("schema_version",), 1),  # a version-1 file is not this format
    ],
)
def test_broken_routing_file_does_not_validate(path: tuple[str | int, ...], value: object) -> None:
    _, routing = _decide(seed_like())
    doc = copy.deepcopy(routing_document(routing))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    errors = validate_routing(doc)
    assert errors, f"{path} = {value!r} should break the schema"


def test_no_model_qualifies_names_the_closest_and_what_it_misses(tmp_path: Path) -> None:
    _, routing = _decide(seed_like(), latency_s=1.0)  # nobody answers within 1 s
    routes = {r.use_case: r for r in routing.routes}
    tool = routes["tool_calling"]
    assert tool.primary is None and tool.closest is not None
    # npu-1.7b misses only the latency budget (tool_call 1.00 ≥ floor): the fewest misses
    assert tool.closest.model == "npu-1.7b" and tool.closest.misses == ["latency 4.0 s > 1 s budget"]
    assert "closest: npu-1.7b, misses latency 4.0 s > 1 s budget" in tool.why
    _, strict = _decide(seed_like(), latency_s=1.0, tool_call_floor=1.0)
    bg = {r.use_case: r for r in strict.routes}["background"]
    assert bg.closest is not None and bg.closest.model == "npu-1.7b"  # tool_call 1.00 meets a 1.0 floor
    worse = [c for c in (bg.closest.misses,) if any("tool-call floor" in m for m in c)]
    assert not worse
    for r in routing.routes:
        assert (r.closest is None) == (r.primary is not None)
    doc = json.loads(write_routing(routing, tmp_path)[0].read_text())
    assert validate_routing(doc) == []
    assert doc["schema_version"] == 2


def test_routing_file_carries_serving_specs(tmp_path: Path) -> None:
    from edgebench.measure.serving import ServingSpec
    from edgebench.runtime.flags import RuntimeConfig

    ev = seed_like()
    spec = ServingSpec(
        model="q2b",
        model_path="/models/q2b.gguf",
        model_sha256="a" * 64,
        chat_template=True,
        runtime=RuntimeConfig(threads=4, threads_batch=6, ubatch=256, ctx=16384, cache_type_k="q8_0"),
        ctx_source="context probe",
        sources=["decode winner"],
        tg_ts=12.0,
        host_fingerprint="host-fp",
    )
    b = BudgetConfig()
    routing = route(ev, b, ram_total_mib=RAM_MIB, serving={"q2b": spec, "gone": spec})
    assert set(routing.serving) == {"q2b"}  # only models in the evidence
    doc = json.loads(write_routing(routing, tmp_path)[0].read_text())
    assert validate_routing(doc) == []
    rt = RuntimeConfig.model_validate(doc["serving"]["q2b"]["runtime"])
    assert (rt.threads, rt.threads_batch, rt.ubatch, rt.ctx, rt.cache_type_k) == (4, 6, 256, 16384, "q8_0")
    doc["serving"]["q2b"]["runtime"]["threads"] = 0
    assert validate_routing(doc) != []


def test_a_routing_file_without_quality_loads_back(tmp_path: Path) -> None:
    """The file leaves out what is None (no suite, no primary): the gateway must still read it."""
    from edgebench.serve.table import load_routing

    routing = route([make_model("m", tg=10.0, pp=100.0)], BudgetConfig(), ram_total_mib=None)
    assert routing.suite is None and all(r.primary is None for r in routing.routes)
    back = load_routing(write_routing(routing, tmp_path)[0])
    assert back.suite is None and [r.use_case for r in back.routes] == [r.use_case for r in routing.routes]
    assert back.budgets.ram_total_mib is None
