"""A model split over RPC workers is its own candidate: gathered from the store with its split
speed, context and head memory and its model's quality, ranked and routed as one (a model too big
for the host alone is served split), and the gateway's table starts it with its workers.

The rows are written by hand in the shapes sweep/context/quality store, so that each rule is seen
on its own; tests/test_fleet_rpc.py measures real splits and serves one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.config import BudgetConfig, Config
from edgebench.decide.export import validate_routing, write_routing
from edgebench.decide.gather import gather
from edgebench.decide.route import route
from edgebench.host.probe import HostInfo, probe_host
from edgebench.measure import throughput
from edgebench.measure.context import STAGE as CONTEXT_STAGE
from edgebench.measure.context import ContextTrial
from edgebench.measure.race import DECISION_STAGE, DECISION_VERSION, RaceOutcome
from edgebench.measure.serving import serving_spec, split_name
from edgebench.measure.space import CpuSet, Point
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import add_model
from edgebench.pipeline.decide import serving_specs
from edgebench.quality.records import FailureClass
from edgebench.quality.runner import STAGE as QUALITY_STAGE
from edgebench.quality.runner import QualityResult
from edgebench.runtime.flags import RuntimeConfig
from edgebench.serve.table import table_from_routing
from edgebench.store import Provenance, Store
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import CHATML
from test_decide import make_throughput

EPS = ("10.0.0.2:50052", "10.0.0.3:50052")
OTHER = ("10.0.0.9:50052",)
CATS = ("reasoning", "factual", "code", "instruction", "tool_call", "math")


class Board:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "db.sqlite")
        self.store.migrate()
        self.host: HostInfo = probe_host()
        self.model: ModelInfo = add_model(
            self.store, write_tiny_llama(tmp / "big.gguf", ctx_train=8192, chat_template=CHATML), "big"
        )

    def prov(self) -> Provenance:
        return Provenance(
            build_id="b1", host_fingerprint=self.host.fingerprint, model_sha256=self.model.sha256
        )

    def speed(self, kind: str, mean: float, *, rpc: tuple[str, ...] = (), threads: int = 2) -> None:
        t = make_throughput("big", kind, mean, threads=threads, kv="f16")
        point = Point(
            threads=threads, kv="f16", fa="on", ubatch=512, cpus=CpuSet(name="all", cpus=None), rpc=rpc
        )
        t = t.model_copy(
            update={
                "model_sha256": self.model.sha256,
                "point": point,
                "config": point.runtime(),
                "host_fingerprint": self.host.fingerprint,
            }
        )
        params = {"test": t.test, "cfg": t.config.key(), "runtime": t.config.model_dump(mode="json")}
        self.store.put(throughput.STAGE, self.prov(), params, t)

    def context(self, ctx: int, rss: float, *, rpc: tuple[str, ...] = (), ok: bool = True) -> None:
        cfg = RuntimeConfig(ctx=ctx, flash_attn="on", rpc=rpc, ngl=-1 if rpc else 0)
        trial = ContextTrial(
            model="big", ctx=ctx, kv="f16", flash_attn="on", ok=ok, failed_step=None if ok else "load",
            cause="ok" if ok else "oom", load_ms=900.0, e2e_ms=2000.0, prompt_tokens=ctx * 9 // 10,
            decoded=16, prompt_per_second=100.0, predicted_per_second=10.0, memory=None,
            predicted_host_mib=None, peak_rss_mib=rss, rss_anon_mib=rss / 2, rss_file_mib=rss / 2,
            swap_growth_mib=0.0, budget_mib=100_000.0, build_id="b1", host_fingerprint=self.host.fingerprint,
            measured_at="2026-12-02T00:00:00+00:00",
        )  # fmt: skip
        self.store.put(CONTEXT_STAGE, self.prov(), {"runtime": cfg.model_dump(mode="json")}, trial)

    def quality(self, latency: float = 4.0) -> None:
        for cat in CATS:
            for item in range(2):
                for sample in range(3):
                    q = QualityResult(
                        target="big", backend_id=self.model.sha256, suite="core", suite_digest="d",
                        item=f"{cat}-{item}", category=cat, weight=1.0, variant=0, sample=sample,
                        temperature=0.0 if sample == 0 else 0.7, seed=sample, mode="chat", tool_mode=None,
                        raw_output="x", reasoning=None, tool_calls=[], sanitized="x", stripped=[],
                        passed=item == 0, failure=FailureClass.CORRECT if item == 0 else FailureClass.WRONG,
                        detail="", latency_s=latency + 0.1 * sample, ttft_s=0.1, prompt_tokens=20,
                        completion_tokens=40, timings=None, error=None, measured_at="2026-12-02T00:00:00Z",
                    )  # fmt: skip
                    params = {"item": q.item, "sample": sample, "suite": "core"}
                    self.store.put(QUALITY_STAGE, self.prov(), params, q)


@pytest.fixture
def board(tmp_path: Path) -> Board:
    b = Board(tmp_path)
    b.speed("tg", 40.0)
    b.speed("pp", 400.0)
    b.speed("tg", 10.0, rpc=EPS)
    b.speed("pp", 150.0, rpc=EPS)
    b.speed("tg", 12.0, rpc=EPS, threads=1)  # the split's best decode config
    b.speed("tg", 6.0, rpc=OTHER)  # another worker set: another candidate
    b.context(4096, 3000.0)
    b.context(8192, 900.0, rpc=EPS)  # the head holds only its share
    b.quality()
    return b


def _cfg(store: Store) -> Config:
    return Config(data_dir=store.path.parent, cache_dir=store.path.parent / "cache")


def _by_name(ev: list) -> dict:  # type: ignore[type-arg]
    return {e.name: e for e in ev}


def test_each_worker_set_is_its_own_candidate_with_its_split_measurements(board: Board) -> None:
    ev = _by_name(gather(_cfg(board.store), board.store, host=board.host.fingerprint))
    split, other, own = ev[split_name("big", EPS)], ev[split_name("big", OTHER)], ev["big"]
    assert split.backend == "rpc" and split.split_of == "big" and split.rpc == EPS
    # its own speed and context, never the host's (and the host's never the split's)
    assert split.best_tg is not None and split.best_tg.mean_ts == 12.0 and split.best_tg.config.threads == 1
    assert split.best_pp is not None and split.best_pp.mean_ts == 150.0
    assert own.best_tg is not None and own.best_tg.mean_ts == 40.0 and not own.best_tg.config.rpc
    assert (
        split.context is not None
        and split.context.stable_ctx == 8192
        and split.context.host_total_mib == 900.0
    )
    assert own.context is not None and own.context.stable_ctx == 4096 and own.context.host_total_mib == 3000.0
    assert other.best_tg is not None and other.best_tg.mean_ts == 6.0 and other.context is None
    # the same weights: the model's quality; the latency scaled by decode speed and labelled
    assert split.quality is not None and own.quality is not None
    assert split.quality.weighted == own.quality.weighted
    assert split.quality.mean_latency_s == pytest.approx(own.quality.mean_latency_s * 40.0 / 12.0)
    assert split.latency_note is not None and "predicted" in split.latency_note
    assert split.predicted_memory is None  # the planner's whole-model figure is not the head's


def test_split_without_decode_speed_is_not_ranked_on_borrowed_latency(tmp_path: Path) -> None:
    b = Board(tmp_path)
    b.speed("tg", 40.0)
    b.speed("pp", 150.0, rpc=EPS)  # prefill only
    b.quality()
    ev = _by_name(gather(_cfg(b.store), b.store, host=b.host.fingerprint))
    assert ev[split_name("big", EPS)].quality is None and ev["big"].quality is not None


def test_too_big_alone_the_split_serves_the_tiers(board: Board, tmp_path: Path) -> None:
    """A 2 GiB host: the model alone (3000 MiB measured) does not fit, its split (900 MiB on the
    head) does; the routes name the split, with its workers in the serving spec."""
    ev = gather(_cfg(board.store), board.store, host=board.host.fingerprint)
    budgets = BudgetConfig(ram_reserve_mib=100, latency_s=60.0, quality_latency_s=120.0)
    specs = serving_specs(board.store, board.host)
    r = route(ev, budgets, ram_total_mib=2048, serving=specs)
    name = split_name("big", EPS)
    primaries = {x.primary.model for x in r.routes if x.primary is not None}
    assert name in primaries and "big" not in primaries
    deep = next(x for x in r.routes if x.use_case == "deep_analysis")
    assert deep.primary is not None and deep.primary.backend == "rpc"
    assert "predicted" in deep.why  # the borrowed, scaled latency says what it is
    doc = json.loads(write_routing(r, tmp_path)[0].read_text())
    assert validate_routing(doc) == []  # the routing file carries the workers, schema-valid
    spec = r.serving[name]
    assert spec.runtime.rpc == EPS and spec.runtime.ngl == -1 and spec.runtime.threads == 1
    assert spec.runtime.ctx == 8192 and spec.peak_rss_mib == 900.0 and spec.ctx_source == "context probe"
    assert spec.tg_ts == 12.0 and spec.model_path == board.model.path
    # and the gateway's table starts it with its workers, charged with the head's measured memory
    tbl = table_from_routing(r, Path("routing.json"), _cfg(board.store), board.store, board.host)
    served = tbl.models[name]
    assert served.spec is not None and served.spec.runtime.rpc == EPS
    assert served.memory.mib == 900.0 and served.memory.source == "measured"


def _race(board: Board, winner: Point, label: str) -> RaceOutcome:
    return RaceOutcome(
        model="big", model_sha256=board.model.sha256, race_id=label, kind="tg", test="tg128 @ d0", depth=0,
        finalists=[winner], labels=[label], not_raced=[], search_pick=label, rounds=1, decision="sole",
        winner=winner, winner_label=label, rule="sole finalist", comparisons=[], eliminated={}, tied=[],
        race_means={label: 1.0}, throttled_processes=0, build_id="b1",
        host_fingerprint=board.host.fingerprint,
        measured_at="2026-12-02T00:00:00+00:00",
    )  # fmt: skip


def test_the_hosts_own_spec_ignores_split_rows_and_races(board: Board) -> None:
    """A split race stored after the host's own must not make the host's spec forget its winner,
    nor the split trials lend it their context and memory."""
    board.speed("tg", 39.0, threads=1)  # tied with 2 threads at 40: the race settled on fewer threads
    cpus = CpuSet(name="all", cpus=None)
    local = Point(threads=1, kv="f16", fa="on", ubatch=512, cpus=cpus)
    split = Point(threads=1, kv="f16", fa="on", ubatch=512, cpus=cpus, rpc=EPS)
    for p, label in ((local, "local"), (split, "split")):  # oldest first: the split race is newest
        board.store.put(DECISION_STAGE, board.prov(), {"race": label}, _race(board, p, label),
                        version=DECISION_VERSION)  # fmt: skip
    own = serving_spec(board.store, board.model, board.host)
    assert own.runtime.rpc == () and own.tg_ts == 39.0 and own.runtime.threads == 1 and own.runtime.ngl == 0
    assert own.runtime.ctx == 4096 and own.peak_rss_mib == 3000.0
    sp = serving_spec(board.store, board.model, board.host, EPS)
    assert sp.tg_ts == 12.0 and sp.runtime.rpc == EPS and sp.runtime.threads == 1
    assert sp.model == split_name("big", EPS) and sp.runtime.ctx == 8192
