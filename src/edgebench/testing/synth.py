"""Tiny, deterministic GGUF models for tests: llama, and a hybrid attention + Mamba (jamba).

The weights are random, but each file is complete enough for the real llama.cpp binaries to
load and run it: all tensors of its arch, the usual hparams, and a small SentencePiece-style
("llama") vocabulary with byte fallback, so any prompt text tokenizes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import gguf
import numpy as np

__all__ = ["FType", "tiny_vocab", "write_tiny_jamba", "write_tiny_llama"]

FType = Literal["f32", "f16", "q8_0"]

_FILE_TYPES: dict[str, int] = {
    "f32": int(gguf.LlamaFileType.ALL_F32),
    "f16": int(gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": int(gguf.LlamaFileType.MOSTLY_Q8_0),
}

# SentencePiece marks a leading space with U+2581; llama.cpp's SPM tokenizer does the same.
_SP = "\u2581"

# Multi-character pieces ("_" = U+2581), highest merge priority first. Every piece must be
# two earlier pieces (or characters) joined: llama.cpp's SPM tokenizer only merges adjacent
# symbols whose concatenation is itself in the vocabulary.
_PIECE_TEXT = """
_t _a _s _w _o _c _b _f _m _p _h _i _d _l _n _r _e _g _u _y
th he in er an re on at en nd ou ed es or is it ar al te st le ng as ll ld om me
_th _the _an _and _of _to _in _is _it _on _be _wh _ha _he _we _wi _no _tw _ti _fr _pr
ing ion _that _was _for _with _as _at _by _this _are _not _you _or
ly ve ent ter ver ers llo _re _un _co _de _pro _con _st _se _ma _me _so _do _go _wor
_hello _world _one _two _time _what _can _will _all _his _her _they _from _have _had
12 00 _1 _2
"""
_PIECES: tuple[str, ...] = tuple(p.replace("_", _SP) for p in _PIECE_TEXT.split())

# gguf.TokenType values, as plain ints so the module stays typed without stubs.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types: <unk> <s> </s>, 256 byte tokens, characters, pieces."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    chars = [_SP] + [chr(c) for c in range(0x21, 0x7F)]
    scores = [0.0] * len(tokens) + [-1000.0] * len(chars)
    tokens += chars
    types += [_NORMAL] * len(chars)
    known = set(chars)
    for rank, piece in enumerate(_PIECES):
        if piece in known or not any(piece[:i] in known and piece[i:] in known for i in range(1, len(piece))):
            raise AssertionError(f"tiny vocab piece {piece!r} is a duplicate or cannot be merged")
        known.add(piece)
        tokens.append(piece)
        scores.append(-float(rank))
        types.append(_NORMAL)
    return tokens, scores, types


def _weight(rng: np.random.Generator, rows: int, cols: int, ftype: FType) -> tuple[np.ndarray[Any, Any], Any]:
    """A (rows, cols) numpy matrix = ggml {cols, rows}; returns (data, raw_dtype for add_tensor)."""
    w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
    if ftype == "f16":
        return w.astype(np.float16), None
    if ftype == "q8_0":
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(w, qtype), qtype
    return w, None


def write_tiny_llama(
    path: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 128,  # head dim 32: quantized KV (q8_0/q4_0 blocks of 32) needs it
    n_head: int = 4,
    n_head_kv: int | Sequence[int] = 2,
    n_ff: int = 256,
    ctx_train: int = 2048,
    ftype: FType = "f32",
    seed: int = 0,
    chat_template: str | None = None,
) -> Path:
    """Write a random-weight llama GGUF to `path` (same arguments → same bytes) and return it.

    `n_head_kv` may be one value or a per-layer list (written as a GGUF array, as some converters
    do); the list must repeat one value, since llama.cpp's llama arch cannot vary it per layer.
    q8_0 needs n_embd and n_ff to be multiples of 32 (the Q8_0 block size).
    """
    if ftype not in _FILE_TYPES:
        raise ValueError(f"ftype must be one of {sorted(_FILE_TYPES)}, not {ftype!r}")
    kv_heads = [n_head_kv] * n_layer if isinstance(n_head_kv, int) else list(n_head_kv)
    if len(kv_heads) != n_layer:
        raise ValueError(f"n_head_kv has {len(kv_heads)} entries for {n_layer} layers")
    if len(set(kv_heads)) > 1:
        # llama.cpp's llama arch sizes every layer's K/V tensors from layer 0's count.
        raise ValueError("a per-layer n_head_kv must repeat one value for the llama arch to load")
    if n_embd % n_head or any(h <= 0 or n_head % h for h in kv_heads):
        raise ValueError("n_embd must divide by n_head, and n_head by every n_head_kv")
    if ftype == "q8_0" and (n_embd % 32 or n_ff % 32):
        raise ValueError("q8_0 needs n_embd and n_ff to be multiples of 32")

    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    w = gguf.GGUFWriter(tmp, "llama")
    try:
        _add_metadata(w, n_layer, n_embd, n_head, n_head_kv, n_ff, ctx_train, ftype, chat_template)
        _add_tensors(w, n_embd, n_head, kv_heads, n_ff, ftype, np.random.default_rng(seed))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, path)  # never leave a half-written model under the final name
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return path


def _add_metadata(
    w: Any,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int | Sequence[int],
    n_ff: int,
    ctx_train: int,
    ftype: FType,
    chat_template: str | None,
) -> None:
    w.add_name(f"tiny-llama-{n_layer}L-{n_embd}d-{ftype}")
    w.add_file_type(_FILE_TYPES[ftype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv if isinstance(n_head_kv, int) else list(n_head_kv))
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    _add_vocab(w)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)


def _add_vocab(w: Any) -> None:
    tokens, scores, types = tiny_vocab()
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def _add_tensors(
    w: Any, n_embd: int, n_head: int, kv_heads: list[int], n_ff: int, ftype: FType, rng: np.random.Generator
) -> None:
    n_vocab = len(tiny_vocab()[0])
    head_dim = n_embd // n_head

    def matrix(name: str, rows: int, cols: int) -> None:
        data, raw_dtype = _weight(rng, rows, cols, ftype)
        w.add_tensor(name, data, raw_dtype=raw_dtype)

    def norm(name: str) -> None:
        w.add_tensor(name, np.ones(n_embd, dtype=np.float32))  # norms stay f32, as llama-quantize does

    matrix("token_embd.weight", n_vocab, n_embd)
    for i, kvh in enumerate(kv_heads):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        matrix(f"blk.{i}.attn_k.weight", kvh * head_dim, n_embd)
        matrix(f"blk.{i}.attn_v.weight", kvh * head_dim, n_embd)
        matrix(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    norm("output_norm.weight")
    matrix("output.weight", n_vocab, n_embd)


def write_tiny_jamba(
    path: Path,
    *,
    n_embd: int = 256,
    n_ff: int = 512,
    n_head: int = 4,
    d_state: int = 64,
    ctx_train: int = 8192,
) -> Path:
    """A random-weight hybrid (llama.cpp's jamba arch): 4 layers, attention on 1 and 3
    (head_count_kv 2), Mamba on 0 and 2, dense FFN, f32 — recurrent state beside a KV cache."""
    rng = np.random.default_rng(0)
    d_inner, d_conv, dt_rank, n_layer = 2 * n_embd, 4, 16, 4  # llama.cpp: expansion factor 2 only
    kv_heads = [0, 2, 0, 2]
    head_dim = n_embd // n_head
    n_vocab = len(tiny_vocab()[0])
    w = gguf.GGUFWriter(path, "jamba")
    w.add_name("tiny-jamba")
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    w.add_context_length(ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_ssm_conv_kernel(d_conv)
    w.add_ssm_inner_size(d_inner)
    w.add_ssm_state_size(d_state)
    w.add_ssm_time_step_rank(dt_rank)
    _add_vocab(w)

    def rand(name: str, *ne: int) -> None:  # ggml order (ne0 first) → numpy reversed
        w.add_tensor(name, (rng.standard_normal(ne[::-1], dtype=np.float32) * 0.02).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    rand("token_embd.weight", n_embd, n_vocab)
    for i, kvh in enumerate(kv_heads):
        ones(f"blk.{i}.attn_norm.weight", n_embd)
        if kvh == 0:
            rand(f"blk.{i}.ssm_in.weight", n_embd, 2 * d_inner)
            rand(f"blk.{i}.ssm_conv1d.weight", d_conv, d_inner)
            rand(f"blk.{i}.ssm_conv1d.bias", d_inner)
            rand(f"blk.{i}.ssm_x.weight", d_inner, dt_rank + 2 * d_state)
            ones(f"blk.{i}.ssm_dt_norm.weight", dt_rank)
            rand(f"blk.{i}.ssm_dt.weight", dt_rank, d_inner)
            rand(f"blk.{i}.ssm_dt.bias", d_inner)
            ones(f"blk.{i}.ssm_b_norm.weight", d_state)
            ones(f"blk.{i}.ssm_c_norm.weight", d_state)
            w.add_tensor(f"blk.{i}.ssm_a", -np.ones((d_inner, d_state), dtype=np.float32))
            ones(f"blk.{i}.ssm_d", d_inner)
            rand(f"blk.{i}.ssm_out.weight", d_inner, n_embd)
        else:
            rand(f"blk.{i}.attn_q.weight", n_embd, n_embd)
            rand(f"blk.{i}.attn_k.weight", n_embd, kvh * head_dim)
            rand(f"blk.{i}.attn_v.weight", n_embd, kvh * head_dim)
            rand(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        ones(f"blk.{i}.ffn_norm.weight", n_embd)
        rand(f"blk.{i}.ffn_gate.weight", n_embd, n_ff)
        rand(f"blk.{i}.ffn_up.weight", n_embd, n_ff)
        rand(f"blk.{i}.ffn_down.weight", n_ff, n_embd)
    ones("output_norm.weight", n_embd)
    rand("output.weight", n_embd, n_vocab)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
