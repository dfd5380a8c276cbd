"""A zoo of tiny synthetic GGUF models, one per memory-planning hazard (issue 19).

Each model is written from llama.cpp's own loaders (src/models/<arch>.cpp: the tensors and keys
`load_arch_hparams` / `load_arch_tensors` require), with random weights, so the real llama-server
loads and runs it in a second or two. What each one exercises:

- `dense-ffeq`      llama, n_ff = n_embd = 1024: the FFN's live set is not 3 n_ff + a constant;
- `gemma4-kvshare`  gemma4: per-layer head sizes (key_length 128 on full layers, key_length_swa 64
                    on sliding ones) and `shared_kv_layers` (the last 2 layers reuse earlier caches);
- `gemma3-swa`      gemma3: another window (1024) and pattern (every 3rd layer global), a head dim
                    decoupled from n_embd (query 512 wide on a 256 model);
- `moe-q4tail`      llama MoE: Q4_0 experts written at the end of the file (repacked, so outside
                    llama.cpp's mmap range), f16 everything else;
- `tied-q4_0`       llama with no output.weight and a Q4_0 token embedding: the output matmul gets
                    its own repacked copy of the embedding;
- `kquant`          llama with Q4_K matmul weights (repacked with AVX2 or Arm dotprod), Q2_K
                    ffn_down (repacked only with AVX-512) and a Q6_K output (repacked on Arm only);
- `jamba-hybrid`    jamba: Mamba + attention layers, recurrent state and context checkpoints.

Quantized blocks the gguf-py version here cannot produce (K-quants) are written as random bytes
with small finite fp16 scales: valid data for llama.cpp, nonsense as a model — these files are
for memory, not for quality.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from edgebench.testing.synth import tiny_vocab, write_tiny_jamba

__all__ = ["ZOO", "ZooModel", "write_f16_source", "write_qwen2", "write_zoo_model"]

_CTX_TRAIN = 16384
# fp16 fields (byte offsets in one block) that must hold a finite scale, per raw-written type
# (block layouts from ggml/src/ggml-common.h)
_FP16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_K": (0, 2),  # d, dmin, scales[12], qs[128]
    "Q5_K": (0, 2),  # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": (208,),  # ql[128], qh[64], scales[16], d
    "Q2_K": (80, 82),  # scales[16], qs[64], d, dmin
    "IQ4_NL": (0,),  # d, qs[16]
}
_UNUSED = 5  # gguf.TokenType.UNUSED


@dataclass(frozen=True)
class ZooModel:
    name: str
    arch: str
    covers: str
    write: Callable[[Path], Path]


class _Writer:
    """gguf.GGUFWriter plus typed random tensors; shapes are given in ggml order (ne0 first)."""

    def __init__(self, path: Path, arch: str, seed: int) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".part")
        self.w: Any = gguf.GGUFWriter(self.tmp, arch)
        self.rng = np.random.default_rng(seed)
        self.deferred: list[tuple[str, tuple[int, ...], str]] = []

    def vocab(self, pad_to: int | None = None) -> int:
        tokens, scores, types = tiny_vocab()
        if pad_to is not None and pad_to > len(tokens):
            n = pad_to - len(tokens)
            tokens = [*tokens, *(f"<unused{i}>" for i in range(n))]
            scores = [*scores, *([0.0] * n)]
            types = [*types, *([_UNUSED] * n)]
        w = self.w
        w.add_vocab_size(len(tokens))
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        return len(tokens)

    def tensor(self, name: str, ne: Sequence[int], ggml_type: str = "F32") -> None:
        ne = tuple(ne)
        t = ggml_type.upper()
        shape = ne[::-1]  # numpy order
        if t in ("F32", "F16"):
            if len(ne) == 1:
                data: Any = np.ones(shape, dtype=np.float32)  # norms: 1, as a trained model's are near
            else:
                data = (self.rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            self.w.add_tensor(name, data.astype(np.float16) if t == "F16" else data)
            return
        qtype = gguf.GGMLQuantizationType[t]
        if t in ("Q4_0", "Q8_0"):
            f = (self.rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            self.w.add_tensor(name, gguf.quants.quantize(f, qtype), raw_dtype=qtype)
            return
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        n_blocks = ne[0] // block
        raw = self.rng.integers(0, 256, size=(*shape[:-1], n_blocks, size), dtype=np.uint8)
        scale = np.frombuffer(np.float16(1e-3).tobytes(), dtype=np.uint8)
        for off in _FP16_FIELDS[t]:
            raw[..., off : off + 2] = scale
        self.w.add_tensor(name, raw.reshape(*shape[:-1], n_blocks * size), raw_dtype=qtype)

    def defer(self, name: str, ne: Sequence[int], ggml_type: str) -> None:
        """Written after every other tensor (the end of the data section)."""
        self.deferred.append((name, tuple(ne), ggml_type))

    def finish(self) -> Path:
        for name, ne, t in self.deferred:
            self.tensor(name, ne, t)
        try:
            self.w.write_header_to_file()
            self.w.write_kv_data_to_file()
            self.w.write_tensors_to_file()
            self.w.close()
            os.replace(self.tmp, self.path)
        finally:
            self.w.close()
            self.tmp.unlink(missing_ok=True)
        return self.path


def _common(w: Any, name: str, *, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int) -> None:
    w.add_name(name)
    w.add_context_length(_CTX_TRAIN)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)


def _llama(
    path: Path,
    name: str,
    *,
    n_layer: int = 2,
    n_embd: int = 256,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 256,
    types: dict[str, str] | None = None,
    tied: bool = False,
    vocab_pad: int | None = None,
    n_expert: int = 0,
    n_expert_used: int = 0,
    experts_last: bool = False,
    seed: int = 1,
    arch: str = "llama",
    head_dim: int | None = None,
    qk_norm: bool = False,
) -> Path:
    """A llama-arch model (src/models/llama.cpp); `types` maps a tensor role to its ggml type.
    `arch` may name another architecture with the same tensors (qwen2: its biases are optional;
    smollm3, mistral3, granite). `head_dim` decouples the head size from n_embd / n_head (the query
    is then n_head x head_dim wide); `qk_norm` adds qwen3's per-head Q and K norms."""
    ty = {"embd": "F16", "attn": "F16", "ffn": "F16", "ffn_down": "", "exps": "F16", "output": "F16"}
    ty.update(types or {})
    ty["ffn_down"] = ty["ffn_down"] or ty["ffn"]
    wr = _Writer(path, arch, seed)
    w = wr.w
    _common(w, name, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff)
    hd = head_dim or n_embd // n_head
    w.add_rope_dimension_count(hd)
    if head_dim:
        w.add_key_length(hd)
        w.add_value_length(hd)
    if arch == "granite":  # granite.cpp requires the logit scale; the others default to 1
        w.add_logit_scale(1.0)
    if n_expert:
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_expert_used)
    n_vocab = wr.vocab(vocab_pad)
    wr.tensor("token_embd.weight", (n_embd, n_vocab), ty["embd"])
    for i in range(n_layer):
        p = f"blk.{i}."
        wr.tensor(p + "attn_norm.weight", (n_embd,))
        wr.tensor(p + "attn_q.weight", (n_embd, n_head * hd), ty["attn"])
        wr.tensor(p + "attn_k.weight", (n_embd, n_head_kv * hd), ty["attn"])
        wr.tensor(p + "attn_v.weight", (n_embd, n_head_kv * hd), ty["attn"])
        wr.tensor(p + "attn_output.weight", (n_head * hd, n_embd), ty["attn"])
        if qk_norm:
            wr.tensor(p + "attn_q_norm.weight", (hd,))
            wr.tensor(p + "attn_k_norm.weight", (hd,))
        wr.tensor(p + "ffn_norm.weight", (n_embd,))
        if n_expert:
            wr.tensor(p + "ffn_gate_inp.weight", (n_embd, n_expert), "F32")
            put = wr.defer if experts_last else wr.tensor
            put(p + "ffn_gate_exps.weight", (n_embd, n_ff, n_expert), ty["exps"])
            put(p + "ffn_down_exps.weight", (n_ff, n_embd, n_expert), ty["exps"])
            put(p + "ffn_up_exps.weight", (n_embd, n_ff, n_expert), ty["exps"])
        else:
            wr.tensor(p + "ffn_gate.weight", (n_embd, n_ff), ty["ffn"])
            wr.tensor(p + "ffn_up.weight", (n_embd, n_ff), ty["ffn"])
            wr.tensor(p + "ffn_down.weight", (n_ff, n_embd), ty["ffn_down"])
    wr.tensor("output_norm.weight", (n_embd,))
    if not tied:
        wr.tensor("output.weight", (n_embd, n_vocab), ty["output"])
    return wr.finish()


def _gemma3(path: Path) -> Path:
    """gemma3 (src/models/gemma3.cpp): window 1024, one global layer in 3, head dim 128 on n_embd 256."""
    n_layer, n_embd, n_head, n_head_kv, hd, n_ff = 6, 256, 4, 2, 128, 512
    wr = _Writer(path, "gemma3", 2)
    w = wr.w
    _common(
        w, "zoo-gemma3-swa", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff
    )
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_sliding_window(1024)
    w.add_sliding_window_pattern(3)
    w.add_rope_freq_base_swa(10000.0)
    n_vocab = wr.vocab()
    wr.tensor("token_embd.weight", (n_embd, n_vocab), "F16")
    for i in range(n_layer):
        p = f"blk.{i}."
        wr.tensor(p + "attn_norm.weight", (n_embd,))
        wr.tensor(p + "attn_q.weight", (n_embd, n_head * hd), "F16")
        wr.tensor(p + "attn_k.weight", (n_embd, n_head_kv * hd), "F16")
        wr.tensor(p + "attn_v.weight", (n_embd, n_head_kv * hd), "F16")
        wr.tensor(p + "attn_output.weight", (n_head * hd, n_embd), "F16")
        wr.tensor(p + "attn_q_norm.weight", (hd,))
        wr.tensor(p + "attn_k_norm.weight", (hd,))
        wr.tensor(p + "post_attention_norm.weight", (n_embd,))
        wr.tensor(p + "ffn_norm.weight", (n_embd,))
        wr.tensor(p + "ffn_gate.weight", (n_embd, n_ff), "F16")
        wr.tensor(p + "ffn_up.weight", (n_embd, n_ff), "F16")
        wr.tensor(p + "ffn_down.weight", (n_ff, n_embd), "F16")
        wr.tensor(p + "post_ffw_norm.weight", (n_embd,))
    wr.tensor("output_norm.weight", (n_embd,))
    return wr.finish()  # tied output (f16: never repacked)


def _gemma4(path: Path) -> Path:
    """gemma4 (src/models/gemma4.cpp): head 128 on full layers, 64 on sliding ones (window 256);
    the last 2 of 6 layers share the caches of layers 2 (SWA) and 3 (full)."""
    n_layer, n_embd, n_head, n_head_kv, n_ff = 6, 256, 4, 2, 512
    hd_full, hd_swa, shared = 128, 64, 2
    swa = [True, True, True, False, True, False]
    wr = _Writer(path, "gemma4", 3)
    w = wr.w
    _common(
        w, "zoo-gemma4-kvshare", n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff
    )
    w.add_key_length(hd_full)
    w.add_value_length(hd_full)
    w.add_key_length_swa(hd_swa)
    w.add_value_length_swa(hd_swa)
    w.add_rope_dimension_count(hd_full)
    w.add_rope_dimension_count_swa(hd_swa)
    w.add_sliding_window(256)
    w.add_sliding_window_pattern(swa)
    w.add_shared_kv_layers(shared)
    w.add_embedding_length_per_layer_input(0)
    w.add_rope_freq_base_swa(10000.0)
    n_vocab = wr.vocab()
    wr.tensor("token_embd.weight", (n_embd, n_vocab), "F16")
    wr.tensor("rope_freqs.weight", (hd_full // 2,))
    for i in range(n_layer):
        p, hd = f"blk.{i}.", (hd_swa if swa[i] else hd_full)
        has_kv = i < n_layer - shared
        wr.tensor(p + "attn_norm.weight", (n_embd,))
        wr.tensor(p + "attn_q.weight", (n_embd, n_head * hd), "F16")
        if has_kv:
            wr.tensor(p + "attn_k.weight", (n_embd, n_head_kv * hd), "F16")
            wr.tensor(p + "attn_v.weight", (n_embd, n_head_kv * hd), "F16")
            wr.tensor(p + "attn_k_norm.weight", (hd,))
        wr.tensor(p + "attn_output.weight", (n_head * hd, n_embd), "F16")
        wr.tensor(p + "attn_q_norm.weight", (hd,))
        wr.tensor(p + "post_attention_norm.weight", (n_embd,))
        wr.tensor(p + "ffn_norm.weight", (n_embd,))
        wr.tensor(p + "ffn_gate.weight", (n_embd, n_ff), "F16")
        wr.tensor(p + "ffn_up.weight", (n_embd, n_ff), "F16")
        wr.tensor(p + "ffn_down.weight", (n_ff, n_embd), "F16")
        wr.tensor(p + "post_ffw_norm.weight", (n_embd,))
    wr.tensor("output_norm.weight", (n_embd,))
    return wr.finish()


def _jamba(path: Path) -> Path:
    return write_tiny_jamba(path, ctx_train=_CTX_TRAIN)


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            "dense-ffeq",
            "llama",
            "dense, n_ff = n_embd (attention sets the compute buffer)",
            lambda p: _llama(p, "zoo-dense-ffeq", n_embd=1024, n_head=8, n_ff=1024),
        ),
        ZooModel("gemma4-kvshare", "gemma4", "per-layer head sizes, shared KV layers", _gemma4),
        ZooModel("gemma3-swa", "gemma3", "SWA window 1024, 1 global in 3, decoupled head dim", _gemma3),
        ZooModel(
            "moe-q4tail",
            "llama",
            "MoE, Q4_0 experts at the end of the file (repacked, outside the mmap range)",
            lambda p: _llama(
                p,
                "zoo-moe-q4tail",
                n_ff=256,
                n_expert=4,
                n_expert_used=2,
                types={"exps": "Q4_0"},
                experts_last=True,
            ),
        ),
        ZooModel(
            "tied-q4_0",
            "llama",
            "tied Q4_0 token embedding (the output matmul gets a repacked copy)",
            lambda p: _llama(p, "zoo-tied-q4_0", n_ff=512, tied=True, vocab_pad=512, types={"embd": "Q4_0"}),
        ),
        ZooModel(
            "kquant",
            "llama",
            "Q4_K matmuls (AVX2/dotprod repack), Q2_K ffn_down (AVX-512 only), Q6_K output (Arm only)",
            lambda p: _llama(
                p,
                "zoo-kquant",
                n_ff=512,
                vocab_pad=512,
                types={"embd": "Q4_K", "attn": "Q4_K", "ffn": "Q4_K", "ffn_down": "Q2_K", "output": "Q6_K"},
            ),
        ),
        ZooModel("jamba-hybrid", "jamba", "Mamba + attention hybrid: recurrent state, checkpoints", _jamba),
        ZooModel(
            "qwen3-qknorm",
            "qwen3",
            "per-head Q/K norms, head dim 128 on n_embd 256 (query twice n_embd)",
            lambda p: _llama(p, "zoo-qwen3", arch="qwen3", head_dim=128, qk_norm=True, n_ff=768),
        ),
        ZooModel(
            "smollm3-tied",
            "smollm3",
            "no RoPE every 4th layer, tied embedding, GQA 4:1",
            lambda p: _llama(p, "zoo-smollm3", arch="smollm3", n_layer=4, n_head_kv=1, n_ff=512, tied=True),
        ),
        ZooModel(
            "mistral3",
            "mistral3",
            "mistral3 text decoder (llama tensors, yarn keys optional), n_ff = 3 n_embd",
            lambda p: _llama(p, "zoo-mistral3", arch="mistral3", n_ff=768),
        ),
        ZooModel(
            "granite",
            "granite",
            "granite (logit/residual/embedding scales), Q8_0 matmuls",
            lambda p: _llama(
                p, "zoo-granite", arch="granite", n_ff=512, types={"attn": "Q8_0", "ffn": "Q8_0"}
            ),
        ),
    )
}


def write_zoo_model(name: str, directory: Path) -> Path:
    """Write zoo model `name` into `directory` (same name → same bytes) and return its path."""
    if name not in ZOO:
        raise ValueError(f"unknown zoo model {name!r}; one of {', '.join(ZOO)}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"zoo-{name}.gguf"
    if not path.exists():
        ZOO[name].write(path)
    return path


def write_qwen2(path: Path) -> Path:
    """A tiny qwen2 (llama's tensors, no biases): an architecture the planner has not been checked
    on, for the llama.cpp-projection fallback."""
    return _llama(Path(path), "tiny-qwen2", arch="qwen2")


def write_f16_source(path: Path, kind: str) -> Path:
    """An F16 model to quantize (issue 17), with shapes that trigger llama-quantize's fallbacks:
    ffn_down rows of 352 (not a multiple of 256: Q4_K → Q5_0, Q6_K → Q8_0) and attn_output rows
    of 144 (not a multiple of 32 either: any quantized type → F16). `kind`: "dense" or "moe"
    (4 experts, 2 used), or "narrow" (n_embd 160: embedding rows that no 256-block type fits)."""
    if kind not in ("dense", "moe", "narrow"):
        raise ValueError(f"kind must be dense, moe or narrow, not {kind!r}")
    n_expert = 4 if kind == "moe" else 0
    return _llama(
        Path(path),
        f"f16-{kind}",
        n_layer=3,
        n_embd=160 if kind == "narrow" else 256,
        n_head=4,
        head_dim=36,
        n_ff=352,
        vocab_pad=512,
        n_expert=n_expert,
        n_expert_used=n_expert // 2,
    )
