"""`report --hosts all`: two boards' rows in one store (this host measured for real; a second board's
rows arrive as an imported bundle — recorded from this host's own rows re-labelled as another
board, named as such) rendered side by side, in markdown and in HTML that Chromium loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.config import load_config
from edgebench.pool import export_bundle
from edgebench.store import Provenance, Store
from test_pipeline import _dump_dom

BOARD_B = "rk3588-board-b-recorded"


def _second_board(src: Store, dest: Path) -> Path:
    """Another board's bundle: this host's rows as if measured there (half the speed)."""
    b = Store(dest.with_suffix(".sqlite"))
    b.migrate()
    b.put_host_json(BOARD_B, {"board": "Rockchip RK3588 (recorded)", "n_cpus": 8, "ram_total_mib": 24 * 1024})
    for r in src.rows("throughput"):
        rec = dict(r.record)
        rec["host_fingerprint"] = BOARD_B
        for k in ("mean_ts", "ci_low", "ci_high"):
            if rec.get(k) is not None:
                rec[k] = rec[k] / 2
        prov = Provenance(build_id=r.provenance.build_id, host_fingerprint=BOARD_B,
                          model_sha256=r.provenance.model_sha256)  # fmt: skip
        b.put("throughput", prov, r.params, rec, status=r.status, version=r.version)
    export_bundle(b, dest)
    b.close()
    return dest


def test_two_boards_side_by_side(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--threads", "1", "--kv", "f16", "--fa", "off", "--search", "grid", "--no-server-check"]
    r = cli(monkeypatch, "sweep", str(tiny_model), *args, "-p", "16", "-n", "4", "--json")
    assert r.code == 0, r.stderr
    with Store(load_config().store_path) as st:
        bundle = _second_board(st, tmp_path / "board-b.jsonl")
    assert cli(monkeypatch, "results", "import", str(bundle)).code == 0
    out = tmp_path / "report"
    r = cli(monkeypatch, "report", "--hosts", "all", "--html", str(out), "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["hosts"]) == 2 and BOARD_B in doc["hosts"]
    md = Path(doc["markdown"]).read_text()
    assert "Rockchip RK3588 (recorded)" in md and md.count("| tiny-llama") == 2
    dom = _dump_dom(Path(doc["html"]), tmp_path)
    assert dom.count("<tr>") == 3  # the header and one row per host
    assert "Rockchip RK3588 (recorded)" in dom and BOARD_B in dom


def test_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no measured rows" in cli(monkeypatch, "report", "--hosts", "all").error_line()
    assert "only --hosts all" in cli(monkeypatch, "report", "--hosts", "some").error_line()
