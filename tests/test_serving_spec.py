"""One serving spec: decode's winner + prefill's threads (-tb) and ubatch + the proven context, the
same config the sweep recommends, quality and the context probe start with, and the routing file
carries. The sweep runs for real against a fake llama-bench whose speed depends on its flags."""

from __future__ import annotations

from pathlib import Path

from edgebench.config import SweepConfig
from edgebench.host.probe import probe_host
from edgebench.measure.context import STAGE as CONTEXT_STAGE
from edgebench.measure.context import ContextTrial
from edgebench.measure.serving import serving_spec
from edgebench.measure.space import default_space
from edgebench.measure.sweep import sweep_model
from edgebench.measure.throughput import MeasureSettings
from edgebench.models.gguf import read_model_info
from edgebench.pipeline.sweep import SweepReport
from edgebench.store import Provenance, Store
from edgebench.testing.synth import write_tiny_llama
from fake_llama import fake_bin_dir, fake_runtime, python_script

# Decode is fastest on 1 thread, prefill on 2 threads with ubatch 128: a spec taking everything
# from the decode winner would say -t 1 -ub 512 and no -tb.
FAKE_BENCH = python_script(
    """
import json, sys
a = sys.argv[1:]
arg = lambda f: a[a.index(f) + 1]
t, ub, p, n, d, r = (int(arg(f)) for f in ("-t", "-ub", "-p", "-n", "-d", "-r"))
ts = (50.0 if t == 1 else 30.0) if n else 100.0 * t + (40.0 if ub == 128 else 0.0)
print(json.dumps([{"n_prompt": p, "n_gen": n, "n_depth": d, "avg_ts": ts, "stddev_ts": 0.0,
                   "samples_ts": [ts] * r, "samples_ns": [1000] * r, "build_commit": "fake",
                   "build_number": 1, "cpu_info": "fake", "backends": "CPU", "model_type": "fake",
                   "model_size": 1, "model_n_params": 1}]))
"""
)


def _trial(model: str, ctx: int, ok: bool, kv: str = "f16", fa: str = "on") -> ContextTrial:
    return ContextTrial(
        model=model,
        ctx=ctx,
        kv=kv,
        flash_attn=fa,
        ok=ok,
        failed_step=None if ok else "ram",
        cause="ok" if ok else "peak RSS over the budget",
        load_ms=1234.0,
        e2e_ms=10.0,
        prompt_tokens=ctx,
        decoded=16,
        prompt_per_second=None,
        predicted_per_second=None,
        memory=None,
        predicted_host_mib=None,
        peak_rss_mib=321.0,
        rss_anon_mib=None,
        rss_file_mib=None,
        swap_growth_mib=0.0,
        budget_mib=1000.0,
        build_id="b1-fake000",
        host_fingerprint="",
        measured_at="t",
    )


def test_one_spec_from_sweep_and_context_probe(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    host = probe_host()
    model = read_model_info(write_tiny_llama(tmp_path / "tiny.gguf", ctx_train=16384))
    rt = fake_runtime(fake_bin_dir(tmp_path / "bin", FAKE_BENCH))
    space = default_space(
        host, SweepConfig(), threads=[1, 2], kv=["f16"], fa=["on"], ubatch=[128, 512], n_prompt=64, n_gen=16
    )
    outcome = sweep_model(store, rt, host, model, space, MeasureSettings(timeout_s=60), "grid")
    assert outcome.best_tg is not None and outcome.best_pp is not None

    spec = serving_spec(store, model, host)
    rc = spec.runtime
    assert (rc.threads, rc.threads_batch, rc.ubatch) == (1, 2, 128)
    assert (rc.cache_type_k, rc.flash_attn) == ("f16", "on")
    assert spec.ctx_source == "default" and rc.ctx == 4096
    assert spec.tg_ts == 50.0 and spec.pp_ts == 240.0
    # the sweep's recommendation and what quality/context start with are that same config
    rec = SweepReport.of(model, outcome, None, gated=False).recommended  # what the table and JSON show
    assert rec is not None and rec.model_copy(update={"ctx": rc.ctx, "jinja": rc.jinja}) == rc

    # the context probe proved 2048 at this KV type; a larger one at another KV type does not count
    prov = Provenance(build_id="b1-fake000", host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    for t in (
        _trial(model.name, 2048, True),
        _trial(model.name, 4096, False),
        _trial(model.name, 8192, True, kv="q8_0"),
    ):
        store.put(CONTEXT_STAGE, prov, {"ctx": t.ctx, "kv": t.kv}, t)
    spec = serving_spec(store, model, host)
    assert spec.runtime.ctx == 2048 and spec.ctx_source == "context probe"
    assert spec.load_s == 1.234 and spec.peak_rss_mib == 321.0
    assert (spec.runtime.threads, spec.runtime.threads_batch, spec.runtime.ubatch) == (1, 2, 128)

    # another host's rows never make this host's spec
    other = Provenance(build_id="b1-fake000", host_fingerprint="elsewhere", model_sha256=model.sha256)
    store.put(CONTEXT_STAGE, other, {"ctx": 16384}, _trial(model.name, 16384, True))
    assert serving_spec(store, model, host).runtime.ctx == 2048
