"""KV quantization schemes simulated in numpy on real K/V rows: quantize, then dequantize.

Every scheme maps a layer's rows (cells x row width, float32) to what it would give back, and
counts the bits it stores (scales and norms included) so compression is measured on the real
cache, not quoted from a formula.

- llama.cpp block formats (q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl): blocks of 32 along the row, as
  llama.cpp's set_rows writes them. q8_0…q4_1 use gguf-py's reference quantizers; iq4_nl (which
  gguf-py can only dequantize) is ported from ggml's quantize_row_iq4_nl_ref and packed so that
  gguf-py dequantizes it. `+rot`: llama.cpp's Walsh-Hadamard rotation of the row in chunks before
  quantizing (src/llama-kv-cache.cpp: K chunks are the largest power of two ≥ 64 dividing the head
  size, V chunks 64), undone after.
- TurboQuant-style `tqB` (arXiv 2504.19874): per head vector, its norm (f16), a random rotation,
  then each coordinate through the Lloyd-Max codebook of a standard normal at B bits. `tqB+qjl`:
  B-1 bits so, plus a 1-bit QJL sketch of the residual with its norm (unbiased inner products).
- KIVI-style `kiviB`: asymmetric min/scale (f16 each) per group of 32 — K per channel across 32
  tokens, V per token across 32 channels; the trailing tokens that do not fill a K group stay f16,
  as KIVI keeps its residual window in full precision.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

import gguf
import numpy as np

from edgebench.errors import EdgebenchError

__all__ = [
    "BLOCK_TYPES",
    "Roundtrip",
    "Scheme",
    "SchemeError",
    "hadamard",
    "lloyd_max_normal",
    "parse_scheme",
    "quantize_iq4_nl",
    "roundtrip",
    "unrotate",
]

Role = Literal["k", "v"]
BLOCK_TYPES = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")  # llama.cpp's -ctk/-ctv set
GROUP = 32  # KIVI group size
_KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32
)


class SchemeError(EdgebenchError):
    """A scheme name or a layer shape the scheme cannot take."""


@dataclass(frozen=True)
class Scheme:
    name: str
    kind: Literal["block", "turboquant", "kivi"]
    bits: int = 16  # code bits per element (block formats: their nominal width)
    ggml_type: str = "f16"
    rot: bool = False  # block formats: llama.cpp's Hadamard rotation
    qjl: bool = False  # turboquant: 1 of the bits is a QJL residual sketch

    @property
    def simulated(self) -> bool:
        """Not something llama.cpp can run natively (TurboQuant, KIVI)."""
        return self.kind != "block"


_NAME = re.compile(
    r"^(?:(?P<block>f16|q8_0|q5_1|q5_0|q4_1|q4_0|iq4_nl)(?P<rot>\+rot)?|tq(?P<tq>[1-8])"
    r"(?P<qjl>\+qjl)?|kivi(?P<kivi>[1-8]))$"
)


def parse_scheme(name: str) -> Scheme:
    m = _NAME.match(name.strip().lower())
    if not m:
        raise SchemeError(
            f"KV scheme {name!r}: not one of {', '.join(BLOCK_TYPES)} (optionally +rot), tq2…tq4 "
            "(optionally +qjl), kivi2/kivi4"
        )
    if m["block"]:
        t = m["block"]
        bits = {"f16": 16, "iq4_nl": 4}.get(t) or int(t[1])
        if m["rot"] and t == "f16":
            raise SchemeError("KV scheme 'f16+rot': llama.cpp rotates only quantized caches")
        return Scheme(m.group(0), "block", bits, ggml_type=t, rot=bool(m["rot"]))
    if m["tq"]:
        bits = int(m["tq"])
        if m["qjl"] and bits < 2:
            raise SchemeError(f"KV scheme {name!r}: +qjl needs ≥ 2 bits (one is the sketch)")
        return Scheme(m.group(0), "turboquant", bits, qjl=bool(m["qjl"]))
    return Scheme(m.group(0), "kivi", int(m["kivi"]))


@dataclass(frozen=True)
class Roundtrip:
    values: np.ndarray  # float32, the rows as the scheme gives them back
    bits: int  # bits the scheme stores for these rows, scales included


# ------------------------------------------------------------------------------- shared pieces


@cache
def hadamard(n: int) -> np.ndarray:
    """Orthonormal Walsh-Hadamard matrix in Sylvester order (ggml_gen_hadamard's)."""
    if n < 1 or n & (n - 1):
        raise SchemeError(f"Hadamard size {n}: not a power of two")
    h = np.ones((1, 1), np.float32)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return (h / np.float32(math.sqrt(n))).astype(np.float32)


def _rot_size(head_dim: int, role: Role) -> int:
    """llama_kv_cache::build_input_{k,v}_rot: V always 64; K the largest power of two ≥ 64 dividing
    the head size. llama.cpp rotates only heads whose size is a multiple of 64."""
    if head_dim % 64:
        raise SchemeError(f"+rot: llama.cpp does not rotate heads of size {head_dim} (not a multiple of 64)")
    if role == "v":
        return 64
    n = 64
    while head_dim % (n * 2) == 0:
        n *= 2
    return n


def unrotate(x: np.ndarray, head_dim: int, role: Role) -> np.ndarray:
    """Rows as llama.cpp stored them rotated (`attn_rot_k/v`) back in the model's own basis."""
    return _rotate(x, _rot_size(head_dim, role))


def _rotate(x: np.ndarray, n: int) -> np.ndarray:
    rows, width = x.shape
    out: np.ndarray = (x.reshape(rows, width // n, n) @ hadamard(n)).reshape(rows, width)
    return out


@cache
def lloyd_max_normal(bits: int) -> np.ndarray:
    """The 2^bits reconstruction levels minimising E[(X - Q(X))^2] for X ~ N(0, 1) (Lloyd's
    iteration on the exact conditional means; symmetric, increasing)."""
    n = 1 << bits

    def phi(t: float) -> float:
        return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

    def cdf(t: float) -> float:
        return 0.5 * (1 + math.erf(t / math.sqrt(2)))

    levels = [(-1 + (2 * i + 1) / n) * 2.5 for i in range(n)]
    for _ in range(500):
        edges = [-math.inf, *[(a + b) / 2 for a, b in itertools.pairwise(levels)], math.inf]
        new = []
        for a, b in itertools.pairwise(edges):
            pa = 0.0 if a == -math.inf else phi(a)
            pb = 0.0 if b == math.inf else phi(b)
            mass = cdf(b) - cdf(a)
            new.append((pa - pb) / mass if mass > 0 else (a + b) / 2)
        if max(abs(x - y) for x, y in zip(new, levels, strict=True)) < 1e-12:
            break
        levels = new
    return np.asarray(new, np.float32)


def _nearest(values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    edges = (levels[1:] + levels[:-1]) / 2
    return np.searchsorted(edges, values).astype(np.uint8)


def _orthogonal(d: int, seed: int) -> np.ndarray:
    """A random rotation: random signs then Hadamard when d is a power of two (fast, as in
    TurboQuant implementations), else the Q of a Gaussian matrix."""
    rng = np.random.default_rng(seed)
    if d & (d - 1) == 0:
        signs = rng.choice(np.array([-1.0, 1.0], np.float32), d)
        return np.asarray(hadamard(d) * signs[:, None], np.float32)
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


# ------------------------------------------------------------------------------- block formats


def quantize_iq4_nl(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_iq4_nl_ref (what set_rows writes into an iq4_nl cache), vectorised:
    per block of 32, the scale from the largest magnitude, indices into the non-linear grid, then
    the weighted (x²) least-squares scale. Returns the packed blocks (18 bytes: f16 d, 16 nibbles)."""
    blocks = x.reshape(-1, 32).astype(np.float32)
    amax_i = np.abs(blocks).argmax(axis=1)
    vmax = blocks[np.arange(len(blocks)), amax_i]
    tiny = np.abs(vmax) < 1e-15  # GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(tiny, 0, np.float32(-127) / vmax).astype(np.float32)
    al = blocks * inv[:, None]
    edges = (_KVALUES_IQ4NL[1:] + _KVALUES_IQ4NL[:-1]) / 2
    # best_index_int8 takes the upper neighbour on a tie (x - lo < hi - x is false)
    idx = np.searchsorted(edges, al, side="right").astype(np.uint8)
    q = _KVALUES_IQ4NL[idx]
    w = blocks * blocks
    sumqx = (w * q * blocks).sum(axis=1, dtype=np.float32)
    sumq2 = (w * q * q).sum(axis=1, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where((sumq2 > 0) & ~tiny, sumqx / sumq2, 0).astype(np.float32)
    idx[tiny] = 0
    packed = (idx[:, :16] | (idx[:, 16:] << 4)).astype(np.uint8)
    return np.concatenate([d.astype(np.float16).view(np.uint8).reshape(-1, 2), packed], axis=1)


def _block(x: np.ndarray, s: Scheme, role: Role, head_dim: int) -> Roundtrip:
    rows, width = x.shape
    if s.ggml_type == "f16":
        return Roundtrip(x.astype(np.float16).astype(np.float32), 16 * x.size)
    if width % 32:
        raise SchemeError(f"{s.name}: row width {width} is not a multiple of the 32-element block")
    n = _rot_size(head_dim, role) if s.rot else 0
    if s.rot and width % head_dim:
        raise SchemeError(f"{s.name}: row width {width} is not a multiple of head size {head_dim}")
    src = _rotate(x, n) if s.rot else x
    qt = gguf.GGMLQuantizationType[s.ggml_type.upper()]
    if qt == gguf.GGMLQuantizationType.IQ4_NL:
        packed = quantize_iq4_nl(src).reshape(rows, -1)
    else:
        packed = gguf.quants.quantize(src.astype(np.float32), qt)
    out = np.asarray(gguf.quants.dequantize(packed, qt), np.float32).reshape(rows, width)
    if s.rot:
        out = _rotate(out, n)  # H is its own inverse
    return Roundtrip(out, 8 * packed.size)


# ------------------------------------------------------------------------------- TurboQuant


def _turboquant(x: np.ndarray, s: Scheme, head_dim: int, seed: int) -> Roundtrip:
    rows, width = x.shape
    if width % head_dim:
        raise SchemeError(f"{s.name}: row width {width} is not a multiple of head size {head_dim}")
    v = x.reshape(-1, head_dim).astype(np.float32)
    norm = np.linalg.norm(v, axis=1).astype(np.float16).astype(np.float32)  # stored as f16
    safe = np.where(norm > 0, norm, 1)
    rot = _orthogonal(head_dim, seed)
    mse_bits = s.bits - 1 if s.qjl else s.bits
    levels = lloyd_max_normal(mse_bits)
    z = (v / safe[:, None]) @ rot.T * np.float32(math.sqrt(head_dim))  # coordinates ≈ N(0, 1)
    zq = levels[_nearest(z, levels)]
    approx = (zq / np.float32(math.sqrt(head_dim))) @ rot * norm[:, None]
    n_vec = v.shape[0]
    bits = n_vec * (head_dim * mse_bits + 16)
    if s.qjl:
        # QJL: sign(S r) with S Gaussian d x d; E[<q, r_hat>] = <q, r> with
        # r_hat = sqrt(pi/2) / d * |r| * S^T sign(S r)
        resid = v - approx
        rnorm = np.linalg.norm(resid, axis=1).astype(np.float16).astype(np.float32)
        sk = np.random.default_rng(seed + 1).standard_normal((head_dim, head_dim)).astype(np.float32)
        signs = np.sign(resid @ sk.T)
        signs[signs == 0] = 1
        approx = approx + np.float32(math.sqrt(math.pi / 2) / head_dim) * rnorm[:, None] * (signs @ sk)
        bits += n_vec * (head_dim + 16)
    return Roundtrip(approx.reshape(rows, width).astype(np.float32), bits)


# ------------------------------------------------------------------------------- KIVI


def _minmax_quant(g: np.ndarray, bits: int, axis: int) -> np.ndarray:
    lo = g.min(axis=axis, keepdims=True).astype(np.float16).astype(np.float32)
    hi = g.max(axis=axis, keepdims=True)
    scale = ((hi - lo) / ((1 << bits) - 1)).astype(np.float16).astype(np.float32)
    safe = np.where(scale > 0, scale, 1)
    q = np.clip(np.round((g - lo) / safe), 0, (1 << bits) - 1)
    return np.asarray(q * scale + lo, np.float32)


def _kivi(x: np.ndarray, s: Scheme, role: Role) -> Roundtrip:
    rows, width = x.shape
    out = x.astype(np.float16).astype(np.float32)  # the residual (unquantized) part stays f16
    if role == "k":  # per channel: groups of GROUP tokens
        full = rows - rows % GROUP
        if full:
            g = x[:full].reshape(full // GROUP, GROUP, width)
            out[:full] = _minmax_quant(g, s.bits, axis=1).reshape(full, width)
        n_groups = (full // GROUP) * width
        bits = full * width * s.bits + 32 * n_groups + 16 * (rows - full) * width
    else:  # per token: groups of GROUP channels
        if width % GROUP:
            raise SchemeError(f"{s.name}: row width {width} is not a multiple of the group of {GROUP}")
        g = x.reshape(rows, width // GROUP, GROUP)
        out = _minmax_quant(g, s.bits, axis=2).reshape(rows, width)
        bits = rows * width * s.bits + 32 * rows * (width // GROUP)
    return Roundtrip(out, bits)


def roundtrip(x: np.ndarray, s: Scheme, role: Role, *, head_dim: int, seed: int = 0) -> Roundtrip:
    """`x` (cells x row width, float32) through scheme `s` as K or V of one layer."""
    if x.ndim != 2:
        raise SchemeError(f"{s.name}: expected cells x row width, got shape {x.shape}")
    if s.kind == "block":
        return _block(x, s, role, head_dim)
    if s.kind == "turboquant":
        return _turboquant(x, s, head_dim, seed)
    return _kivi(x, s, role)
