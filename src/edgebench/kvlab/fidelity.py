"""How much a scheme bends attention itself, on the captured keys (no model run needed).

Queries are not in the cache; each head's last keys stand in for them (post-RoPE keys live in the
space queries are compared in), so the figures are a proxy, labelled as such where shown: the
relative RMS error of the attention scores q·k/√d, and the total-variation distance between the
softmax weights over the cached keys before and after the scheme."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ScoreError", "attention_error"]

N_QUERIES = 32


@dataclass(frozen=True)
class ScoreError:
    score_rel_rmse: float
    attn_tv: float  # mean over heads and queries of ½·Σ|softmax(s) − softmax(ŝ)|


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def attention_error(k: np.ndarray, k_hat: np.ndarray, head_dim: int) -> ScoreError:
    """k, k_hat: cells x row width (float32), heads of `head_dim` side by side."""
    cells, width = k.shape
    heads = width // head_dim
    kh = k.reshape(cells, heads, head_dim).transpose(1, 0, 2)
    kh_hat = k_hat.reshape(cells, heads, head_dim).transpose(1, 0, 2)
    q = kh[:, -min(N_QUERIES, cells) :, :]
    s = q @ kh.transpose(0, 2, 1) / np.sqrt(head_dim)
    s_hat = q @ kh_hat.transpose(0, 2, 1) / np.sqrt(head_dim)
    rms = float(np.sqrt((s * s).mean())) or 1.0
    err = float(np.sqrt(((s_hat - s) ** 2).mean())) / rms
    tv = 0.5 * np.abs(_softmax(s) - _softmax(s_hat)).sum(axis=-1)
    return ScoreError(err, float(tv.mean()))
