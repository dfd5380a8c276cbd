"""The KV lab end to end on a real llama.cpp build: gemma-3-270m (iSWA: two caches) and a tiny
synthetic llama with flash attention off (V stored transposed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.errors import EdgebenchError
from edgebench.kvlab.lab import load_text, run_lab
from edgebench.models.gguf import read_model_info
from edgebench.models.memory import parse_kv_layers
from edgebench.runtime.locate import Runtime
from edgebench.testing.zoo import write_zoo_model

pytestmark = pytest.mark.llama


# ~90 s quiet; a heavy process beside it made it 10× (a 900 s limit failed make test once): the
# limit is for hangs, so it is set for a loaded machine
@pytest.mark.timeout(2700)
def test_gemma_lab_round_trip_is_exact_and_injection_agrees_with_native(
    runtime: Runtime, gemma_path: Path, tmp_path: Path
) -> None:
    info = read_model_info(gemma_path)
    res = run_lab(
        runtime,
        info,
        host_fingerprint="test",
        ctx=256,
        positions=24,
        simulated=("q8_0", "q4_0", "q4_0+rot", "tq2"),
        native=("q8_0", "q4_0"),
        perplexity=False,
        budget_mib=2048,
        log_dir=tmp_path,
    )
    # restoring the unmodified cache gives back the very same distributions
    assert res.roundtrip_kld_max == 0.0
    rows = {(r.method, r.source): r for r in res.rows}
    f16 = rows[("f16", "native")].kld
    assert f16 is not None and f16.same_top_pct == 100.0 and f16.mean_kld == 0.0
    # llama.cpp's own q4_0 cache, restored into an f16 server, scores as llama.cpp's kernels do
    nat, cache = (
        rows[("q4_0 (rotation off)", "native")].kld,
        rows[("q4_0 (rotation off)", "native cache")].kld,
    )
    assert nat is not None and cache is not None
    assert abs(nat.mean_kld - cache.mean_kld) <= 0.35 * nat.mean_kld
    # the simulated block formats, filled token by token, agree with llama.cpp's own caches
    assert {v.simulated for v in res.validations} == {"q8_0", "q4_0", "q4_0+rot"}
    assert all(v.agree for v in res.validations), res.validations
    sim = {r.method: r for r in res.rows if r.source == "simulated"}
    assert all(r.validated for r in sim.values())
    k = {m: r.kld.mean_kld for m, r in sim.items() if r.kld}
    assert k["tq2"] > k["q4_0"] > k["q8_0"] > 0  # fewer bits, more divergence
    assert sim["q8_0"].bits == pytest.approx(8.5) and sim["tq2"].bits == pytest.approx(2 + 16 / 256)
    rows = {m: r for (m, src), r in rows.items() if src == "native"}
    # measured: llama.cpp's KV buffer shrinks with the type's bits; decode speed per type
    kv = [rows[m].kv_mib_per_1k or 0 for m in ("f16", "q8_0", "q4_0")]
    assert kv[0] > kv[1] > kv[2] > 0 and kv[1] / kv[0] == pytest.approx(8.5 / 16, rel=0.01)
    assert all((rows[m].decode_ts or 0) > 0 for m in ("f16", "q8_0", "q4_0"))
    assert rows["q4_0 (rotation off)"].decode_ts is None  # measured once per type, with rotation
    # memory: fewer bits fit more context in the same budget (predicted by the planner)
    fits = [rows[m].ctx_fit or 0 for m in ("f16", "q8_0", "q4_0")]
    assert fits == sorted(fits) and fits[0] > 0
    # one sensitivity figure per attention layer; two hybrids, each a plan the planner reads
    assert sorted(res.sensitivity) == list(range(info.n_layer))
    hybrids = [r for r in res.rows if r.method.startswith("hybrid")]
    assert len(hybrids) == 2
    for h in hybrids:
        assert h.kv_layers and len(parse_kv_layers(h.kv_layers, info.n_layer)) == info.n_layer
        assert 4.5 < h.bits < 8.5
    assert res.recommendation.startswith(("-ctk", "keep an f16"))
    assert res.model_sha256 == info.sha256 and res.build_id == runtime.build_id


def test_flash_attention_off_transposed_v_and_the_bad_inputs(
    runtime: Runtime, tiny_model: Path, tmp_path: Path
) -> None:
    info = read_model_info(tiny_model)
    res = run_lab(
        runtime,
        info,
        host_fingerprint="test",
        ctx=128,
        positions=8,
        simulated=("q8_0", "kivi2"),
        native=(),
        perplexity=False,
        budget_mib=1024,
        flash_attn="off",
        log_dir=tmp_path,
    )
    assert res.roundtrip_kld_max == 0.0
    assert {r.method for r in res.rows} >= {"f16", "q8_0", "kivi2"}
    assert all(r.kld is not None and r.kld.positions == 8 for r in res.rows)
    assert res.validations == [] and all(r.validated is False for r in res.rows if r.source == "simulated")

    def refused(model: object = info, **kw: object) -> str:
        args: dict[str, object] = dict(
            host_fingerprint="t", ctx=128, positions=8, native=(), perplexity=False, budget_mib=1024,
            log_dir=tmp_path,
        )  # fmt: skip
        with pytest.raises(EdgebenchError) as exc:
            run_lab(runtime, model, **{**args, **kw})  # type: ignore[arg-type]
        assert "\n" not in str(exc.value)
        return str(exc.value)

    assert "too short for --ctx 128" in refused(text="far too short")
    assert "'q3_k'" in refused(native=("q3_k",))
    assert "training context" in refused(ctx=info.ctx_train * 2)
    # a model whose state holds recurrent layers: the slot file is refused, not misread
    jamba = read_model_info(write_zoo_model("jamba-hybrid", tmp_path))
    assert "recurrent" in refused(jamba)


def test_shipped_text_is_long_enough_for_the_default_context() -> None:
    text = load_text()
    assert len(text.split()) > 2500 and "Four score and seven years ago" in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--simulated", "q3_0"], "KV scheme 'q3_0'"),
        (["--native", "q3_k"], "'q3_k'"),
        (["--sensitivity", "tq1+qjl"], "needs ≥ 2 bits"),
        (["--fa", "auto"], "--fa 'auto'"),
        (["--budget-mib", "-5"], "--budget-mib -5"),
        (["--text", "/nonexistent/x.txt"], "/nonexistent/x.txt"),
        (["--simulated", " , "], "comma-separated"),
    ],
)
def test_kv_command_refuses_bad_input_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str], needle: str
) -> None:
    r = cli(monkeypatch, "kv", *args)
    assert needle in r.error_line()
