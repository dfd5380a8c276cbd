"""Sweep logic without llama.cpp: space defaults per host class, adaptive reps, search moves, roofline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgebench.config import SweepConfig
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.measure.roofline import decode_bytes_per_token, decode_efficiency, kv_bytes_per_token
from edgebench.measure.search import _beats
from edgebench.measure.space import default_space, resolve_cpus
from edgebench.measure.throughput import MeasureSettings, _next_reps
from edgebench.models.gguf import read_model_info
from edgebench.stats import summarize, summarize_groups
from edgebench.testing.synth import write_tiny_llama
from helpers import FIXTURES

RK = probe_host(FIXTURES / "sysfs" / "rk3588")
PI = probe_host(FIXTURES / "sysfs" / "rpi5")


def test_rk3588_default_space() -> None:
    s = default_space(RK, SweepConfig())
    assert s.threads == [2, 4, 6]
    assert [c.name for c in s.cpus] == ["big", "all"]
    assert s.cpus[0].cpus == (4, 5, 6, 7)
    # 6 threads pinned to 4 big cores is not a config anyone should run
    assert not any(p.threads == 6 and p.cpus.name == "big" for p in s.points())
    assert any(p.threads == 6 and p.cpus.name == "all" for p in s.points())


def test_pi5_and_small_x86_defaults() -> None:
    assert default_space(PI, SweepConfig()).threads == [2, 3, 4]
    assert [c.name for c in default_space(PI, SweepConfig()).cpus] == ["all"]
    two_core = RK.model_copy(
        update={
            "n_cpus": 2,
            "compatible": [],
            "board": None,
            "little_cpus": [],
            "big_cpus": [0, 1],
            "clusters": [],
        }
    )
    assert default_space(two_core, SweepConfig()).threads == [1, 2]


def test_bad_sweep_values_are_clear() -> None:
    with pytest.raises(ConfigError, match="--threads 16: this host has 8 CPUs"):
        default_space(RK, SweepConfig(), threads=[2, 16])
    with pytest.raises(ConfigError, match="--kv 'q3'"):
        default_space(RK, SweepConfig(), kv=["q3"])
    with pytest.raises(ConfigError, match="no little cores"):
        resolve_cpus("little", PI)
    with pytest.raises(ConfigError, match="cpus 0-3"):
        resolve_cpus("4-7", PI)
    assert resolve_cpus("little", RK).cpus == (0, 1, 2, 3)


def test_repeats_are_processes_until_the_ci_over_processes_is_tight() -> None:
    st = MeasureSettings(ci_target=0.03, reps_per_process=2, min_processes=3, max_reps=10)
    # steady repetitions inside one process say nothing about the next process: go on
    assert _next_reps([], st) == 2
    assert _next_reps([[100.0, 100.1]], st) == 2
    assert _next_reps([[100.0, 100.1], [90.0, 90.2]], st) == 2
    # three processes whose means agree (±0.6 % at t(0.975, 2) = 4.30): stop
    assert _next_reps([[100.0, 100.1], [100.3, 100.2], [99.9, 100.0]], st) == 0
    # three processes 10 % apart: more, but never past the repetition budget
    spread = [[100.0, 100.1], [90.0, 90.2], [95.0, 95.1]]
    assert _next_reps(spread, st) == 2
    assert _next_reps([*spread, [97.0, 97.0], [96.0]], st) == 1
    assert _next_reps([*spread, [97.0, 97.0], [96.0, 96.0]], st) == 0


def test_ci_over_processes_is_wider_than_over_repetitions() -> None:
    # The gemma tg128 pattern measured on this VM: steady inside a process, 9 % between processes.
    groups = [[82.5, 82.1, 82.7], [89.3, 89.1, 88.6], [88.4, 88.7, 88.9]]
    flat = [x for g in groups for x in g]
    naive, honest = summarize(flat), summarize_groups(groups)
    assert honest.mean == pytest.approx(sum(flat) / len(flat))
    assert honest.n == 9 and honest.sd == pytest.approx(naive.sd)
    assert honest.rel_half_width > 2.5 * naive.rel_half_width
    assert summarize_groups([[80.0, 80.1, 79.9]]).ci_high == math.inf  # one process: no CI


def test_search_moves_only_beyond_noise() -> None:
    from edgebench.measure.throughput import ThroughputResult

    base = dict(
        model="m",
        model_sha256="s",
        test="tg32",
        kind="tg",
        n_prompt=0,
        n_gen=32,
        depth=0,
        status="ok",
        cause="ok",
        samples_ts=[],
        n=5,
        sd_ts=1.0,
        processes=1,
        peak_rss_mib=1,
        wall_s=1,
        bytes_per_token=None,
        bandwidth_gbs=None,
        efficiency=None,
        drift=False,
        bench_row=None,
        build_id="b",
        host_fingerprint="h",
        measured_at="t",
        rel_ci=0.01,
    )
    point = default_space(PI, SweepConfig()).points().__next__()
    snap = {"governor": None, "mean_mhz": None, "max_temp_c": None}

    def r(mean: float, lo: float, hi: float, status: str = "ok") -> ThroughputResult:
        return ThroughputResult.model_validate(
            {
                **base,
                "point": point,
                "config": point.runtime(),
                "mean_ts": mean,
                "ci_low": lo,
                "ci_high": hi,
                "status": status,
                "thermal_before": snap,
                "thermal_after": snap,
            }
        )

    inc = r(50, 49, 51)
    assert _beats(r(52, 50.5, 53.5), inc)  # lower bound above the incumbent's mean
    assert not _beats(r(51, 49.5, 52.5), inc)  # within noise: stay
    assert not _beats(r(99, 98, 100, status="oom-killed"), inc)
    assert _beats(r(10, 9, 11), r(0, 0, 0, status="crashed"))


def test_roofline_by_hand(tmp_path: Path) -> None:
    m = read_model_info(write_tiny_llama(tmp_path / "t.gguf", n_layer=2, n_embd=128, n_head=4, n_head_kv=2))
    # per layer: 2 kv heads × head dim 32 × (2 B K + 2 B V) = 256 B per position, 2 layers = 512 B
    assert kv_bytes_per_token(m, "f16", "f16", 100) == pytest.approx(512 * 100)
    # q8_0 K (34/32 B) + q4_0 V (18/32 B): 2 × 2 × 32 × (34 + 18) / 32 = 208 B per position
    assert kv_bytes_per_token(m, "q8_0", "q4_0", 10) == pytest.approx(208 * 10)
    weights = sum(m.tensor_bytes.values())
    assert not m.output_tied  # the tiny llama has its own output.weight: embedding is a 1-row gather
    expected_w = weights - m.embd_bytes + m.embd_bytes / m.n_vocab
    # tg32 from depth 64: mean position 64 + 31/2 = 79.5
    assert decode_bytes_per_token(m, "f16", "f16", 64, 32) == pytest.approx(expected_w + 512 * 79.5)
    assert decode_efficiency(10.0, 2e9, 40.0) == pytest.approx(0.5)


def test_roofline_caps_swa_layers(gemma_path: Path) -> None:
    g = read_model_info(gemma_path)
    # gemma-3-270m: 18 layers, 15 sliding (window 512), 1 KV head, head dim 256 → f16 1024 B/position/layer
    assert kv_bytes_per_token(g, "f16", "f16", 4096) == pytest.approx((3 * 4096 + 15 * 512) * 1024)
    assert kv_bytes_per_token(g, "f16", "f16", 100) == pytest.approx(18 * 100 * 1024)
    assert g.output_tied  # no output.weight: the whole embedding table is read for the logits
    assert decode_bytes_per_token(g, "f16", "f16", 0, 1) == pytest.approx(sum(g.tensor_bytes.values()))


def test_stored_results_keep_the_newest_row_per_config(tmp_path: Path) -> None:
    from edgebench.measure.serving import stored_results
    from edgebench.measure.throughput import STAGE, ThroughputResult
    from edgebench.store import Provenance, Store

    point = default_space(PI, SweepConfig()).points().__next__()
    snap = {"governor": None, "mean_mhz": None, "max_temp_c": None}

    def row(mean: float, build: str, test: str = "tg32") -> ThroughputResult:
        return ThroughputResult.model_validate(
            {
                "model": "m",
                "model_sha256": "s",
                "point": point,
                "config": point.runtime(),
                "test": test,
                "kind": test[:2],
                "n_prompt": 0,
                "n_gen": 32,
                "depth": 0,
                "status": "ok",
                "cause": "ok",
                "samples_ts": [mean],
                "n": 1,
                "mean_ts": mean,
                "sd_ts": 0.0,
                "ci_low": None,
                "ci_high": None,
                "rel_ci": None,
                "processes": 1,
                "peak_rss_mib": 1,
                "wall_s": 1,
                "bytes_per_token": None,
                "bandwidth_gbs": None,
                "efficiency": None,
                "thermal_before": snap,
                "thermal_after": snap,
                "drift": False,
                "bench_row": None,
                "build_id": build,
                "host_fingerprint": "h",
                "measured_at": "t",
            }
        )

    store = Store(tmp_path / "s.sqlite")
    for mean, build, host in ((50.0, "old", "h"), (60.0, "new", "h"), (99.0, "new", "elsewhere")):
        prov = Provenance(build_id=build, host_fingerprint=host, model_sha256="s")
        store.put(STAGE, prov, {"p": point.model_dump(mode="json"), "b": build, "h": host}, row(mean, build))
    prov = Provenance(build_id="new", host_fingerprint="h", model_sha256="s")
    store.put(STAGE, prov, {"pp": 1}, row(400.0, "new", test="pp128"))
    here = stored_results(store, "s", host_fingerprint="h")
    assert sorted((r.test, r.mean_ts) for r in here) == [("pp128", 400.0), ("tg32", 60.0)]
    assert {r.mean_ts for r in stored_results(store, "s") if r.test == "tg32"} == {99.0}  # newest anywhere


def test_variants_are_measured_where_their_base_was_decided() -> None:
    # `edgebench run` measures the requantized copies at the default model's decided settings
    # (pp's and tg's winners; decode's KV type, as served), at depth 0 only: not searched again.
    from edgebench.measure.search import Best
    from edgebench.pipeline.sweep import SweepReport, decided_space
    from test_decide import make_throughput

    space = default_space(RK, SweepConfig(), depth=[0, 1024], depth_kinds=("tg",))
    pp = make_throughput("m", "pp", 100.0, threads=6, kv="q8_0")
    tg = make_throughput("m", "tg", 10.0, threads=4, kv="f16")
    base = SweepReport.model_construct(
        best_pp=Best(kind="pp", result=pp, tied_with=[]), best_tg=Best(kind="tg", result=tg, tied_with=[])
    )
    at = decided_space(space, base)
    assert at is not None
    assert at.threads == [4, 6] and at.kv == ["f16"] and at.fa == ["on"] and at.depth == [0]
    assert [c.name for c in at.cpus] == ["all"] and at.ubatch == [512]
    assert at.size() == 2  # two points instead of the base's search and race
    assert decided_space(space, SweepReport.model_construct(best_pp=None, best_tg=None)) is None


def test_only_the_named_tests_are_repeated_at_depth() -> None:
    from edgebench.measure.search import plan_size

    both = default_space(PI, SweepConfig(), depth=[0, 2048])
    tg_only = both.model_copy(update={"depth_kinds": ("tg",)})
    assert plan_size(both, "grid") - plan_size(tg_only, "grid") == both.size()
    assert plan_size(both, "adaptive") - plan_size(tg_only, "adaptive") == 1
