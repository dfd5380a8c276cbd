"""Decisions read this host's rows only: a store with rows from a second board (pooled results)
never mixes them into this host's ranking, routing file or report; --host picks the other one."""

from __future__ import annotations

import json
from pathlib import Path

from edgebench.config import load_config
from edgebench.host.probe import probe_host
from edgebench.measure.throughput import STAGE, VERSION
from edgebench.models.registry import add_model
from edgebench.pipeline.decide import decide
from edgebench.store import Provenance, Store
from edgebench.testing.synth import write_tiny_llama
from helpers import edgebench
from test_decide import make_throughput


def _store_two_hosts(tmp_path: Path, home: Path) -> tuple[Store, str]:
    store = Store(load_config().store_path)
    model = add_model(store, write_tiny_llama(tmp_path / "tiny.gguf"), "tiny")
    here = probe_host().fingerprint
    for fp, tg in ((here, 10.0), ("board-b", 99.0)):
        prov = Provenance(build_id="b1", host_fingerprint=fp, model_sha256=model.sha256)
        for kind, mean in (("tg", tg), ("pp", 10 * tg)):
            r = make_throughput("tiny", kind, mean).model_copy(
                update={"model_sha256": model.sha256, "host_fingerprint": fp}
            )
            store.put(STAGE, prov, {"kind": kind, "host": fp}, r, version=VERSION)
    return store, here


def test_decide_reads_this_host_only(tmp_path: Path, _data_home: Path) -> None:
    store, here = _store_two_hosts(tmp_path, _data_home)
    d = decide(load_config(), store, probe_host(), None, report=False, out_dir=tmp_path / "out")
    (ev,) = d.evidence
    assert ev.best_tg is not None and ev.best_tg.mean_ts == 10.0  # not board-b's 99 t/s
    assert all(t.host_fingerprint == here for t in ev.throughput)
    routing = json.loads(d.routing_json.read_text())
    assert routing["serving"]["tiny"]["host_fingerprint"] == here
    other = decide(
        load_config(),
        store,
        probe_host(),
        None,
        report=False,
        out_dir=tmp_path / "b",
        host_fingerprint="board-b",
    )
    assert other.evidence[0].best_tg is not None and other.evidence[0].best_tg.mean_ts == 99.0
    assert other.routing.serving == {}  # another board's serving specs are not this host's to give


def test_report_cli_this_host_and_another(tmp_path: Path, _data_home: Path) -> None:
    store, _ = _store_two_hosts(tmp_path, _data_home)
    store.close()
    r = edgebench("report", "--json", "--html", str(tmp_path / "here"))
    assert r.returncode == 0, r.stderr
    md = Path(json.loads(r.stdout)["markdown"]).read_text()
    assert "99.00" not in md and "10.00" in md
    r = edgebench("report", "--json", "--host", "board-b", "--html", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    md_b = Path(json.loads(r.stdout)["markdown"]).read_text()
    assert "99.00" in md_b
    bad = edgebench("rank", "--host", "nowhere")
    assert bad.returncode == 1 and bad.stderr.startswith("edgebench: error: --host 'nowhere'")
