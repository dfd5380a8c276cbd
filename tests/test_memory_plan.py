"""The memory planner: hand-computed cases (SWA, streams, recurrent state, repack), bad inputs,
fit_context, and predictions vs the buffers real llama-server runs report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.models.memory import MemoryPlan, MiB, fit_context, parse_kv_layers, plan_memory
from edgebench.runtime.flags import FlashAttn, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.memlog import MemoryBreakdown, read_memory_log
from edgebench.runtime.server import ServerProcess
from edgebench.testing.synth import write_tiny_jamba
from edgebench.testing.zoo import ZOO, write_zoo_model

LOGS = Path(__file__).parent / "fixtures" / "llama-logs"


def info(**kw: Any) -> ModelInfo:
    """A hand-made ModelInfo (no file behind it): a 4-layer llama unless told otherwise."""
    n_layer = kw.pop("n_layer", 4)
    arch = kw.pop("arch", "llama")
    n_ff = kw.pop("n_ff", 1536)
    meta = {f"{arch}.feed_forward_length": n_ff, **kw.pop("metadata", {})}
    base: dict[str, Any] = dict(
        path="/nonexistent/model.gguf",
        name="hand-made",
        sha256="0" * 64,
        file_size=0,
        arch=arch,
        params=0,
        bpw=16.0,
        quant="F16",
        ctx_train=32768,
        n_layer=n_layer,
        n_embd=512,
        n_vocab=1000,
        n_head=8,
        n_head_kv=[2] * n_layer,
        head_dim_k=64,
        head_dim_v=64,
        swa_window=None,
        swa_layers=[False] * n_layer,
        recurrent_layers=[],
        n_expert=0,
        n_expert_used=0,
        chat_template=False,
        tool_template=False,
        tensor_bytes={"F16": 10 * MiB},
        metadata=meta,
    )
    base.update(kw)
    return ModelInfo(**base)


def cfg(**kw: Any) -> RuntimeConfig:
    return RuntimeConfig(**{"ctx": 4096, "flash_attn": "on", **kw})


# ---------------------------------------------------------------------------- KV cache


def test_kv_f16_per_layer_and_padding() -> None:
    p = plan_memory(info(), cfg())
    # 4 layers x 4096 cells x (K 2 heads x 64 + V 2 x 64) x 2 bytes
    assert p.kv_mib == 8.0 and p.kv_swa_mib == 0.0 and p.swa_cells is None
    assert [lk.k_bytes for lk in p.layers] == [1 * MiB] * 4
    assert (p.n_ctx, p.n_ctx_seq, p.n_stream) == (4096, 4096, 1)
    assert plan_memory(info(), cfg(ctx=1000)).n_ctx == 1024  # GGML_PAD(n_ctx, 256)
    assert plan_memory(info(), cfg(ctx=1000)).kv_mib == 2.0


@pytest.mark.parametrize(("kv", "mib"), [("q8_0", 4.25), ("q4_0", 2.25), ("q5_1", 3.0), ("f32", 16.0)])
def test_kv_quantized_row_sizes(kv: str, mib: float) -> None:
    # 128 elements a row: q8_0 4 blocks x 34 B, q4_0 4 x 18 B, q5_1 4 x 24 B, f32 4 B each
    assert plan_memory(info(), cfg(cache_type_k=kv, cache_type_v=kv)).kv_mib == mib


def test_kv_per_layer_head_counts_and_v_padding_without_fa() -> None:
    m = info(n_head_kv=[1, 2, 4, 8])
    # K and V: (1+2+4+8) heads x 64 x 2 bytes each, per cell
    assert plan_memory(m, cfg()).kv_mib == 15 * 64 * 2 * 2 * 4096 / MiB
    # without flash attention V is transposed and padded to the widest layer (8 heads)
    off = plan_memory(m, cfg(flash_attn="off"))
    assert off.kv_mib == (15 * 64 * 2 + 4 * 8 * 64 * 2) * 4096 / MiB


def test_kv_layers_override_per_layer_types() -> None:
    m = info()
    mixed = plan_memory(m, cfg(), kv_layers=parse_kv_layers("0-1:q8_0,2-:q4_0", 4))
    assert mixed.kv_mib == (2 * 136 * 2 + 2 * 72 * 2) * 4096 / MiB
    assert [lk.type_k for lk in mixed.layers] == ["q8_0", "q8_0", "q4_0", "q4_0"]
    assert any("mainline" in n for n in mixed.notes)
    split = plan_memory(m, cfg(), kv_layers={0: ("q8_0", "f16")})
    assert split.layers[0].k_bytes == 136 * 4096 and split.layers[0].v_bytes == 256 * 4096


def test_parallel_streams_and_unified() -> None:
    m = info()
    p = plan_memory(m, cfg(), n_parallel=3)
    # n_ctx_seq = PAD(4096 / 3, 256) = 1536; n_ctx = 1536 x 3; one stream per slot
    assert (p.n_ctx, p.n_ctx_seq, p.n_stream, p.kv_unified) == (4608, 1536, 3, False)
    assert p.kv_mib == 4 * 512 * 1536 * 3 / MiB
    assert p.output_mib == 1000 * 3 * 4 / MiB  # n_vocab x n_seq x float
    u = plan_memory(m, cfg(extra=("-kvu",)), n_parallel=3)
    assert (u.n_ctx, u.n_ctx_seq, u.n_stream, u.kv_unified, u.kv_mib) == (4096, 4096, 1, True, 8.0)
    assert plan_memory(m, cfg(parallel=3)).n_seq == 3  # n_parallel None → cfg.parallel


def gemma_like(**kw: Any) -> ModelInfo:
    """6 layers, 5 sliding (window 512) + 1 global, 1 KV head of 256 (gemma-3's layout)."""
    return info(
        n_layer=6,
        arch="gemma3",
        n_embd=640,
        n_head=4,
        n_head_kv=[1] * 6,
        head_dim_k=256,
        head_dim_v=256,
        swa_window=512,
        swa_layers=[True] * 5 + [False],
        **kw,
    )


def test_swa_cache_size_rule() -> None:
    m = gemma_like()
    row = 256 * 2 * 2  # K + V bytes per cell, f16
    p = plan_memory(m, cfg(ctx=8192))
    # iSWA: PAD(min(n_ctx_seq, n_swa x 1 + n_ubatch), 256) = 1024 cells
    assert p.swa_cells == 1024
    assert p.kv_swa_mib == 5 * 1024 * row / MiB
    assert p.kv_mib == (5 * 1024 + 8192) * row / MiB
    # non-unified slots: window + ubatch per stream, one stream per slot
    p2 = plan_memory(m, cfg(ctx=8192), n_parallel=2)
    assert (p2.swa_cells, p2.n_ctx_seq) == (1024, 4096)
    assert p2.kv_swa_mib == 5 * 1024 * 2 * row / MiB
    # unified: the window is held for every sequence
    u = plan_memory(m, cfg(ctx=8192, extra=("--kv-unified",)), n_parallel=2)
    assert u.swa_cells == 1536  # PAD(512 x 2 + 512, 256)
    assert plan_memory(m, cfg(ctx=8192, ubatch=100, batch=100)).swa_cells == 768  # PAD(612)
    assert plan_memory(m, cfg(ctx=768)).swa_cells == 768  # capped by the context
    full = plan_memory(m, cfg(ctx=8192, extra=("--swa-full",)))
    assert full.swa_cells == 8192 and full.kv_mib == 6 * 8192 * row / MiB
    # a context checkpoint holds one slot's unmasked SWA cells (the window, 512), each with its
    # pos + seq id (12 B), not the whole 1024-cell cache; a long prompt leaves 2 in the host total
    assert p2.checkpoint_mib == 512 * (5 * row + 12) / MiB
    assert p2.n_checkpoints == 2 and p2.checkpoints_mib == 2 * p2.checkpoint_mib
    assert p2.host_total_mib == pytest.approx(
        p2.buffers_mib + p2.work_mib + p2.overhead_mib + p2.checkpoints_mib
    )
    off = plan_memory(m, cfg(ctx=8192, extra=("--ctx-checkpoints", "0")))
    assert off.n_checkpoints == 0 and off.host_total_mib < p.host_total_mib
    assert plan_memory(m, cfg(ctx=8192), checkpoints=32).checkpoints_mib == 32 * p.checkpoint_mib
    assert plan_memory(info(), cfg()).n_checkpoints == 0  # full attention only: no checkpoints


# ---------------------------------------------------------------------------- recurrent state


def test_recurrent_state_does_not_grow_with_context() -> None:
    m = info(
        arch="mamba",
        n_head=0,
        n_head_kv=[0] * 4,
        recurrent_layers=[0, 1, 2, 3],
        metadata={"mamba.ssm.conv_kernel": 4, "mamba.ssm.inner_size": 1536, "mamba.ssm.state_size": 16},
    )
    # per layer and sequence: ((d_conv-1) x d_inner + d_state x d_inner) floats
    per = (3 * 1536 + 16 * 1536) * 4
    small, big = plan_memory(m, cfg(ctx=2048)), plan_memory(m, cfg(ctx=32768))
    assert small.recurrent_mib == big.recurrent_mib == 4 * per / MiB
    assert small.kv_mib == 0.0 and small.layers == []
    assert plan_memory(m, cfg(ctx=2048), n_parallel=3).recurrent_mib == 3 * 4 * per / MiB


def test_hybrid_gated_delta_net_matches_public_qwen35_log() -> None:
    # Qwen3.5-9B: 32 layers, attention every 4th, gated delta-net with d_inner 4096, 16 groups,
    # d_state 128, conv 4. A public llama.cpp log prints "RS buffer size = 50.25 MiB"
    # (https://github.com/JamePeng/llama-cpp-python/issues/78).
    recurrent = [i for i in range(32) if (i + 1) % 4 != 0]
    m = info(
        arch="qwen35",
        n_layer=32,
        n_embd=4096,
        n_head=16,
        n_head_kv=[4] * 32,
        head_dim_k=256,
        head_dim_v=256,
        ctx_train=262144,
        recurrent_layers=recurrent,
        metadata={
            "qwen35.ssm.conv_kernel": 4,
            "qwen35.ssm.inner_size": 4096,
            "qwen35.ssm.state_size": 128,
            "qwen35.ssm.group_count": 16,
        },
    )
    p = plan_memory(m, cfg(ctx=8192))
    assert p.recurrent_mib == pytest.approx(50.25)
    assert [lk.layer for lk in p.layers] == [3, 7, 11, 15, 19, 23, 27, 31]  # KV only on attention
    assert p.kv_mib == 8 * 8192 * 4 * 256 * 2 * 2 / MiB
    assert p.context_mib == p.kv_mib + p.recurrent_mib


def test_rwkv_state_and_missing_sizes() -> None:
    m = info(arch="rwkv6", n_embd=2048, recurrent_layers=[0, 1, 2, 3], metadata={"rwkv6.wkv.head_size": 64})
    # token shift (2 x n_embd) + wkv state (n_embd x head_size) floats per layer
    assert plan_memory(m, cfg()).recurrent_mib == 4 * (2 * 2048 + 2048 * 64) * 4 / MiB
    bare = plan_memory(info(arch="mamba", recurrent_layers=[0, 1, 2, 3]), cfg())
    assert bare.recurrent_mib == 0.0 and any("not counted" in n for n in bare.notes)


def close(pred: float, meas: float | None, rel: float) -> bool:
    """Within `rel` of llama.cpp's figure, which it prints rounded to 0.01 MiB."""
    assert meas is not None
    return abs(pred - meas) <= max(rel * meas, 0.006)


def test_hybrid_jamba_against_its_real_log(tmp_path: Path) -> None:
    model = write_tiny_jamba(tmp_path / "tiny-jamba.gguf")  # same bytes as captured
    m = read_model_info(model)
    p = plan_memory(m, cfg(ctx=4096), n_parallel=2)
    host = read_memory_log(LOGS / "tiny-jamba_c4096_f16_np2_lv4.log").host
    assert host is not None
    assert p.recurrent_mib == 2 * 2 * (3 * 512 + 64 * 512) * 4 / MiB  # 0.5234 → printed 0.52
    assert close(p.recurrent_mib, host.recurrent_mib, 0.02)
    assert close(p.kv_mib, host.kv_mib, 0.02) and close(p.model_mib, host.model_mib, 0.02)
    assert close(p.compute_mib, host.compute_mib, 0.10)


# ---------------------------------------------------------------------------- weights


def test_repack_by_tensor_type_without_the_file() -> None:
    m = info(tensor_bytes={"Q4_K": 100 * MiB, "Q6_K": 20 * MiB, "Q5_0": 30 * MiB, "F32": MiB})
    x86 = plan_memory(m, cfg())
    assert (x86.model_mib, x86.repack_mib) == (151.0, 100.0)  # x86 AVX2 repacks Q4_K only here
    assert any("upper bound" in n for n in x86.notes)
    arm = plan_memory(m, cfg(), host_arch="aarch64")
    assert arm.repack_mib == 120.0  # NEON dotprod also repacks Q6_K
    assert plan_memory(m, cfg(extra=("--no-repack",)), host_arch="aarch64").repack_mib == 0.0
    no_mmap = plan_memory(m, cfg(mmap=False))
    assert no_mmap.model_mib == 51.0  # read into RAM: the repacked tensors live only in CPU_REPACK


@pytest.mark.gemma
def test_gemma_weights_and_kv_against_its_real_logs(gemma_path: Path) -> None:
    m = read_model_info(gemma_path)
    # Q4_K matmul weights: 18 attn_output + 9 ffn_down tensors (llama.cpp: CPU_REPACK 12.66 MiB)
    x86 = plan_memory(m, cfg(ctx=2048))
    assert x86.repack_mib * MiB == 13271040
    # arm64 (dotprod) adds Q6_K and Q8_0 matmul weights; the Q8_0 token embedding itself stays
    # mapped (GET_ROWS), but the tied output is its TENSOR_DUPLICATED copy for a matmul: 262144 x
    # 640 Q8_0 = 178257920 B more in CPU_REPACK
    arm = plan_memory(m, cfg(ctx=2048), host_arch="aarch64")
    assert arm.repack_mib * MiB == 13271040 + 9676800 + 1566720 + 178257920
    # a generic armv8-a build (no dotprod) repacks nothing
    assert plan_memory(m, cfg(ctx=2048), host_arch="aarch64", cpu_flags=["asimd"]).repack_mib == 0
    for name, c in [
        ("gemma3-270m_c2048_f16_verbose", cfg(ctx=2048)),
        ("gemma3-270m_c2048_q8_0_lv4", cfg(ctx=2048, cache_type_k="q8_0", cache_type_v="q8_0")),
        ("gemma3-270m_c8192_f16_fa-off_lv4", cfg(ctx=8192, flash_attn="off")),
        ("gemma3-270m_c8192_q8_0_lv4", cfg(ctx=8192, cache_type_k="q8_0", cache_type_v="q8_0")),
    ]:
        b = read_memory_log(LOGS / f"{name}.log")
        host, p = b.host, plan_memory(m, c)
        assert host is not None, name
        assert close(p.model_mib, host.model_mib, 0.02), name
        assert close(p.repack_mib, host.repack_mib, 0.02), name
        assert close(p.kv_mib, host.kv_mib, 0.02) and close(p.kv_swa_mib, host.kv_swa_mib, 0.02), name
        assert close(p.compute_mib, host.compute_mib, 0.10), name
        assert close(p.output_mib, host.output_mib, 0.02), name
        assert (p.swa_cells, p.n_ctx_seq) == (b.kv_swa_cells, b.kv_cells), name


# ---------------------------------------------------------------------------- compute buffer


def test_compute_buffer_formula_hand_computed() -> None:
    m = info()  # n_embd 512, 8 heads of 64, 2 KV heads, n_ff 1536
    # no flash attention, ctx 8192, ubatch 512: f32 mask n_kv x T + KQ n_head x n_kv x T (f32)
    # + attention live set (2 n_embd + 3 q + 2 kv) x T floats + token ids/positions
    off = plan_memory(m, cfg(ctx=8192, flash_attn="off"))
    mask, kq = 8192 * 512 * 4, 8 * 8192 * 512 * 4
    att = (2 * 512 + 3 * 512 + 2 * 128) * 512 * 4
    assert off.compute_mib * MiB == mask + kq + att + 512 * 8  # llama-server measured 149.51 MiB
    # work buffer: kqv converts softmax(KQ) to f16
    assert off.work_mib * MiB == 8 * 8192 * 512 * 2
    # flash attention, ctx 2048: f16 mask + the FFN live set (3 n_ff + 2 n_embd + q) x T floats
    on = plan_memory(m, cfg(ctx=2048))
    assert on.compute_mib * MiB == 2048 * 512 * 2 + (3 * 1536 + 2 * 512 + 512) * 512 * 4 + 512 * 8
    # llama-cli / llama-fit-params reserve logits for the whole ubatch: with a 32k vocabulary they
    # win, and reuse the masks' space (llama-fit-params: gemma-3 514 MiB at 2k and 8k alike)
    big_vocab = info(n_vocab=32000)
    cli = plan_memory(big_vocab, cfg(ctx=2048), n_outputs=512)
    assert cli.compute_mib * MiB == (512 * 32000 + 2 * 512 * 512) * 4 + 512 * 8
    assert plan_memory(big_vocab, cfg(ctx=2048)).compute_mib == on.compute_mib  # server: 1 row


def test_compute_shrinks_with_a_partly_filled_cache() -> None:
    m = info()
    full = plan_memory(m, cfg(ctx=32768, flash_attn="off"))
    part = plan_memory(m, cfg(ctx=32768, flash_attn="off"), tokens_in_cache=1000)
    assert part.compute_mib < full.compute_mib / 10
    assert part.kv_mib == full.kv_mib  # the KV buffers are cleared (touched) up front
    assert part.host_total_mib < full.host_total_mib


def test_plan_is_labelled_predicted() -> None:
    p = plan_memory(info(), cfg())
    assert p.predicted is True and p.model_dump()["predicted"] is True
    assert isinstance(p, MemoryPlan)
    assert p.host_total_mib == pytest.approx(p.buffers_mib + p.work_mib + p.overhead_mib)
    assert p.buffers_mib == pytest.approx(
        p.model_mib + p.repack_mib + p.kv_mib + p.recurrent_mib + p.compute_mib + p.output_mib
    )


# ---------------------------------------------------------------------------- bad inputs


def one_line(e: pytest.ExceptionInfo[ConfigError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_ctx_zero_means_ctx_train() -> None:
    p = plan_memory(info(ctx_train=8192), cfg(ctx=0))
    assert p.n_ctx == 8192 and any("ctx 0 resolved to ctx_train" in n for n in p.notes)


def test_bad_inputs_are_one_line_config_errors() -> None:
    m = info(ctx_train=8192)
    with pytest.raises(ConfigError, match="above the model's trained context") as e:
        plan_memory(m, cfg(ctx=16384))
    assert one_line(e).startswith("ctx 16384")
    with pytest.raises(ConfigError, match="layer 7 does not exist") as e:
        plan_memory(m, cfg(), kv_layers={7: ("q8_0", "q8_0")})
    one_line(e)
    with pytest.raises(ConfigError, match="unknown KV cache type 'q3_k'"):
        plan_memory(m, cfg(), kv_layers={0: ("q3_k", "q3_k")})
    with pytest.raises(ConfigError, match="needs flash attention"):
        plan_memory(m, cfg(cache_type_v="q8_0", flash_attn="off"))
    plan_memory(m, cfg(cache_type_k="q8_0", flash_attn="off"))  # a quantized K alone is fine
    with pytest.raises(ConfigError, match="host_arch"):
        plan_memory(m, cfg(), host_arch="sparc")
    with pytest.raises(ConfigError, match="n_parallel 0"):
        plan_memory(m, cfg(), n_parallel=0)
    with pytest.raises(ConfigError, match="n_outputs 0"):
        plan_memory(m, cfg(), n_outputs=0)


def test_parse_kv_layers() -> None:
    spec = parse_kv_layers("0-10:q8_0,11-:q4_0", 32)
    assert len(spec) == 32 and spec[0] == spec[10] == ("q8_0", "q8_0") and spec[31] == ("q4_0", "q4_0")
    assert parse_kv_layers(" 3:Q8_0/f16 ", 4) == {3: ("q8_0", "f16")}
    for bad, match in [
        ("0-40:q8_0", "layer 40 does not exist"),
        ("0-3:q8_0,3:q4_0", "layer 3 is given twice"),
        ("0-3", "bad entry"),
        ("a-b:q8_0", "bad layer range"),
        ("3-1:q8_0", "bad layer range"),
        ("0:q3_k", "unknown KV cache type"),
        (" , ", "empty spec"),
    ]:
        with pytest.raises(ConfigError, match=match) as e:
            parse_kv_layers(bad, 32)
        one_line(e)


# ---------------------------------------------------------------------------- fit_context


def test_fit_context() -> None:
    m = info(ctx_train=32768)
    budget = 100.0
    fits = fit_context(m, cfg(), budget)
    assert set(fits) == {"f16", "q8_0", "q4_0"}
    assert fits["f16"] <= fits["q8_0"] <= fits["q4_0"]
    for kv, ctx in fits.items():
        assert ctx % 256 == 0 and 0 < ctx <= 32768
        at = plan_memory(m, cfg(ctx=ctx, cache_type_k=kv, cache_type_v=kv))
        assert at.host_total_mib <= budget
        if ctx < 32768:
            over = plan_memory(m, cfg(ctx=ctx + 256, cache_type_k=kv, cache_type_v=kv))
            assert over.host_total_mib > budget
    assert fit_context(m, cfg(), 1e6, ["f16"]) == {"f16": 32768}  # capped at ctx_train
    assert fit_context(m, cfg(), 1.0, ["q4_0"]) == {"q4_0": 0}  # not even 256 tokens
    with pytest.raises(ConfigError, match="unknown KV cache type"):
        fit_context(m, cfg(), budget, ["q2"])
    with pytest.raises(ConfigError, match="budget"):
        fit_context(m, cfg(), 0)
    with pytest.raises(ConfigError, match="needs flash attention"):
        fit_context(m, cfg(flash_attn="off"), budget, ["q8_0"])


# ---------------------------------------------------------------------------- real runs


def measured(runtime: Runtime, model: Path, c: RuntimeConfig, log: Path) -> MemoryBreakdown:
    with ServerProcess(runtime, str(model), c.model_copy(update={"extra": ("-lv", "4")}), log):
        pass  # SIGTERM once ready: llama-server prints its buffers while loading
    return read_memory_log(log)


POINTS: list[tuple[int, str, FlashAttn]] = [(2048, "f16", "on"), (1024, "q4_0", "on"), (2048, "f16", "off")]
GEMMA_POINTS: list[tuple[int, str, FlashAttn]] = [
    (2048, "f16", "on"),
    (8192, "q8_0", "on"),
    (4096, "f16", "off"),
]


def check_against_llama(
    runtime: Runtime, model: Path, points: list[tuple[int, str, FlashAttn]], tmp: Path
) -> None:
    m = read_model_info(model)
    flags = probe_host().cpu_flags  # the native build here targets this CPU's features
    for ctx, kv, fa in points:
        if ctx > m.ctx_train:
            continue
        c = RuntimeConfig(threads=2, ctx=ctx, cache_type_k=kv, cache_type_v=kv, flash_attn=fa)
        b = measured(runtime, model, c, tmp / f"{ctx}-{kv}-{fa}.log")
        host, p = b.host, plan_memory(m, c, cpu_flags=flags)
        label = f"{m.name} ctx={ctx} kv={kv} fa={fa}"
        assert host is not None, label
        assert close(p.model_mib, host.model_mib, 0.02), (label, p.model_mib, host.model_mib)
        # no CPU_REPACK line means nothing was repacked
        assert close(p.repack_mib, host.repack_mib or 0.0, 0.02), (label, p.repack_mib, host.repack_mib)
        assert close(p.kv_mib, host.kv_mib or 0.0, 0.02), (label, p.kv_mib, host.kv_mib)
        assert close(p.recurrent_mib, host.recurrent_mib or 0.0, 0.02), (label, p.recurrent_mib)
        assert close(p.compute_mib, host.compute_mib, 0.10), (label, p.compute_mib, host.compute_mib)


@pytest.mark.llama
def test_plan_vs_llama_server_tiny(runtime: Runtime, tiny_model: Path, tmp_path: Path) -> None:
    check_against_llama(runtime, tiny_model, POINTS, tmp_path)


@pytest.mark.llama
@pytest.mark.gemma
def test_plan_vs_llama_server_gemma(runtime: Runtime, gemma_path: Path, tmp_path: Path) -> None:
    check_against_llama(runtime, gemma_path, GEMMA_POINTS, tmp_path)


# ---------------------------------------------------------------------------- the zoo (issue 19)


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


def zoo(name: str, directory: Path) -> ModelInfo:
    return read_model_info(write_zoo_model(name, directory))


def test_zoo_repack_follows_cpu_features(zoo_dir: Path) -> None:
    m = zoo("kquant", zoo_dir)
    # 2 layers: q, k, v, o (256x256, 256x128 x2, 256x256) + gate, up (256x512) Q4_K; ffn_down Q2_K
    q4k = 2 * (256 * 256 + 2 * 256 * 128 + 256 * 256 + 2 * 256 * 512) * 144 // 256
    q2k = 2 * 512 * 256 * 84 // 256
    q6k_out = 512 * 256 * 210 // 256  # the output matmul; the Q4_K token_embd is GET_ROWS
    avx2 = plan_memory(m, cfg(), cpu_flags=["sse4_2", "avx", "avx2", "fma"])
    assert avx2.repack_mib * MiB == q4k
    avx512 = plan_memory(m, cfg(), cpu_flags=["avx2", "avx512f", "avx512bw"])
    assert avx512.repack_mib * MiB == q4k + q2k  # ggml_cpu_has_avx512() adds the Q2_K kernel
    rk3588 = plan_memory(m, cfg(), host_arch="aarch64", cpu_flags=["fp", "asimd", "asimddp"])
    assert rk3588.repack_mib * MiB == q4k + q6k_out  # Q6_K 8x4 with dotprod; no Q2_K kernel on Arm
    assert plan_memory(m, cfg(), host_arch="aarch64", cpu_flags=["asimd"]).repack_mib == 0
    # the mapped range runs from the first non-repacked tensor (token_embd) to the last: the
    # repacked ones in between stay inside it; on Arm the output, last in the file, leaves it
    assert avx2.model_mib == avx512.model_mib
    assert rk3588.model_mib * MiB == avx2.model_mib * MiB - q6k_out
    assert avx2.model_mib * MiB == pytest.approx(sum(m.tensor_bytes.values()), abs=32 * 32)


def test_zoo_mapping_range_and_tied_output(zoo_dir: Path) -> None:
    moe = zoo("moe-q4tail", zoo_dir)
    p = plan_memory(moe, cfg())
    exps = 2 * 3 * 256 * 256 * 4 * 18 // 32  # 2 layers x gate/down/up x n_embd x n_ff x 4 experts
    assert p.repack_mib * MiB == exps
    # the experts sit at the end of the file: the mapped buffer stops before them
    assert p.model_mib * MiB == pytest.approx(sum(moe.tensor_bytes.values()) - exps, abs=32 * 64)
    assert plan_memory(moe, cfg(mmap=False)).model_mib == pytest.approx(p.model_mib, abs=0.01)
    tied = zoo("tied-q4_0", zoo_dir)
    t = plan_memory(tied, cfg())
    embd = 512 * 256 * 18 // 32
    assert tied.output_tied and t.repack_mib * MiB == embd  # the output's own repacked copy
    assert t.model_mib * MiB >= sum(tied.tensor_bytes.values())  # the embedding stays mapped too
    assert plan_memory(tied, cfg(extra=("--no-repack",))).repack_mib == 0


def test_zoo_per_layer_head_sizes_and_shared_kv(zoo_dir: Path) -> None:
    m = zoo("gemma4-kvshare", zoo_dir)
    p = plan_memory(m, cfg(ctx=4096))
    # layers 0-3 own a cache (shared_kv_layers 2); SWA layers 0-2 have 2 heads of 64, full layer 3
    # 2 heads of 128; the SWA cache is PAD(256 + 512) = 768 cells
    assert [lk.layer for lk in p.layers] == [0, 1, 2, 3] and p.swa_cells == 768
    assert [lk.k_bytes for lk in p.layers] == [768 * 128 * 2] * 3 + [4096 * 256 * 2]
    assert p.kv_mib * MiB == 2 * (3 * 768 * 128 * 2 + 4096 * 256 * 2)
    # without flash attention V is padded to the widest layer (256) on every layer
    off = plan_memory(m, cfg(ctx=4096, flash_attn="off"))
    assert [lk.v_bytes for lk in off.layers] == [768 * 256 * 2] * 3 + [4096 * 256 * 2]
    # a checkpoint holds the 256-cell window of the SWA layers only
    assert p.checkpoint_mib * MiB == 256 * (3 * 2 * 128 * 2 + 12)


def test_unknown_architecture_is_said_so() -> None:
    p = plan_memory(info(arch="deepseek2", metadata={"deepseek2.feed_forward_length": 1536}), cfg())
    assert p.unverified == ["KV", "compute"]
    assert any("not one the planner has been checked on" in n for n in p.notes)
    assert plan_memory(info(), cfg()).unverified == []


ZOO_POINTS: list[tuple[int, str, FlashAttn]] = [
    (4096, "f16", "on"),
    (16384, "q8_0", "on"),
    (4096, "f16", "off"),
]


@pytest.mark.llama
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_against_llama_server(runtime: Runtime, zoo_dir: Path, tmp_path: Path, name: str) -> None:
    """Every zoo model loaded by the real llama-server: its own buffer lines against the plan."""
    check_against_llama(runtime, write_zoo_model(name, zoo_dir), ZOO_POINTS, tmp_path)
