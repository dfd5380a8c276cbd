"""Decode roofline: how close a tg figure is to what the memory bus allows.

Decoding one token reads every weight the token touches once, plus the KV cache of every
layer up to the current position; on a CPU that traffic, not arithmetic, sets the speed. So

    efficiency = tg t/s × bytes read per token / measured bandwidth

Weights touched: all tensors, except that the token embedding is a one-row gather (unless it is
tied to the output matrix, as in Gemma) and routed experts are read n_used/n_expert at a time.
KV read per layer: n_head_kv × (head_dim_k × bytes(type_k) + head_dim_v × bytes(type_v)) × the
positions that layer attends to (capped at the window on sliding-window layers; recurrent
layers keep a fixed-size state that we leave out: it is small beside the weights).
"""

from __future__ import annotations

from edgebench.models.gguf import ModelInfo

__all__ = ["KV_BYTES_PER_ELEMENT", "decode_bytes_per_token", "decode_efficiency", "kv_bytes_per_token"]

# Bytes per element of each KV cache type (ggml block size / block bytes, ggml-common.h).
KV_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}


def weight_bytes_per_token(m: ModelInfo) -> float:
    total = float(sum(m.tensor_bytes.values()))
    if not m.output_tied and m.embd_bytes:
        total -= m.embd_bytes - m.embd_bytes / max(m.n_vocab, 1)  # one row gathered
    if m.n_expert and m.expert_bytes:
        total -= m.expert_bytes * (1 - m.n_expert_used / m.n_expert)
    return total


def kv_bytes_per_token(m: ModelInfo, type_k: str, type_v: str, position: float) -> float:
    """KV bytes read to produce the token at `position` (tokens already in the cache)."""
    bk, bv = KV_BYTES_PER_ELEMENT[type_k], KV_BYTES_PER_ELEMENT[type_v]
    recurrent = set(m.recurrent_layers)
    total = 0.0
    for layer in range(m.n_layer):
        if layer in recurrent:
            continue
        heads = m.n_head_kv[layer] if layer < len(m.n_head_kv) else m.n_head_kv[-1]
        span = position
        if m.swa_window and layer < len(m.swa_layers) and m.swa_layers[layer]:
            span = min(position, float(m.swa_window))
        total += heads * (m.head_dim_k * bk + m.head_dim_v * bv) * span
    return total


def decode_bytes_per_token(m: ModelInfo, type_k: str, type_v: str, depth: int, n_gen: int) -> float:
    """Mean bytes per generated token over a tg run of n_gen tokens starting at depth."""
    mid = depth + (n_gen - 1) / 2  # KV read grows linearly over the run: its mean is at the middle
    return weight_bytes_per_token(m) + kv_bytes_per_token(m, type_k, type_v, mid)


def decode_efficiency(tg_ts: float, bytes_per_token: float, bandwidth_gbs: float) -> float:
    return tg_ts * bytes_per_token / (bandwidth_gbs * 1e9)
