"""llama.cpp's sequence-state file (llama-server `/slots/N?action=save`) read into per-layer K and V
arrays, and written back byte for byte.

Layout (llama_context::state_seq_save_file, llama_kv_cache::state_write in src/llama-kv-cache.cpp):
  u32 magic 'ggsq', u32 version 3, u32 n_token, i32 tokens[n_token], then per KV cache (one; two
  for an iSWA model: the full-attention cache, then the sliding-window one):
  u32 n_stream; per stream: u32 cell_count; when > 0, per cell (i32 pos, u32 n_seq_id, i32
  seq_id[n_seq_id]), then u32 v_trans, u32 n_layer, per layer (i32 k_type, u64 k_row_bytes,
  cell_count rows), then V per layer: (i32 v_type, u64 v_row_bytes, cell_count rows) or, when V is
  transposed (flash attention off), (i32 v_type, u32 el_bytes, u32 n_embd_v, n_embd_v rows of
  cell_count elements).
Recurrent state (Mamba, hybrids) and M-RoPE cell extensions are not parsed: such a file is refused
in one line instead of being misread.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import gguf
import numpy as np

from edgebench.errors import EdgebenchError

__all__ = [
    "CacheState",
    "LayerKV",
    "SeqState",
    "StateFormatError",
    "describe",
    "parse_seq_state",
    "truncated",
    "write_seq_state",
]

MAGIC = 0x67677371  # 'ggsq' (LLAMA_FILE_MAGIC_GGSQ)
VERSION = 3  # LLAMA_STATE_SEQ_VERSION


class StateFormatError(EdgebenchError):
    """The bytes are not a sequence state this parser understands."""


@dataclass
class LayerKV:
    """One layer's cached rows: `k` is cells x row bytes as stored (decode with `k_values`)."""

    k_type: int
    k_row_bytes: int
    k: np.ndarray  # uint8, (cells, k_row_bytes), writable: the lab edits it before writing it back
    v_type: int
    v: np.ndarray  # uint8, (cells, v_row_bytes) — transposed files are stored back per cell here
    v_row_bytes: int
    v_el_bytes: int = 0  # set when the file held V transposed
    n_embd_v: int = 0

    def k_values(self) -> np.ndarray:
        return _decode(self.k, self.k_type)

    def v_values(self) -> np.ndarray:
        return _decode(self.v, self.v_type)


@dataclass
class CacheState:
    """One KV cache's cells of the saved sequence (one stream: a single slot's state)."""

    positions: np.ndarray  # int32 per cell
    seq_ids: list[list[int]]
    v_trans: bool
    layers: list[LayerKV] = field(default_factory=list)

    @property
    def cells(self) -> int:
        return len(self.positions)


@dataclass
class SeqState:
    tokens: list[int]  # the token block as written (llama-server packs it: see prompt_tokens)
    caches: list[CacheState]

    @property
    def prompt_tokens(self) -> list[int]:
        """The text tokens: llama-server (server_tokens::serialize) writes LLAMA_TOKEN_NULL, a
        version, then the token vector (count, tokens) and media keys; older files a plain list."""
        t = self.tokens
        if len(t) >= 3 and t[0] == -1:
            return t[3 : 3 + t[2]]
        return t


def _type_name(t: int) -> str:
    try:
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


def _decode(rows: np.ndarray, ggml_type: int) -> np.ndarray:
    """Rows of a ggml type as float32 (f32/f16/bf16 directly, quantized types with gguf-py)."""
    qt = gguf.GGMLQuantizationType(ggml_type)
    if qt == gguf.GGMLQuantizationType.F32:
        return rows.view(np.float32).astype(np.float32)
    if qt == gguf.GGMLQuantizationType.F16:
        return rows.view(np.float16).astype(np.float32)
    if qt == gguf.GGMLQuantizationType.BF16:
        return (rows.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(gguf.quants.dequantize(rows, qt), dtype=np.float32)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.off = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.off + n > len(self.data):
            raise StateFormatError(
                f"sequence state: truncated in {what} (offset {self.off}, {len(self.data)} bytes)"
            )
        b = self.data[self.off : self.off + n]
        self.off += n
        return b

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def i32(self, what: str) -> int:
        return int(struct.unpack("<i", self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(struct.unpack("<Q", self.take(8, what))[0])


def _cache(r: _Reader, index: int) -> CacheState:
    n_stream = r.u32("n_stream")
    if n_stream != 1:
        raise StateFormatError(
            f"sequence state: cache {index} has {n_stream} streams; a slot's state has one"
        )
    cells = r.u32("cell_count")
    positions, seq_ids = [], []
    for _ in range(cells):
        positions.append(r.i32("cell pos"))
        n_seq = r.u32("cell n_seq_id")
        if n_seq > 256:  # LLAMA_MAX_SEQ
            raise StateFormatError(
                f"sequence state: cell with {n_seq} sequence ids (recurrent state or M-RoPE cell extensions: "
                "not supported)"
            )
        seq_ids.append([r.i32("cell seq_id") for _ in range(n_seq)])
    state = CacheState(np.asarray(positions, dtype=np.int32), seq_ids, v_trans=False)
    if cells == 0:
        return state
    state.v_trans = bool(r.u32("v_trans"))
    n_layer = r.u32("n_layer")
    if n_layer > 4096:
        raise StateFormatError(f"sequence state: {n_layer} layers: not a KV cache (recurrent state?)")
    ks = []
    for il in range(n_layer):
        kt, row = r.i32(f"layer {il} k type"), r.u64(f"layer {il} k row size")
        ks.append(
            (
                kt,
                row,
                np.frombuffer(r.take(cells * row, f"layer {il} K"), np.uint8).reshape(cells, row).copy(),
            )
        )
    for il in range(n_layer):
        vt = r.i32(f"layer {il} v type")
        kt, krow, k = ks[il]
        if not state.v_trans:
            vrow = r.u64(f"layer {il} v row size")
            v = np.frombuffer(r.take(cells * vrow, f"layer {il} V"), np.uint8).reshape(cells, vrow).copy()
            state.layers.append(LayerKV(kt, krow, k, vt, v, vrow))
            continue
        el, n_embd_v = r.u32(f"layer {il} v element size"), r.u32(f"layer {il} n_embd_v")
        raw = np.frombuffer(r.take(cells * el * n_embd_v, f"layer {il} V"), np.uint8)
        # stored as n_embd_v rows of `cells` elements: back to one row per cell
        v = raw.reshape(n_embd_v, cells, el).transpose(1, 0, 2).reshape(cells, n_embd_v * el).copy()
        state.layers.append(LayerKV(kt, krow, k, vt, v, n_embd_v * el, v_el_bytes=el, n_embd_v=n_embd_v))
    return state


def parse_seq_state(data: bytes) -> SeqState:
    """Tokens and every KV cache of a saved slot; StateFormatError names what does not fit."""
    r = _Reader(data)
    magic, version = r.u32("magic"), r.u32("version")
    if magic != MAGIC:
        raise StateFormatError(f"sequence state: magic {magic:#x}, not 'ggsq' ({MAGIC:#x})")
    if version != VERSION:
        raise StateFormatError(f"sequence state: version {version}, this parser reads {VERSION}")
    n_token = r.u32("n_token")
    tokens = list(struct.unpack(f"<{n_token}i", r.take(4 * n_token, "tokens")))
    caches: list[CacheState] = []
    while r.off < len(data):
        if len(caches) == 2:
            raise StateFormatError(
                f"sequence state: {len(data) - r.off} bytes after two KV caches "
                "(recurrent state is not parsed)"
            )
        caches.append(_cache(r, len(caches)))
    if not caches:
        raise StateFormatError("sequence state: no KV cache in the file")
    return SeqState(tokens, caches)


def write_seq_state(state: SeqState) -> bytes:
    """The file llama-server reads back (`/slots/N?action=restore`): parse_seq_state's inverse."""
    out = [
        struct.pack("<III", MAGIC, VERSION, len(state.tokens)),
        struct.pack(f"<{len(state.tokens)}i", *state.tokens),
    ]
    for c in state.caches:
        out.append(struct.pack("<II", 1, c.cells))
        for pos, ids in zip(c.positions.tolist(), c.seq_ids, strict=True):
            out.append(struct.pack("<iI", pos, len(ids)) + struct.pack(f"<{len(ids)}i", *ids))
        if c.cells == 0:
            continue
        out.append(struct.pack("<II", int(c.v_trans), len(c.layers)))
        for lk in c.layers:
            out.append(struct.pack("<iQ", lk.k_type, lk.k_row_bytes) + lk.k.tobytes())
        for lk in c.layers:
            if not c.v_trans:
                out.append(struct.pack("<iQ", lk.v_type, lk.v_row_bytes) + lk.v.tobytes())
                continue
            el, n = lk.v_el_bytes, lk.n_embd_v
            rows = lk.v.reshape(c.cells, n, el).transpose(1, 0, 2).tobytes()
            out.append(struct.pack("<iII", lk.v_type, el, n) + rows)
    return b"".join(out)


def truncated(state: SeqState, cells: int) -> SeqState:
    """The state of the first `cells` tokens: what the slot held after reading only them."""
    t = state.tokens
    if len(t) >= 3 and t[0] == -1:  # llama-server's packed block: NULL, version, count, tokens, media
        count = t[2]
        rest = t[3 + count :]
        if rest != [0]:
            raise StateFormatError("sequence state: a slot with media chunks cannot be cut")
        tokens = [t[0], t[1], cells, *t[3 : 3 + cells], *rest]
    else:
        tokens = t[:cells]
    caches = []
    for c in state.caches:
        if c.cells < cells:
            raise StateFormatError(f"sequence state: {cells} cells asked, a cache holds {c.cells}")
        layers = [
            LayerKV(lk.k_type, lk.k_row_bytes, lk.k[:cells], lk.v_type, lk.v[:cells], lk.v_row_bytes,
                    lk.v_el_bytes, lk.n_embd_v)
            for lk in c.layers
        ]  # fmt: skip
        caches.append(CacheState(c.positions[:cells], c.seq_ids[:cells], c.v_trans, layers))
    return SeqState(tokens, caches)


def describe(state: SeqState) -> str:
    """One line per cache: cells, layers, K/V types and row widths."""
    lines = [f"{len(state.tokens)} tokens"]
    for i, c in enumerate(state.caches):
        lk = c.layers[0] if c.layers else None
        kinds = f"K {_type_name(lk.k_type)} V {_type_name(lk.v_type)}" if lk else "empty"
        lines.append(
            f"cache {i}: {c.cells} cells, {len(c.layers)} layers, {kinds}, V transposed: {c.v_trans}"
        )
    return "; ".join(lines)
