"""The stable-context probe against the real llama-server on a synthetic model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.measure.context import candidates, probe_context
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Store
from edgebench.testing.synth import write_tiny_llama
from helpers import edgebench

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # a wider KV (4 layers × 4 KV heads × 64 dims: 4 KiB per position in f16) so memory visibly grows
    return write_tiny_llama(
        tmp_path_factory.mktemp("ctx") / "long.gguf",
        n_layer=4,
        n_embd=256,
        n_head=4,
        n_head_kv=4,
        n_ff=256,
        ctx_train=16384,
    )


def test_candidates() -> None:
    assert candidates(32768) == [2048, 4096, 8192, 16384, 32768]
    assert candidates(40960) == [2048, 4096, 8192, 16384, 32768, 40960]
    assert candidates(1024) == [1024]


def test_probe_finds_the_limit_under_a_small_budget(
    runtime: Runtime, long_model: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "s.sqlite")
    host = probe_host()
    m = read_model_info(long_model)
    base = RuntimeConfig(threads=2, cache_type_k="f16", cache_type_v="f16", flash_attn="on")
    roomy = probe_context(store, runtime, host, m, base, budget_mib=20000, log_dir=tmp_path, n_decode=8)
    assert roomy.stable_ctx == 16384
    # the planner says the largest candidate fits: the search starts there, and it holds
    assert [t.ctx for t in roomy.trials] == [16384]
    at_8k = probe_context(
        store, runtime, host, m, base, budget_mib=20000, log_dir=tmp_path, n_decode=8, ctx_list=[8192]
    )
    trials = [*at_8k.trials, *roomy.trials]
    rss = {t.ctx: t.peak_rss_mib for t in trials}
    assert all(t.ok and t.decoded == 8 and t.memory is not None for t in trials)
    kv = {t.ctx: t.memory.devices["CPU"].kv_mib for t in trials if t.memory}
    assert kv[16384] == pytest.approx(2 * kv[8192], rel=0.02)  # KV grows linearly with context
    # the filled KV cache is anonymous memory, and it is resident (90 % of it was written)
    assert all((t.peak_anon_mib or 0) >= 0.85 * kv[t.ctx] for t in trials)
    # a budget between what 8k and 16k need: the probe must stop below 16k and say why
    budget = (rss[8192] + rss[16384]) / 2
    store2 = Store(tmp_path / "s2.sqlite")
    tight = probe_context(store2, runtime, host, m, base, budget_mib=budget, log_dir=tmp_path, n_decode=8)
    assert tight.stable_ctx == 8192
    failed = [t for t in tight.trials if not t.ok]
    assert failed and all(t.failed_step == "ram" for t in failed)
    assert len(tight.trials) <= 3  # binary search over 4 candidates, not a ladder
    # resumable: the same probe again measures nothing new
    again = probe_context(store2, runtime, host, m, base, budget_mib=budget, log_dir=tmp_path, n_decode=8)
    assert all(t.resumed for t in again.trials)


def test_bad_inputs(runtime: Runtime, long_model: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    m = read_model_info(long_model)
    with pytest.raises(ConfigError, match="ctx_train 16384"):
        probe_context(
            store,
            runtime,
            probe_host(),
            m,
            RuntimeConfig(),
            budget_mib=1000,
            log_dir=tmp_path,
            ctx_list=[65536],
        )
    for args, needle in (
        (["--ctx", "0"], "contexts must be > 0"),
        (["--kv", "q3"], "unknown KV cache type"),
        (["--ctx", "65536"], "ctx_train 16384"),
    ):
        r = edgebench("context", str(long_model), *args)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr


def test_context_cli_json(runtime: Runtime, long_model: Path) -> None:
    r = edgebench("context", str(long_model), "--ctx", "2048,4096", "--kv", "q8_0", "--json")
    assert r.returncode == 0, r.stderr
    (p,) = json.loads(r.stdout)["probes"]
    assert p["stable_ctx"] == 4096 and p["kv"] == "q8_0"
    t = p["trials"][-1]
    assert t["memory"]["devices"]["CPU"]["kv_mib"] > 0 and t["predicted_host_mib"] > 0
