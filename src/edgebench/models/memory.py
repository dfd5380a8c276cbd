"""Memory planner: what llama-server will allocate for a model and config, from GGUF metadata alone.

Every figure is a prediction (`MemoryPlan.predicted` is always True). The rules follow the
llama.cpp source edgebench builds (llama-cpp-python 0.3.36's vendor tree):

- context: `n_ctx = PAD(ctx, 256)`; not unified, `n_ctx_seq = PAD(n_ctx / n_seq, 256)` and
  `n_ctx = n_ctx_seq * n_seq` (llama_context ctor, src/llama-context.cpp). Each KV cache holds
  `n_ctx_seq` cells per stream, `n_stream = unified ? 1 : n_seq` (create_memory,
  src/llama-model.cpp; llama_kv_cache ctor, src/llama-kv-cache.cpp).
- attention KV per layer: K `row_size(type_k, head_dim_k * n_head_kv(il))` and V likewise per cell
  and stream; without flash attention V is transposed and padded to the widest layer.
- sliding-window layers live in a second cache of
  `PAD(min(n_ctx_seq, n_swa * (unified ? n_seq : 1) + n_ubatch), 256)` cells (src/llama-kv-cache-iswa.cpp).
- recurrent layers keep `(n_embd_r + n_embd_s) * 4` bytes per sequence, whatever the context
  (llama_memory_recurrent ctor, src/llama-memory-recurrent.cpp; n_embd_r/s in src/llama-hparams.cpp).
- weights: the mmap'ed range holds every tensor; matmul weights of the types ggml-cpu repacks
  (ggml_repack_get_optimal_repack_type, ggml/src/ggml-cpu/repack.cpp) get a second CPU_REPACK copy.
- output buffer: `n_vocab * max(n_outputs, n_seq) * 4` (output_reserve, src/llama-context.cpp).
- compute buffer: llama.cpp measures it by reserving the worst-case graph (sched_reserve); ggml's
  allocator packs tensors first-fit, so there is no closed form. We model it as the larger of (the
  KQ masks, n_kv x n_ubatch, f16 with flash attention and f32 without, plus one layer's live set)
  and the output head's logits, with per-token coefficients calibrated on measured buffers (see
  `_compute_bytes`; within ±10 % on gemma-3-270m and synthetic llama models).
- work buffer: ggml-cpu's per-graph scratch (ggml_graph_plan), not in llama.cpp's log but in RSS;
  without flash attention it holds an f16 copy of the n_head x n_kv x n_ubatch attention scores.
  Only the current one counts: edgebench starts llama-server with glibc's mmap threshold fixed
  (runtime.server.MALLOC_ENV), so the ones outgrown while the context fills are returned. A server
  started without it keeps some of them (12-17 MiB more at a 4k fill on the small zoo models).
- host total = all of the above + a fixed process overhead measured on this build.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import gguf
from pydantic import BaseModel, ConfigDict

from edgebench.errors import ConfigError, ModelError
from edgebench.models.gguf import ModelInfo, _Array, _read_header
from edgebench.runtime.flags import KV_TYPES, RuntimeConfig

__all__ = [
    "DEFAULT_KV_TYPES",
    "HOST_ARCHES",
    "VERIFIED_ARCHS",
    "LayerKV",
    "MemoryPlan",
    "MiB",
    "cpu_features",
    "fit_context",
    "parse_kv_layers",
    "plan_memory",
]

MiB = 1024 * 1024
_PAD = 256  # GGML_PAD(n_ctx, 256) in llama_context, and the iSWA cache padding
_MAX_SEQ = 256  # LLAMA_MAX_SEQ
DEFAULT_KV_TYPES = ("f16", "q8_0", "q4_0")
# Architectures whose KV cache, recurrent state and compute buffer this planner has been checked
# against llama-server's own buffer lines (tests/test_memory_plan.py, bench/planner_accuracy.py:
# the synthetic zoo in edgebench.testing.zoo and gemma-3-270m). Any other architecture gets a
# plan from the same generic rules, said to be unverified, with llama.cpp's projection beside it.
VERIFIED_ARCHS = frozenset({"llama", "gemma3", "gemma4", "jamba", "qwen3", "smollm3", "mistral3", "granite"})

# Host RSS beyond llama.cpp's buffers: binary, libraries, threads, the HTTP server, the vocabulary
# (token strings, maps, token-to-piece cache, a sampler's n_vocab candidates) and the KV cells'
# bookkeeping (llama_kv_cells: pos, ext, shift and a 256-bit sequence set per cell, 48 B; the
# `used` and `seq_pos` tree nodes of a filled cell, ~88 B). Base and per-token figures fitted on
# the peak RSS of llama-server runs of this build serving one text prompt (x86-64,
# bench/planner_accuracy.py): 17.2-19.9 MiB beyond buffers + work with a 476-token vocabulary,
# 63.7-69.2 MiB with gemma-3's 262,144 tokens.
_OVERHEAD_BASE = int(17.1 * MiB)
_OVERHEAD_PER_VOCAB = 193
_OVERHEAD_PER_CELL = 48
_OVERHEAD_PER_USED_CELL = 88

# Which tensors ggml-cpu re-lays out into CPU_REPACK: ggml_repack_get_optimal_repack_type
# (ggml/src/ggml-cpu/repack.cpp) tries, per type, kernels gated on the *compiled* CPU features
# (ggml_cpu_has_avx2() is `#if defined(__AVX2__)`, likewise dotprod/i8mm/sve/avx512), each needing
# ne[1] % n == 0; the first kernel whose features are present and whose row multiple divides wins,
# else the next is tried. Features: x86 "avx2", "avx512f"; Arm "neon", "dotprod", "i8mm", and
# "sve256" (SVE with a 256-bit vector: ggml_cpu_get_sve_cnt() == QK8_0 bytes).
_REPACK_KERNELS: dict[str, tuple[tuple[frozenset[str], int], ...]] = {
    t: tuple((frozenset(need.split()), n) for need, n in rules)
    for t, rules in {
        "Q4_0": (("avx2", 8), ("sve256 i8mm", 8), ("neon i8mm", 4), ("neon dotprod", 4)),
        "Q4_K": (("avx2", 8), ("neon i8mm", 8), ("neon dotprod", 8)),
        "Q2_K": (("avx512f", 8),),
        "Q5_K": (("neon i8mm", 8), ("neon dotprod", 8)),
        "Q6_K": (("neon i8mm", 8), ("neon dotprod", 8)),
        "IQ4_NL": (("avx2", 8), ("neon dotprod", 4)),
        "MXFP4": (("avx2", 8), ("neon dotprod", 4)),
        "Q8_0": (("neon i8mm", 4), ("neon dotprod", 4)),
        "Q1_0": (("neon i8mm", 4), ("neon dotprod", 4)),
    }.items()
}
# Default target features per host class when nothing better is known: x86-64 with AVX2 (any
# x86-64 CPU of the last decade), arm64 with NEON dotprod (Cortex-A76: RK3588, Raspberry Pi 5).
# The host probe (HostInfo.cpu_flags) and the build presets (Preset.target_features) say more.
HOST_ARCHES: dict[str, frozenset[str]] = {
    "x86_64": frozenset({"avx2"}),
    "amd64": frozenset({"avx2"}),
    "x86_64+avx512": frozenset({"avx2", "avx512f"}),
    "aarch64": frozenset({"neon", "dotprod"}),
    "arm64": frozenset({"neon", "dotprod"}),
    "riscv64": frozenset(),  # its repack kernels need specific vector lengths: assume none
    "none": frozenset(),
}
# /proc/cpuinfo names → ggml's feature names (Arm "Features", x86 "flags")
_FEATURE_ALIASES = {"asimd": "neon", "asimddp": "dotprod", "avx512": "avx512f"}
# Weights llama.cpp reads with an op other than MUL_MAT/MUL_MAT_ID (LLM_TENSOR_INFOS,
# src/llama-arch.cpp: GET_ROWS, SSM_CONV, NONE): never placed in CPU_REPACK, whatever their type.
_NOT_MATMUL = re.compile(
    r"^(token_embd|position_embd|token_types|per_layer_token_embd|masked_embd_\w+|d2t|markov_w1"
    r"|selector_\w+)\.|\.(ssm_conv1d|shortconv\.conv|ple_conv1d|attn_compressor_ape|indexer_compressor_ape"
    r"|attn_rel_b|cross_attn_rel_b|ffn_gate_tid2eid|nextn\.embed_tokens)\."
)


def cpu_features(host_arch: str, flags: Iterable[str] | None = None) -> frozenset[str]:
    """The ggml features repack depends on: from CPU flags when given, else the host class default."""
    if flags is None:
        return HOST_ARCHES.get(host_arch.lower(), frozenset())
    out = {_FEATURE_ALIASES.get(f.lower(), f.lower()) for f in flags}
    if host_arch.lower() in ("aarch64", "arm64"):
        out.add("neon")  # every arm64 build has NEON (__ARM_NEON)
        if "sve" in out and "sve256" not in out:
            out.discard("sve")  # the 8-row Q4_0 kernel needs a 256-bit SVE vector; unknown here
    return frozenset(out)


def _repack_multiple(ggml_type: str, features: frozenset[str], ne1: int) -> int | None:
    """The row multiple of the kernel ggml picks for a weight with ne[1] rows, or None."""
    for need, n in _REPACK_KERNELS.get(ggml_type, ()):
        if need <= features and ne1 % n == 0:
            return n
    return None


class LayerKV(BaseModel):
    """One layer's attention KV cache (all streams)."""

    model_config = ConfigDict(frozen=True)

    layer: int
    swa: bool
    cells: int  # per stream
    n_head_kv: int
    type_k: str
    type_v: str
    k_bytes: int
    v_bytes: int


class MemoryPlan(BaseModel):
    """Predicted llama-server memory for one model and config (MiB unless noted)."""

    model_config = ConfigDict(frozen=True)

    predicted: Literal[True] = True  # every number here is a prediction, never a measurement
    model: str
    n_ctx: int  # as llama.cpp will size it (padded)
    n_ctx_seq: int
    n_seq: int
    n_stream: int
    kv_unified: bool
    n_batch: int
    n_ubatch: int
    flash_attn: bool
    swa_cells: int | None  # per stream; None without sliding-window layers
    model_mib: float  # CPU_Mapped (mmap) or CPU weight buffer
    repack_mib: float  # CPU_REPACK copy
    kv_mib: float  # all attention KV, SWA included
    kv_swa_mib: float
    recurrent_mib: float
    compute_mib: float
    output_mib: float
    work_mib: float  # ggml-cpu's graph work buffer (not in llama.cpp's log; malloc'ed per graph)
    overhead_mib: float  # process RSS beyond llama.cpp's buffers (calibrated)
    checkpoint_mib: float  # one llama-server context checkpoint (a slot's SWA window + recurrent state)
    n_checkpoints: int = 0  # checkpoints counted in host_total_mib
    # parts this planner has not been checked against llama.cpp on for this architecture: shown
    # with llama.cpp's own projection (runtime.fitparams) beside them
    unverified: list[str] = []
    layers: list[LayerKV]
    notes: list[str]

    @property
    def context_mib(self) -> float:
        """llama.cpp's "context" column: KV cache plus recurrent state."""
        return self.kv_mib + self.recurrent_mib

    @property
    def buffers_mib(self) -> float:
        """Everything llama.cpp allocates on the host (its breakdown table plus the output buffer)."""
        return (
            self.model_mib
            + self.repack_mib
            + self.kv_mib
            + self.recurrent_mib
            + self.compute_mib
            + self.output_mib
        )

    @property
    def checkpoints_mib(self) -> float:
        return self.n_checkpoints * self.checkpoint_mib

    @property
    def host_total_mib(self) -> float:
        """Expected peak RSS with the context full: all buffers, the CPU work buffer, the context
        checkpoints a long prompt leaves behind, the overhead."""
        return self.buffers_mib + self.work_mib + self.checkpoints_mib + self.overhead_mib


# ---------------------------------------------------------------------------- inputs


def _row_bytes(ggml_type: str, n: int) -> int:
    """ggml_row_size: bytes of n elements of a (block-)quantized type."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type.upper()]]
    return math.ceil(n / block) * size


def _is_quantized(ggml_type: str) -> bool:
    return ggml_type not in ("f32", "f16", "bf16")


def _check_kv_type(t: str, what: str) -> str:
    low = t.lower()
    if low not in KV_TYPES:
        raise ConfigError(f"{what}: unknown KV cache type {t!r}; one of {', '.join(KV_TYPES)}")
    return low


def parse_kv_layers(spec: str, n_layer: int) -> dict[int, tuple[str, str]]:
    """'0-10:q8_0,11-:q4_0' → {layer: (type_k, type_v)}; 'q8_0/q4_0' sets K and V apart.

    Ranges are inclusive; 'N-' runs to the last layer. A layer named twice, a layer the model
    does not have or an unknown type is a ConfigError.
    """
    out: dict[int, tuple[str, str]] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        rng, sep, types = part.partition(":")
        if not sep or not rng.strip() or not types.strip():
            raise ConfigError(f"--kv-layers: bad entry {part!r} (expected e.g. 0-10:q8_0 or 11-:q4_0/q4_0)")
        k, _, v = types.strip().partition("/")
        pair = (_check_kv_type(k, "--kv-layers"), _check_kv_type(v or k, "--kv-layers"))
        lo_s, dash, hi_s = rng.strip().partition("-")
        try:
            lo = int(lo_s)
            hi = (int(hi_s) if hi_s.strip() else n_layer - 1) if dash else lo
        except ValueError:
            raise ConfigError(f"--kv-layers: bad layer range {rng.strip()!r} in {part!r}") from None
        if lo < 0 or hi < lo:
            raise ConfigError(f"--kv-layers: bad layer range {rng.strip()!r} in {part!r}")
        if hi >= n_layer:
            raise ConfigError(
                f"--kv-layers: layer {hi} does not exist (the model has layers 0-{n_layer - 1})"
            )
        for il in range(lo, hi + 1):
            if il in out:
                raise ConfigError(f"--kv-layers: layer {il} is given twice")
            out[il] = pair
    if not out:
        raise ConfigError(f"--kv-layers: empty spec {spec!r}")
    return out


def _meta_int(model: ModelInfo, key: str) -> int | None:
    v = model.metadata.get(f"{model.arch}.{key}")
    if isinstance(v, float) and not math.isfinite(v):  # a record stored before models add checked it
        return None
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _pad(n: int, to: int = _PAD) -> int:
    return -(-n // to) * to


_Tensors = tuple[tuple[str, str, tuple[int, ...], int, int], ...]


@lru_cache(maxsize=16)
def _header(path: str, size: int) -> tuple[_Tensors, dict[str, tuple[int, ...]]] | None:
    """(name, ggml type, shape, bytes, data offset) of every tensor and the model's per-layer integer
    arrays (ModelInfo.metadata keeps scalars only), or None when the file cannot be read."""
    try:
        header, _ = _read_header(Path(path))
    except ModelError:
        return None
    tensors = tuple((t.name, t.ggml_type, t.shape, t.n_bytes, t.offset) for t in header.tensors)
    arrays = {
        k: tuple(int(x) for x in v.items)
        for k, v in header.kv.items()
        if isinstance(v, _Array) and v.items is not None and all(isinstance(x, int | bool) for x in v.items)
    }
    return tensors, arrays


def _file(model: ModelInfo) -> tuple[_Tensors, dict[str, tuple[int, ...]]] | None:
    p = Path(model.path)
    return _header(str(p), p.stat().st_size) if p.is_file() else None


def _is_repacked(name: str, shape: tuple[int, ...], gtype: str, features: frozenset[str]) -> bool:
    """Placed in CPU_REPACK: the repack buffer type supports MUL_MAT on a 2-D weight and
    MUL_MAT_ID on a 3-D expert stack (ggml::cpu::repack::extra_buffer_type::supports_op)."""
    dims = len(shape) - next((i for i, d in enumerate(reversed(shape)) if d != 1), len(shape))  # ggml_n_dims
    expert = "_exps." in name
    if _NOT_MATMUL.search(name) or dims != (3 if expert else 2):
        return False
    return _repack_multiple(gtype, features, shape[1]) is not None


def _weights(
    model: ModelInfo, features: frozenset[str], mmap: bool, layout: _Tensors | None = None
) -> tuple[int, int, bool]:
    """(CPU_Mapped or CPU weight buffer, CPU_REPACK buffer, exact) for these CPU features.

    llama_model::load_tensors maps, per buffer type, only the range from the first to the last
    tensor of that type (llama_model_loader::get_mapping_range): repacked tensors at either end of
    the file fall outside the mapped buffer, those in between stay inside it. A tied output (no
    output.weight) is the token embedding created again with TENSOR_DUPLICATED for the output
    matmul: when its type repacks, that copy lives in CPU_REPACK beside the mapped embedding.
    """
    f = (layout, {}) if layout is not None else _file(model)
    if f is None:  # hand-made ModelInfo: by type only, so the embedding may be counted
        repack = sum(
            b
            for t, b in model.tensor_bytes.items()
            if _REPACK_KERNELS.get(t) and any(need <= features for need, _ in _REPACK_KERNELS[t])
        )
        total = sum(model.tensor_bytes.values())
        return (total if mmap else total - repack), repack, not repack
    tensors, _ = f
    plain: list[tuple[int, int]] = []
    repack = 0
    for name, gtype, shape, b, off in tensors:
        if _is_repacked(name, shape, gtype, features):
            repack += _pad(b, 32)  # ggml_backend_alloc_ctx_tensors: TENSOR_ALIGNMENT (32) per tensor
        else:
            plain.append((off, b))
    names = {t[0] for t in tensors}
    embd = next((t for t in tensors if t[0] == "token_embd.weight"), None)
    if embd is not None and "output.weight" not in names:
        _, gtype, shape, b, _ = embd
        if len(shape) == 2 and _repack_multiple(gtype, features, shape[1]) is not None:
            repack += _pad(b, 32)  # the output's own repacked copy of the tied embedding
    if not plain:
        return 0, repack, True
    if mmap:
        return max(o + b for o, b in plain) - min(o for o, _ in plain), repack, True
    return sum(_pad(b, 32) for _, b in plain), repack, True


def _recurrent_row_floats(model: ModelInfo) -> int | None:
    """n_embd_r + n_embd_s (llama_hparams), from the GGUF's ssm/wkv/shortconv/kda keys."""
    n_embd, n_head = model.n_embd, model.n_head
    wkv = _meta_int(model, "wkv.head_size")
    if wkv:  # RWKV: token shift rows and the wkv state
        return (_meta_int(model, "token_shift_count") or 2) * n_embd + n_embd * wkv
    l_cache = _meta_int(model, "shortconv.l_cache")
    if l_cache:  # LFM2 short convolutions
        return n_embd * (l_cache - 1)
    d_conv = _meta_int(model, "ssm.conv_kernel") or 0
    kda = _meta_int(model, "kda.head_dim")
    if kda:  # Kimi delta attention: q/k/v conv state and a head_dim^2 state per head
        return 3 * (d_conv - 1 if d_conv > 0 else 3) * n_head * kda + kda * kda * n_head
    if model.arch == "minimax-01":  # lightning attention: head_dim^2 per head
        return model.head_dim_k * model.head_dim_k * n_head
    d_inner = _meta_int(model, "ssm.inner_size")
    d_state = _meta_int(model, "ssm.state_size")
    if d_inner is None or d_state is None:
        return None
    n_group = _meta_int(model, "ssm.group_count") or 0
    conv = (d_conv - 1 if d_conv > 0 else 0) * (d_inner + 2 * n_group * d_state)
    return conv + d_state * d_inner  # Mamba / Mamba-2 / gated delta-net


def _n_ff(model: ModelInfo) -> tuple[int, bool]:
    """FFN width one token touches (dense, or n_expert_used experts plus shared ones); exact?"""
    dense = _meta_int(model, "feed_forward_length")
    if model.n_expert and model.n_expert_used:
        per_expert = _meta_int(model, "expert_feed_forward_length") or dense
        if per_expert:
            shared = _meta_int(model, "expert_shared_feed_forward_length") or 0
            return per_expert * model.n_expert_used + shared * (
                _meta_int(model, "expert_shared_count") or 1
            ), True
    if dense:
        return dense, True
    return 4 * model.n_embd, False


# ---------------------------------------------------------------------------- compute buffer

# Per-token live set of one layer, in floats (f32 activations), read off the graph's order
# (llm_graph_context::build_ffn / build_attn) and checked against the compute buffer llama-server
# reserved for gemma-3-270m and synthetic llamas with n_ff from n_embd/2 to 4 n_embd (E = n_embd,
# F = n_ff, q = query width, kv = K width; bench/planner_accuracy.py, tests/test_memory_plan.py):
# - dense FFN: while up is computed, the residual, the normed input and gate are live (2E + 2F);
#   the SwiGLU output is allocated before gate and up are freed (E + 3F); ggml-alloc's best fit
#   then leaves a hole that makes the peak max(4F, 3F + 2E) (measured exactly for F = E/2 … 4E).
#   A MoE FFN (n_expert_used experts' rows, routing weights) keeps the older, wider rule.
# - attention: residual, normed input, Q, K and V (2E + 2q + 2kv) — plus, when the FFN's tensors
#   are narrower than n_embd, the holes they leave are too small to reuse (+ E - F); without flash
#   attention one more query-wide tensor (+ q) beside the n_head x n_kv x T scores.
# - SSM (Mamba-style layers): residual, normed input, in_proj's x and z (2 x d_inner), the conv
#   output, dt, the scan output and the gated product (4 x d_inner), x_db (dt_rank + 2 x d_state).
#   Checked on two synthetic Jamba models only (+4 %, +7 %): other recurrent kinds reuse it roughly.
_FFN_NFF, _FFN_EMBD, _FFN_Q = 3, 2, 1  # MoE
_ATT_EMBD, _ATT_Q, _ATT_KV = 2, 2, 2
_SSM_EMBD, _SSM_INNER = 2, 6


def _compute_bytes(
    model: ModelInfo,
    *,
    n_tokens: int,
    n_outputs: int,
    kv_sizes: Sequence[int],
    flash_attn: bool,
    rot_dims: Iterable[int],
    has_attention: bool,
    has_recurrent: bool,
) -> int:
    """Worst-case graph buffer (sched_reserve): the larger of a layer's live set plus the inputs
    it reads, and the output head's (logits) live set, once the masks have been released."""
    dims = _head_dims(model)
    n_kv = model.n_head_kv or [0]
    q = max(model.n_head * dims(il)[0] for il in range(model.n_layer))  # widest layer's query
    kv_w = max(n_kv[min(il, len(n_kv) - 1)] * dims(il)[0] for il in range(model.n_layer))
    n_ff, _ = _n_ff(model)
    e = model.n_embd
    if model.n_expert and model.n_expert_used:
        ffn = _FFN_NFF * n_ff + _FFN_EMBD * e + _FFN_Q * q
    else:
        ffn = max(4 * n_ff, 3 * n_ff + 2 * e)
    # without flash attention the scores' path (KQ, softmax, KQV, its permuted copy) keeps one more
    # query-wide tensor live beside the KQ matrix added below
    q_live = _ATT_Q * q if flash_attn else (_ATT_Q + 1) * q
    att = _ATT_EMBD * e + q_live + _ATT_KV * kv_w + max(0, e - n_ff) if has_attention else 0
    layer = [ffn * n_tokens * 4, att * n_tokens * 4]
    if has_attention and not flash_attn:  # KQ = n_kv x n_tokens x n_head, f32 (build_attn_mha)
        layer[1] += model.n_head * max(kv_sizes, default=0) * n_tokens * 4
    if has_recurrent:
        d_inner = _meta_int(model, "ssm.inner_size") or 2 * model.n_embd
        x_db = (_meta_int(model, "ssm.time_step_rank") or 0) + 2 * (_meta_int(model, "ssm.state_size") or 0)
        layer.append((_SSM_EMBD * model.n_embd + _SSM_INNER * d_inner + x_db) * n_tokens * 4)
    # graph inputs the layers read: one KQ mask per KV cache (build_attn_inp_kq_mask); ggml-alloc
    # frees them after the last layer, so the logits reuse their space
    masks = sum(kv_sizes) * n_tokens * (2 if flash_attn else 4) if has_attention else 0
    # quantized K/V with head dims divisible by 64 rotate Q/K/V by a Hadamard matrix (f32 input)
    rot = sum(d * d * 4 for d in rot_dims)
    # output head: logits for the reserved outputs, the final norm's input and output
    head = (n_outputs * model.n_vocab + 2 * n_tokens * model.n_embd) * 4
    tokens = n_tokens * 8  # token ids + positions
    return tokens + max(masks + rot + max(layer), head)


# Bytes per element of the vec_dot type ggml-cpu converts a matmul's activations to, by the
# weight's type (type_traits_cpu[].vec_dot_type): K-quants → Q8_K (292 B / 256), other quants →
# Q8_0 (34 B / 32), f16/bf16 → themselves, f32 → no copy.
def _vec_dot_bytes(weight_type: str) -> float:
    t = weight_type.upper()
    if t in ("F32", "I32", "I8", "I16", "I64", "F64"):
        return 0.0
    if t in ("F16", "BF16"):
        return 2.0
    return 292 / 256 if t.endswith("_K") else 34 / 32


def _work_bytes(
    model: ModelInfo, *, n_tokens: int, kv_max: int, flash_attn: bool, type_v: str, has_attention: bool
) -> int:
    """ggml-cpu's work buffer (ggml_graph_plan): the largest per-node scratch of the graph.

    MUL_MAT converts src1 to the weight's vec_dot type: for the weights that is one activation
    (widest: n_ff, n_embd or the query width) per token; without flash attention, kqv = V x
    softmax(KQ) converts the whole n_kv x n_tokens x n_head score matrix to V's type.
    Flash attention's per-thread tiles are a few hundred KiB and are left out.
    """
    dims = _head_dims(model)
    q = max(model.n_head * dims(il)[0] for il in range(model.n_layer))
    width = max(_n_ff(model)[0], model.n_embd, q)
    per_elem = max((_vec_dot_bytes(t) for t in model.tensor_bytes), default=0.0)
    weights = int(width * n_tokens * per_elem)
    scores = 0
    if has_attention and not flash_attn:
        scores = int(model.n_head * kv_max * n_tokens * _vec_dot_bytes(type_v))
    return max(weights, scores)


# ---------------------------------------------------------------------------- the planner


def _resolve_ctx(model: ModelInfo, ctx: int) -> tuple[int, list[str]]:
    if ctx < 0:
        raise ConfigError(f"ctx {ctx}: must be ≥ 0 (0 means the model's trained context, {model.ctx_train})")
    if ctx == 0:
        # llama.cpp reads -c 0 as "the trained context"; the planner does the same, and says so
        return model.ctx_train, [f"ctx 0 resolved to ctx_train = {model.ctx_train}, as llama.cpp does"]
    if ctx > model.ctx_train:
        raise ConfigError(
            f"ctx {ctx}: above the model's trained context ({model.ctx_train}); "
            "llama.cpp only warns, but quality is not defined there — pass ctx ≤ ctx_train"
        )
    return ctx, []


def _n_layer_kv_from_start(model: ModelInfo) -> int | None:
    """hparams.n_layer_kv_from_start: layers from there on have no KV cache of their own and read an
    earlier layer's (the `reuse` callback in llama_model::create_memory). gemma4 reads
    attention.shared_kv_layers (src/models/gemma4.cpp); gemma3n hard-codes 20 (src/models/gemma3n.cpp)."""
    if model.arch in ("gemma4", "gemma4-assistant"):
        shared = _meta_int(model, "attention.shared_kv_layers") or 0
        return model.n_layer - shared if shared else None
    if model.arch == "gemma3n":
        return 20
    return None


def _head_dims(model: ModelInfo) -> Callable[[int], tuple[int, int]]:
    """(n_embd_head_k(il), n_embd_head_v(il)): llama_hparams picks the *_swa head sizes on sliding
    layers; the generic loader (llama_model::load_hparams) reads attention.key_length_swa /
    value_length_swa for every architecture, defaulting to the full-attention sizes."""
    k_swa = _meta_int(model, "attention.key_length_swa") or model.head_dim_k
    v_swa = _meta_int(model, "attention.value_length_swa") or model.head_dim_v
    swa = model.swa_layers if model.swa_window else []

    def dims(il: int) -> tuple[int, int]:
        if il < len(swa) and swa[il]:
            return k_swa, v_swa
        return model.head_dim_k, model.head_dim_v

    return dims


def plan_memory(
    model: ModelInfo,
    cfg: RuntimeConfig,
    *,
    n_parallel: int | None = None,
    kv_layers: dict[int, tuple[str, str]] | None = None,
    host_arch: str = "x86_64",
    cpu_flags: Iterable[str] | None = None,
    n_outputs: int | None = None,
    tokens_in_cache: int | None = None,
    checkpoints: int | None = None,
    weights_layout: _Tensors | None = None,
) -> MemoryPlan:
    """Predict llama-server's buffers for `model` run with `cfg` on a host of class `host_arch`.

    cpu_flags: the features the llama.cpp build targets (the host's /proc/cpuinfo flags for a
    native build, a preset's target features for a cross build); they decide what is repacked.
    None = the host class default (HOST_ARCHES). checkpoints: context checkpoints held in RAM;
    None = the ones one long prompt creates (llama-server: 2, at 4 + n_ubatch and 4 tokens before
    its end), 0 with --ctx-checkpoints 0.

    n_parallel: server slots (-np); None takes cfg.parallel. kv_layers: per-layer (type_k, type_v)
    overrides (parse_kv_layers); mainline llama.cpp applies one type to every layer, forks such as
    ik_llama do not. n_outputs: logits rows the graph is reserved for; None = llama-server's rule
    (one per slot); llama-cli, llama-bench and llama-fit-params reserve n_ubatch.
    tokens_in_cache: size the compute buffer for a cache holding that many tokens (what a run has
    touched so far) instead of the full context; the KV buffers are cleared, hence resident, anyway.
    weights_layout: (name, type, shape, bytes, data offset) of a file not written yet (a
    quantization recipe's preview) instead of the model's own; model.tensor_bytes must match it.
    """
    notes: list[str] = []
    host_key = host_arch.lower()
    if host_key not in HOST_ARCHES:
        raise ConfigError(f"host_arch {host_arch!r}: unknown; one of {', '.join(HOST_ARCHES)}")
    ctx, ctx_notes = _resolve_ctx(model, cfg.ctx)
    notes += ctx_notes
    n_seq = cfg.parallel if n_parallel is None else n_parallel
    if not 1 <= n_seq <= _MAX_SEQ:
        raise ConfigError(f"n_parallel {n_seq}: must be 1..{_MAX_SEQ}")
    type_k = _check_kv_type(cfg.cache_type_k, "cache_type_k")
    type_v = _check_kv_type(cfg.cache_type_v, "cache_type_v")
    per_layer = dict(kv_layers or {})
    for il, (k, v) in per_layer.items():
        if not 0 <= il < model.n_layer:
            raise ConfigError(
                f"kv_layers: layer {il} does not exist (the model has layers 0-{model.n_layer - 1})"
            )
        per_layer[il] = (_check_kv_type(k, "kv_layers"), _check_kv_type(v, "kv_layers"))
    if per_layer:
        notes.append("per-layer KV types: mainline llama.cpp applies one type to all layers (forks only)")

    # llama_context ctor: padding, streams, batch sizes
    unified = bool(cfg.kv_unified)
    n_ctx = _pad(ctx)
    if unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = _pad(n_ctx // n_seq)
        n_ctx = n_ctx_seq * n_seq
    n_stream = 1 if unified else n_seq
    n_batch = min(n_ctx, cfg.batch)
    n_ubatch = min(n_batch, cfg.ubatch)

    # flash attention: auto resolves to on for the CPU backend; quantized V needs it
    flash = cfg.flash_attn != "off"
    v_types = {v for _, v in per_layer.values()} | {type_v}
    if not flash and any(_is_quantized(t) for t in v_types):
        raise ConfigError(
            f"cache_type_v {sorted(t for t in v_types if _is_quantized(t))[0]}: a quantized V cache needs "
            "flash attention (llama.cpp refuses it with -fa off)"
        )

    # which layers hold what (create_memory: hybrids keep KV only on non-recurrent layers)
    recurrent = set(model.recurrent_layers)
    nextn = _meta_int(model, "nextn_predict_layers") or 0
    trunk = model.n_layer - nextn  # MTP/NextN layers belong to the draft context, not the trunk's
    n_kv_from_start = _n_layer_kv_from_start(model)
    kv_layer_ids = [
        il
        for il in range(trunk)
        if (il not in recurrent or model.arch == "falcon-h1")  # falcon-h1: attention and SSM side by side
        and (n_kv_from_start is None or il < n_kv_from_start)  # hparams.has_kv(): later layers reuse
    ]
    swa_flags = model.swa_layers if model.swa_window else []
    any_swa = any(swa_flags[il] for il in kv_layer_ids if il < len(swa_flags))
    swa_full = cfg.swa_full
    swa_cells: int | None = None
    if any_swa and model.swa_window:
        window_cells = model.swa_window * (n_seq if unified else 1) + n_ubatch
        swa_cells = n_ctx_seq if swa_full else _pad(min(n_ctx_seq, window_cells))

    def heads(il: int) -> int:
        return model.n_head_kv[il] if il < len(model.n_head_kv) else (model.n_head_kv or [0])[-1]

    dims = _head_dims(model)
    v_width_max = max((heads(il) * dims(il)[1] for il in range(model.n_layer)), default=0)
    layers: list[LayerKV] = []
    for il in kv_layer_ids:
        is_swa = bool(swa_cells) and il < len(swa_flags) and swa_flags[il]
        cells = swa_cells if is_swa and swa_cells else n_ctx_seq
        tk, tv = per_layer.get(il, (type_k, type_v))
        k_w = heads(il) * dims(il)[0]
        v_w = heads(il) * dims(il)[1] if flash else v_width_max  # v_trans pads to the max (all layers)
        layers.append(
            LayerKV(
                layer=il,
                swa=is_swa,
                cells=cells,
                n_head_kv=heads(il),
                type_k=tk,
                type_v=tv,
                k_bytes=_row_bytes(tk, k_w) * cells * n_stream if k_w else 0,
                v_bytes=_row_bytes(tv, v_w) * cells * n_stream if v_w else 0,
            )
        )
    kv_bytes = sum(lk.k_bytes + lk.v_bytes for lk in layers)
    kv_swa_bytes = sum(lk.k_bytes + lk.v_bytes for lk in layers if lk.swa)

    # recurrent state: one row per sequence per recurrent layer, F32, independent of n_ctx
    rs_bytes = 0
    if recurrent:
        row = _recurrent_row_floats(model)
        if row is None:
            notes.append("recurrent layers without ssm/wkv/shortconv sizes in the GGUF: state not counted")
        else:
            rs_bytes = row * 4 * max(1, n_seq) * len(recurrent)

    # weights
    no_repack = not cfg.repack
    features = frozenset() if no_repack else cpu_features(host_key, cpu_flags)
    model_w, repack_w, exact = _weights(model, features, cfg.mmap, weights_layout)
    if not exact:
        notes.append("repack size from tensor types only (file not readable): an upper bound")

    # output + compute
    if n_outputs is not None and n_outputs < 1:
        raise ConfigError(f"n_outputs {n_outputs}: must be ≥ 1")
    n_out_max = min(n_batch, n_seq if n_outputs is None else n_outputs)
    output_bytes = model.n_vocab * max(n_out_max, n_seq) * 4
    n_tokens = min(n_ctx, n_ubatch)
    kv_sizes = ([n_ctx_seq] if any(not lk.swa for lk in layers) else []) + (
        [swa_cells] if swa_cells and any(lk.swa for lk in layers) else []
    )
    rot_dims = [
        d
        for t, d in ((type_k, model.head_dim_k), (type_v, model.head_dim_v))
        if _is_quantized(t) and d % 64 == 0 and layers
    ]

    def graph(tokens: int, kv: list[int]) -> tuple[int, int]:
        """(compute, work) bytes of one ubatch of `tokens` over caches of `kv` cells."""
        c = _compute_bytes(
            model,
            n_tokens=tokens,
            n_outputs=min(tokens, n_out_max),
            kv_sizes=kv,
            flash_attn=flash,
            rot_dims=rot_dims,
            has_attention=bool(layers),
            has_recurrent=bool(recurrent),
        )
        w = _work_bytes(
            model,
            n_tokens=tokens,
            kv_max=max(kv, default=0),
            flash_attn=flash,
            type_v=type_v,
            has_attention=bool(layers),
        )
        return c, w

    if tokens_in_cache is None:
        compute, work = graph(n_tokens, kv_sizes)
    else:
        # a prompt of P tokens runs in ubatches; the graph that touched most of the reserved buffer
        # is the last full ubatch or the final partial one, each over the cells used so far
        # (get_n_kv pads them to 256)
        used = max(1, min(tokens_in_cache, n_ctx_seq))
        ends = [(used // n_tokens * n_tokens, n_tokens), (used, used % n_tokens or n_tokens)]
        peaks = [
            graph(t, [min(size, max(_PAD, _pad(end))) for size in kv_sizes]) for end, t in ends if end > 0
        ]
        compute, work = max(c for c, _ in peaks), max(w for _, w in peaks)
    if not _n_ff(model)[1]:
        notes.append("feed_forward_length missing: compute buffer assumes n_ff = 4 x n_embd")
    unverified: list[str] = []
    if model.arch not in VERIFIED_ARCHS:
        unverified = ["KV", "compute"] + (["recurrent"] if recurrent else [])
        notes.append(
            f"architecture {model.arch!r} is not one the planner has been checked on: its "
            f"{', '.join(unverified)} follow generic rules (llama.cpp's projection, llama-fit-params, "
            "is the reference)"
        )
    if recurrent:
        notes.append("compute buffer: the SSM term is checked on synthetic Jamba models only")

    # cells: every stream of every cache; used: what a single prompt of tokens_in_cache fills
    cells = sum(size * n_stream for size in kv_sizes)
    filled = n_ctx_seq if tokens_in_cache is None else min(tokens_in_cache, n_ctx_seq)
    used = sum(min(size, filled) for size in kv_sizes)
    overhead = (
        _OVERHEAD_BASE
        + _OVERHEAD_PER_VOCAB * model.n_vocab
        + _OVERHEAD_PER_CELL * cells
        + _OVERHEAD_PER_USED_CELL * used
    )
    # context checkpoints (tools/server/server-context.cpp, create_checkpoint): one slot's state that
    # cannot be rolled back, copied to the heap — llama_kv_cache_iswa::state_write with PARTIAL_ONLY
    # writes the SWA cache only, and llama_kv_cache::state_write only its cells that the window does
    # not mask (n_swa of them once the prompt is longer), each with its pos and sequence id; a
    # recurrent memory writes the slot's state rows.
    ckpt_cells = min(model.swa_window or 0, filled)
    swa_row = sum(
        _row_bytes(lk.type_k, heads(lk.layer) * dims(lk.layer)[0])
        + _row_bytes(lk.type_v, heads(lk.layer) * dims(lk.layer)[1])
        for lk in layers
        if lk.swa
    )
    ckpt_bytes = (ckpt_cells * (swa_row + 12) if kv_swa_bytes else 0) + rs_bytes // n_seq
    n_ckpt_max = 32 if cfg.ctx_checkpoints is None else cfg.ctx_checkpoints  # common_params default
    makes_ckpt = bool(ckpt_bytes) and n_ckpt_max > 0
    n_ckpt = (min(2, n_ckpt_max) if makes_ckpt else 0) if checkpoints is None else checkpoints
    if makes_ckpt and n_ckpt_max > n_ckpt:
        notes.append(
            f"context checkpoints: {ckpt_bytes / MiB:.2f} MiB each; a long prompt makes {n_ckpt} "
            f"(counted), a conversation keeps up to {n_ckpt_max} per slot "
            f"({n_ckpt_max * ckpt_bytes / MiB:.1f} MiB; --ctx-checkpoints N caps it)"
        )
    return MemoryPlan(
        model=model.name,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq=n_seq,
        n_stream=n_stream,
        kv_unified=unified,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        flash_attn=flash,
        swa_cells=swa_cells,
        model_mib=model_w / MiB,
        repack_mib=repack_w / MiB,
        kv_mib=kv_bytes / MiB,
        kv_swa_mib=kv_swa_bytes / MiB,
        recurrent_mib=rs_bytes / MiB,
        compute_mib=compute / MiB,
        output_mib=output_bytes / MiB,
        work_mib=work / MiB,
        overhead_mib=overhead / MiB,
        checkpoint_mib=ckpt_bytes / MiB,
        n_checkpoints=n_ckpt,
        unverified=unverified,
        layers=layers,
        notes=notes,
    )


def fit_context(
    model: ModelInfo,
    cfg: RuntimeConfig,
    budget_mib: float,
    kv_types: Sequence[str] = DEFAULT_KV_TYPES,
    *,
    n_parallel: int | None = None,
    host_arch: str = "x86_64",
    cpu_flags: Iterable[str] | None = None,
) -> dict[str, int]:
    """The largest -c (a multiple of 256, ≤ ctx_train) whose predicted host total fits budget_mib.

    One entry per KV type (used for K and V alike); 0 when not even 256 tokens fit.
    """
    if not budget_mib > 0:
        raise ConfigError(f"budget {budget_mib} MiB: must be > 0")
    if not kv_types:
        raise ConfigError("kv_types: give at least one KV cache type")
    top = model.ctx_train // _PAD * _PAD or model.ctx_train
    flags = None if cpu_flags is None else tuple(cpu_flags)
    out: dict[str, int] = {}
    for t in kv_types:
        kv = _check_kv_type(t, "kv_types")

        def fits(ctx: int, kv: str = kv) -> bool:
            c = cfg.model_copy(update={"ctx": ctx, "cache_type_k": kv, "cache_type_v": kv})
            plan = plan_memory(model, c, n_parallel=n_parallel, host_arch=host_arch, cpu_flags=flags)
            return plan.host_total_mib <= budget_mib

        lo, hi = 0, top // _PAD if top >= _PAD else 1  # binary search over multiples of 256
        step = _PAD if top >= _PAD else top
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid * step):
                lo = mid
            else:
                hi = mid - 1
        out[kv] = lo * step
    return out
