"""Read what edgebench needs from a GGUF model file, without loading its weights.

gguf-py's GGUFReader builds a numpy view for every string of the vocabulary (≈10 s for a
262k-token vocab on a small board) and fails on truncated files with whatever numpy raises.
So the header is walked here with `struct` over an mmap, checking every read against the
file size; gguf-py is used only for its tables of types and file types. The per-layer
rules (SWA pattern, recurrent layers) mirror llama.cpp's `load_arch_hparams`.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from edgebench.errors import ModelError
from edgebench.textsafe import one_line

__all__ = ["ModelInfo", "clean_name", "read_model_info", "sha256_file"]

Scalar = str | int | float | bool

_SUPPORTED_VERSIONS = (2, 3)
_MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
_KEEP_ARRAY_ITEMS = 4096  # per-layer arrays are short; vocab-sized arrays are only skipped
_GUESSED_FTYPE = 1024  # flag llama.cpp ORs into general.file_type when it guessed

_VT = gguf.GGUFValueType
_SCALAR_FORMATS: dict[int, str] = {
    int(_VT.UINT8): "B",
    int(_VT.INT8): "b",
    int(_VT.UINT16): "H",
    int(_VT.INT16): "h",
    int(_VT.UINT32): "I",
    int(_VT.INT32): "i",
    int(_VT.FLOAT32): "f",
    int(_VT.BOOL): "?",
    int(_VT.UINT64): "Q",
    int(_VT.INT64): "q",
    int(_VT.FLOAT64): "d",
}
_STRING, _ARRAY, _FLOAT32 = int(_VT.STRING), int(_VT.ARRAY), int(_VT.FLOAT32)


def clean_name(text: str) -> str:
    """A model name as edgebench stores and shows it: one printable line (control characters
    escaped), square brackets as parentheses: Rich reads `[..]` in a table cell as markup, drops
    it silently, and stops at a stray `[/x]` with an error."""
    return one_line(text).replace("[", "(").replace("]", ")")


class ModelInfo(BaseModel):
    """Everything edgebench knows about a model file before running it."""

    model_config = ConfigDict(frozen=True)

    path: str
    name: str
    sha256: str
    file_size: int
    arch: str
    params: int
    bpw: float
    quant: str
    ctx_train: int
    n_layer: int
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: list[int]
    head_dim_k: int
    head_dim_v: int
    swa_window: int | None
    swa_layers: list[bool]
    recurrent_layers: list[int]
    n_expert: int
    n_expert_used: int
    chat_template: bool
    tool_template: bool
    tensor_bytes: dict[str, int]
    # Byte groups for "weights read per generated token" (roofline): the embedding table is only
    # gathered one row per token unless it doubles as the output matrix (tied, no output.weight);
    # routed-expert tensors are read n_expert_used / n_expert at a time.
    embd_bytes: int = 0
    output_tied: bool = False
    expert_bytes: int = 0
    metadata: dict[str, Scalar]

    @field_validator("name")
    @classmethod
    def _printable_name(cls, v: str) -> str:
        # general.name is untrusted text shown in every table and error; records stored before
        # this check are cleaned when read back.
        return clean_name(v)


# ---------------------------------------------------------------------------- header walk


@dataclass(frozen=True)
class _Array:
    elem_type: int
    count: int
    items: tuple[Scalar, ...] | None  # None when too long to keep (vocab) or nested


@dataclass(frozen=True)
class _Tensor:
    name: str
    ggml_type: str
    n_elements: int
    n_bytes: int
    shape: tuple[int, ...]
    offset: int = 0  # from the start of the data section (llama_model_loader's weight->offs - data start)


@dataclass(frozen=True)
class _Header:
    version: int
    kv: dict[str, Scalar | _Array]
    tensors: list[_Tensor]
    data_end: int  # file offset just past the last tensor's data
    meta_end: int = 0  # file offset just past the tensor infos, before the alignment padding
    kv_bytes: dict[str, int] = field(default_factory=dict)  # bytes of each key/value entry as stored


class _Truncated(Exception):
    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


class _Corrupt(Exception):
    pass


class _Cursor:
    def __init__(self, buf: mmap.mmap, endian: str) -> None:
        self.buf, self.endian, self.pos = buf, endian, 0

    def _need(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise _Truncated(start + n)
        self.pos += n
        return start

    def unpack(self, fmt: str, count: int = 1) -> tuple[Scalar, ...]:
        spec = f"{self.endian}{count}{fmt}"
        return struct.unpack_from(spec, self.buf, self._need(struct.calcsize(spec)))

    def u32(self) -> int:
        return int(self.unpack("I")[0])

    def u64(self) -> int:
        return int(self.unpack("Q")[0])

    def string(self) -> str:
        n = self.u64()
        start = self._need(n)
        return self.buf[start : start + n].decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        fmt, buf = f"{self.endian}Q", self.buf
        for _ in range(count):
            (n,) = struct.unpack_from(fmt, buf, self._need(8))
            self._need(n)

    def value(self, vtype: int) -> Scalar | _Array:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            elem_type, count = self.u32(), self.u64()
            return self.array(elem_type, count)
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise _Corrupt(f"unknown metadata value type {vtype}")
        v = self.unpack(fmt)[0]
        return _f32(v) if vtype == _FLOAT32 else v

    def array(self, elem_type: int, count: int) -> _Array:
        fmt = _SCALAR_FORMATS.get(elem_type)
        if fmt is not None:
            size = struct.calcsize(fmt) * count
            if count > _KEEP_ARRAY_ITEMS:
                self._need(size)
                return _Array(elem_type, count, None)
            items = self.unpack(fmt, count)
            if elem_type == _FLOAT32:
                items = tuple(_f32(v) for v in items)
            return _Array(elem_type, count, items)
        if elem_type == _STRING:
            self.skip_strings(count)
        elif elem_type == _ARRAY:
            for _ in range(count):
                self.value(_ARRAY)
        else:
            raise _Corrupt(f"unknown metadata array type {elem_type}")
        return _Array(elem_type, count, None)


def _f32(v: Scalar) -> float:
    """The shortest decimal that round-trips the float32 (1e-06, not 9.999999974752427e-07)."""
    return float(str(np.float32(v)))


def _walk(buf: mmap.mmap) -> _Header:
    if buf[:4] != b"GGUF":
        raise _Corrupt(f"not a GGUF file (bad magic {bytes(buf[:4])!r})")
    if len(buf) < 8:
        raise _Truncated(8)
    (version,) = struct.unpack_from("<I", buf, 4)
    # gguf-py's rule: a version whose low 16 bits are zero was written big-endian.
    endian = "<"
    if version & 0xFFFF == 0:
        endian, version = ">", struct.unpack_from(">I", buf, 4)[0]
    if version not in _SUPPORTED_VERSIONS:
        raise _Corrupt(f"unsupported GGUF version {version} (edgebench reads versions 2 and 3)")
    cur = _Cursor(buf, endian)
    cur.pos = 8
    n_tensors, n_kv = cur.u64(), cur.u64()

    kv: dict[str, Scalar | _Array] = {}
    kv_bytes: dict[str, int] = {}
    for _ in range(n_kv):
        start = cur.pos
        key = cur.string()
        kv[key] = cur.value(cur.u32())
        kv_bytes[key] = cur.pos - start

    quant_sizes = gguf.GGML_QUANT_SIZES
    tensors: list[_Tensor] = []
    ends: list[int] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(int(d) for d in cur.unpack("Q", n_dims))
        raw_type, offset = cur.u32(), cur.u64()
        try:
            qtype = gguf.GGMLQuantizationType(raw_type)
            block, type_size = quant_sizes[qtype]
        except (ValueError, KeyError):
            raise _Corrupt(f"tensor {name!r} has unknown ggml type {raw_type}") from None
        n_elements = math.prod(shape)  # exact: a corrupt dim must not wrap around
        if shape and shape[0] % block:
            raise _Corrupt(f"tensor {name!r} row of {shape[0]} is not a multiple of {qtype.name} blocks")
        n_bytes = n_elements // block * type_size
        tensors.append(_Tensor(name, qtype.name, n_elements, n_bytes, shape, offset))
        ends.append(offset + n_bytes)

    align = kv.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        raise _Corrupt(f"invalid general.alignment {align!r}")
    data_start = -(-cur.pos // align) * align
    return _Header(version, kv, tensors, data_start + max(ends, default=0), cur.pos, kv_bytes)


def _read_header(path: Path) -> tuple[_Header, int]:
    """The parsed header and the file size; every failure is a one-line ModelError."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size == 0:
                raise ModelError(f"{path}: not a GGUF file (empty, 0 bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                try:
                    header = _walk(buf)
                except _Truncated:
                    raise ModelError(
                        f"{path}: truncated: the file ends ({size} bytes) inside its GGUF header"
                    ) from None
                except _Corrupt as c:
                    raise ModelError(f"{path}: {c}") from None
                except Exception as e:  # struct.error, RecursionError on absurd nesting, …
                    raise ModelError(f"{path}: corrupt GGUF header ({type(e).__name__}: {e})") from None
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: is a directory, not a GGUF file") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
    if size < header.data_end:
        raise ModelError(f"{path}: truncated: {size} bytes, expected ≥ {header.data_end}")
    return header, size


# ---------------------------------------------------------------------------- hyperparameter checks

# Integer hyperparameters read here or by the planner (under "{arch}."), with generous ranges:
# beyond every released model, short of values that make the planner predict negative or 1e17
# MiB. A float or string where llama.cpp expects an integer is refused, as llama.cpp does.
_INT_RANGES: dict[str, tuple[int, int]] = {
    "block_count": (1, _MAX_LAYERS),  # LLAMA_MAX_LAYERS
    "context_length": (1, 1 << 27),
    "embedding_length": (1, 1 << 18),
    "feed_forward_length": (0, 1 << 20),
    "attention.head_count": (0, 1 << 12),
    "attention.head_count_kv": (0, 1 << 12),
    "attention.key_length": (0, 1 << 13),
    "attention.value_length": (0, 1 << 13),
    "attention.sliding_window": (0, 1 << 27),
    "attention.sliding_window_pattern": (0, _MAX_LAYERS),
    "attention.recurrent_layers": (0, 1),  # a per-layer flag array
    "vocab_size": (0, 1 << 24),
    "expert_count": (0, 1024),  # LLAMA_MAX_EXPERTS
    "expert_used_count": (0, 1024),
    "expert_feed_forward_length": (0, 1 << 20),
    "expert_shared_feed_forward_length": (0, 1 << 20),
    "expert_shared_count": (0, 1024),
    "nextn_predict_layers": (0, _MAX_LAYERS - 1),
    "full_attention_interval": (0, _MAX_LAYERS),
    "ssm.conv_kernel": (0, 1 << 10),
    "ssm.inner_size": (0, 1 << 20),
    "ssm.state_size": (0, 1 << 14),
    "ssm.group_count": (0, 1 << 12),
    "ssm.time_step_rank": (0, 1 << 16),
    "wkv.head_size": (0, 1 << 12),
    "token_shift_count": (0, 64),
    "shortconv.l_cache": (0, 1 << 12),
    "kda.head_dim": (0, 1 << 12),
}
# Keys llama.cpp reads with get_key_or_arr: one value, or exactly one per layer.
_PER_LAYER = frozenset(
    {"feed_forward_length", "attention.head_count", "attention.head_count_kv", "expert_used_count"}
)
_PER_LAYER_FLAGS = frozenset({"attention.sliding_window_pattern", "attention.recurrent_layers"})
_MAX_VOCAB = 1 << 24
_ARCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_BLOCK = re.compile(r"blk\.(\d+)\.")


def _show(v: Scalar | _Array) -> str:
    if isinstance(v, _Array):
        if v.items is None:
            return f"array of {v.count}"
        head = ", ".join(str(x) for x in v.items[:8])
        return f"[{head}{', …' if v.count > 8 else ''}]"
    return one_line(repr(v), 80) if isinstance(v, str) else str(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _refuse(path: Path, key: str, value: Scalar | _Array, why: str) -> ModelError:
    return ModelError(f"{path}: {key} = {_show(value)}: {why}")


def _check_arch(path: Path, arch: Scalar | _Array | None) -> str:
    if arch is None or arch == "":
        raise ModelError(f"{path}: missing required key general.architecture")
    if not isinstance(arch, str) or not _ARCH_NAME.fullmatch(arch):
        raise _refuse(path, gguf.Keys.General.ARCHITECTURE, arch, "not an architecture name")
    return arch


def _check_kv(path: Path, kv: dict[str, Scalar | _Array], arch: str) -> int:
    """Types, finiteness and ranges of the metadata edgebench reads; returns n_layer."""
    prefix = f"{arch}."
    if prefix + "block_count" not in kv:
        raise ModelError(f"{path}: missing required key {prefix}block_count")
    for key, v in kv.items():  # NaN/inf anywhere in the model's own or general keys
        if key.startswith(("general.", prefix)):
            items = (v.items or ()) if isinstance(v, _Array) else (v,)
            if any(isinstance(x, float) and not math.isfinite(x) for x in items):
                raise _refuse(path, key, v, "not a finite number")
    n_layer = 0
    for name, (lo, hi) in _INT_RANGES.items():  # block_count first: arrays are checked against it
        key = prefix + name
        if key not in kv:
            continue
        v = kv[key]
        if isinstance(v, _Array):
            if name not in _PER_LAYER | _PER_LAYER_FLAGS:
                raise _refuse(path, key, v, "expected one integer, not an array")
            if v.count != n_layer:
                raise _refuse(path, key, v, f"{v.count} values, expected one per layer ({n_layer})")
            if name in _PER_LAYER_FLAGS:
                continue
            if v.items is None or not all(_is_int(x) for x in v.items):
                raise _refuse(path, key, v, "expected integers")
            values: tuple[Scalar, ...] = v.items
        elif _is_int(v):
            values = (v,)
        else:
            raise _refuse(path, key, v, "expected an integer")
        if name == "nextn_predict_layers":
            hi = n_layer - 1
        if any(not lo <= int(x) <= hi for x in values):
            raise _refuse(path, key, v, f"outside {lo}..{hi}")
        if name == "block_count":
            n_layer = int(values[0])
    return n_layer


def _check_layout(
    path: Path,
    header: _Header,
    arch: str,
    *,
    n_embd: int,
    heads: list[int],
    n_head_kv: list[int],
    head_dim_k: int,
    n_vocab: int,
) -> None:
    """Hyperparameters that must agree with each other and with the tensors, as llama.cpp checks."""
    kv = header.kv
    head_key, kv_key = f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv"
    if head_key in kv:  # without it (header-only files, some hybrids) there is nothing to compare
        per_layer = isinstance(kv.get(head_key), _Array) or isinstance(kv.get(kv_key), _Array)
        for il, (h, k) in enumerate(zip(heads, n_head_kv, strict=True)):
            where = f" (layer {il})" if per_layer else ""
            shown = kv.get(kv_key, k)
            if k > h:
                raise _refuse(path, kv_key, shown, f"more than {head_key} {h}{where}")
            if k and h % k:
                raise _refuse(path, kv_key, shown, f"does not divide {head_key} {h}{where}")
        if any(n_head_kv) and head_dim_k < 1:
            raise _refuse(path, head_key, kv[head_key], f"more heads than {arch}.embedding_length {n_embd}")
    n_expert = _int(kv.get(f"{arch}.expert_count")) or 0
    used_key = f"{arch}.expert_used_count"
    used = kv.get(used_key, 0)
    n_used = max(_per_layer(used, len(heads), [0]), default=0)
    if n_used > n_expert:
        raise _refuse(path, used_key, used, f"more than {arch}.expert_count {n_expert}")
    if n_expert and not n_used:
        raise _refuse(path, used_key, used, f"must be ≥ 1 with {arch}.expert_count {n_expert}")
    if n_vocab > _MAX_VOCAB:
        raise ModelError(f"{path}: vocabulary of {n_vocab} tokens: more than {_MAX_VOCAB}")
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embd is not None and len(embd.shape) == 2 and embd.shape[0] != n_embd:
        raise _refuse(
            path, f"{arch}.embedding_length", n_embd, f"token_embd.weight has rows of {embd.shape[0]}"
        )
    blocks = [int(m.group(1)) for t in header.tensors if (m := _BLOCK.match(t.name))]
    if blocks and max(blocks) + 1 != len(heads):
        raise _refuse(
            path, f"{arch}.block_count", len(heads), f"the file has tensors for {max(blocks) + 1} layers"
        )


# ---------------------------------------------------------------------------- derivation

# arch -> (period, dense_first, only when {arch}.attention.sliding_window > 0, default window)
# from the load_swa_pattern(ml, period, dense_first) calls in src/models/*.cpp
_SWA_PERIODS: dict[str, tuple[int, bool, bool, int | None]] = {
    "gemma2": (2, False, False, 4096),
    "gemma3": (6, False, True, None),
    "gemma3n": (5, False, False, None),
    "gemma-embedding": (6, False, False, None),
    "cohere2": (4, False, False, None),
    "cohere2moe": (4, True, False, None),
    "exaone-moe": (4, False, False, 128),
    "olmo2": (4, False, True, None),
    "plamo3": (8, False, True, None),
    "gpt-oss": (2, False, False, None),
    "afmoe": (4, False, True, None),
    "smallthinker": (4, True, True, None),
    "modern-bert": (3, True, True, None),
    "mellum": (4, False, True, None),
    "laguna": (4, True, True, None),
    "muse-glimmer": (4, False, False, None),
}
# Every layer carries recurrent state (llm_arch_is_recurrent, and falcon-h1's parallel SSM).
_ALL_RECURRENT = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "falcon-h1"})
# Hybrids whose recurrent layers are the ones with head_count_kv == 0.
_KV0_HYBRIDS = frozenset(
    {
        "jamba",
        "plamo2",
        "granitehybrid",
        "lfm2",
        "lfm2moe",
        "kimi-linear",
        "kimi-k3",
        "bailingmoe3",
        "glm5-next",
    }
)
# Hybrids with full attention every N-th layer (default N) unless recurrent_layers is given.
_INTERVAL_HYBRIDS = {"qwen3next": 4, "qwen35": 4, "qwen35moe": 4, "qwen4exp": 4, "minimax-01": 8}


def _int(v: Scalar | _Array | None) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _per_layer(v: Scalar | _Array | None, n: int, default: list[int]) -> list[int]:
    """A scalar repeated for every layer, a per-layer array kept as is, else `default`."""
    if isinstance(v, _Array) and v.items is not None and len(v.items) == n:
        return [int(x) for x in v.items]
    scalar = _int(v)
    return [scalar] * n if scalar is not None else default


def _flags(v: Scalar | _Array | None, n: int) -> list[bool] | None:
    if isinstance(v, _Array) and v.items is not None and len(v.items) == n:
        return [bool(x) for x in v.items]
    return None


def _period_pattern(n_layer: int, n_eff: int, period: int, dense_first: bool) -> list[bool]:
    """llama_hparams::set_swa_pattern: period 0 = all SWA; else one full layer per period."""
    if dense_first:
        flags = [period == 0 or i % period != 0 for i in range(n_eff)]
    else:
        flags = [period == 0 or i % period < period - 1 for i in range(n_eff)]
    return flags + [False] * (n_layer - n_eff)  # appended NextN/MTP layers are full attention


def _swa_rule(
    arch: str, raw_window: object, window: int | None, n_layer: int
) -> tuple[int, bool, int] | None:
    """(period, dense_first, window) for archs whose loader calls load_swa_pattern; None = SWA off."""
    if arch == "llama4":  # chunked attention, 3 chunked : 1 full, unless the window is given as 0
        return None if raw_window is not None and not window else (4, False, 8192)
    if arch == "exaone4":  # only the 64-layer (32B) model interleaves SWA
        return (4, False, window or 4096) if n_layer == 64 else None
    period, dense_first, needs_window, default_window = _SWA_PERIODS[arch]
    if needs_window and not window:
        return None
    if arch == "smallthinker":  # llama.cpp overrides the stored window
        window = 4096
    window = window or default_window
    return (period, dense_first, window) if window else None


def _swa(
    arch: str, kv: dict[str, Scalar | _Array], n_layer: int, n_eff: int, recurrent: list[int]
) -> tuple[int | None, list[bool]]:
    off: tuple[int | None, list[bool]] = (None, [False] * n_layer)
    raw_window = kv.get(f"{arch}.attention.sliding_window")
    window = _int(raw_window)
    pattern = kv.get(f"{arch}.attention.sliding_window_pattern")

    if arch == "lfm2":  # its attention (non-recurrent) layers are the SWA ones
        return (window, [i not in recurrent for i in range(n_layer)]) if window else off
    period = -1  # no default period: only a stored pattern can say which layers slide
    dense_first = False
    if arch in _SWA_PERIODS or arch in ("llama4", "exaone4"):
        rule = _swa_rule(arch, raw_window, window, n_layer)
        if rule is None:
            return off
        period, dense_first, window = rule
    elif not window:  # gemma4, granite_swa, … and unknown archs: a window plus a stored pattern
        return off

    flags = _flags(pattern, n_layer)  # a per-layer array wins, as in load_swa_pattern
    if flags is None:
        stored = _int(pattern)
        period = stored if stored is not None else period
        if period < 0:
            return off
        flags = _period_pattern(n_layer, n_eff, period, dense_first)
    return (window, flags) if any(flags) else off


def _recurrent(
    arch: str, kv: dict[str, Scalar | _Array], n_layer: int, n_eff: int, n_head_kv: list[int]
) -> list[int]:
    flags = _flags(kv.get(f"{arch}.attention.recurrent_layers"), n_layer)
    if flags is not None:
        return [i for i, f in enumerate(flags) if f]
    if arch in _ALL_RECURRENT:
        return list(range(n_layer))
    if arch in _INTERVAL_HYBRIDS:
        every = _int(kv.get(f"{arch}.full_attention_interval")) or _INTERVAL_HYBRIDS[arch]
        return [i for i in range(n_eff) if (i + 1) % every != 0]
    if arch in ("nemotron_h", "nemotron_h_moe"):
        n_ff = _per_layer(kv.get(f"{arch}.feed_forward_length"), n_layer, [1] * n_layer)
        return [i for i in range(n_eff) if n_head_kv[i] == 0 and n_ff[i] == 0]
    has_ssm = any(k.startswith(f"{arch}.ssm.") for k in kv)
    if arch in _KV0_HYBRIDS or has_ssm:
        zero_kv = [i for i in range(n_eff) if n_head_kv[i] == 0]
        return zero_kv if zero_kv or not has_ssm else list(range(n_layer))
    return []


def _quant(kv: dict[str, Scalar | _Array], tensor_bytes: dict[str, int]) -> str:
    ftype = _int(kv.get(gguf.Keys.General.FILE_TYPE))
    if ftype is not None:
        try:
            name: str = gguf.LlamaFileType(ftype & ~_GUESSED_FTYPE).name
        except ValueError:
            pass
        else:
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return max(tensor_bytes, key=lambda t: tensor_bytes[t]) if tensor_bytes else "unknown"


def _templates(kv: dict[str, Scalar | _Array]) -> list[str]:
    """tokenizer.chat_template and its named variants (tokenizer.chat_template.tool_use, …)."""
    key = gguf.Keys.Tokenizer.CHAT_TEMPLATE
    return [v for k, v in kv.items() if (k == key or k.startswith(key + ".")) and isinstance(v, str) and v]


def _derive(path: Path, header: _Header, size: int, sha256: str) -> ModelInfo:
    kv = header.kv
    arch = _check_arch(path, kv.get(gguf.Keys.General.ARCHITECTURE))

    def required(key: str) -> int:
        value = _int(kv.get(key.format(arch=arch)))
        if value is None:
            raise ModelError(f"{path}: missing required key {key.format(arch=arch)}")
        return value

    # before any per-layer list is sized from it: a corrupt count must not allocate billions
    n_layer = _check_kv(path, kv, arch)
    n_embd = required(gguf.Keys.LLM.EMBEDDING_LENGTH)
    ctx_train = required(gguf.Keys.LLM.CONTEXT_LENGTH)
    n_eff = max(0, n_layer - (_int(kv.get(f"{arch}.nextn_predict_layers")) or 0))

    heads = _per_layer(kv.get(f"{arch}.attention.head_count"), n_layer, [0] * n_layer)
    n_head = heads[0] if heads else 0  # llama.cpp's n_head() is layer 0's
    n_head_kv = _per_layer(kv.get(f"{arch}.attention.head_count_kv"), n_layer, heads)
    default_dim = n_embd // n_head if n_head else 0
    head_dim_k = _int(kv.get(f"{arch}.attention.key_length")) or default_dim
    head_dim_v = _int(kv.get(f"{arch}.attention.value_length")) or default_dim

    recurrent = _recurrent(arch, kv, n_layer, n_eff, n_head_kv)
    swa_window, swa_layers = _swa(arch, kv, n_layer, n_eff, recurrent)

    tokens = kv.get(gguf.Keys.Tokenizer.LIST)
    embd = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if isinstance(tokens, _Array):
        n_vocab = tokens.count
    else:
        n_vocab = _int(kv.get(f"{arch}.vocab_size")) or (embd.shape[1] if embd and len(embd.shape) > 1 else 0)

    used = kv.get(f"{arch}.expert_used_count")
    n_expert_used = max(_per_layer(used, n_layer, [0]), default=0) if used is not None else 0
    _check_layout(
        path,
        header,
        arch,
        n_embd=n_embd,
        heads=heads,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        n_vocab=n_vocab,
    )

    by_type: Counter[str] = Counter()
    for t in header.tensors:
        by_type[t.ggml_type] += t.n_bytes
    tensor_bytes = dict(by_type.most_common())
    params = sum(t.n_elements for t in header.tensors)
    embd_bytes = sum(t.n_bytes for t in header.tensors if t.name == "token_embd.weight")
    output_tied = not any(t.name == "output.weight" for t in header.tensors)
    expert_bytes = sum(t.n_bytes for t in header.tensors if "_exps." in t.name)

    templates = _templates(kv)
    name = kv.get(gguf.Keys.General.NAME)
    name = name.strip() if isinstance(name, str) else ""
    return ModelInfo(
        path=str(path),
        name=name or path.stem,  # control characters escaped by ModelInfo
        sha256=sha256,
        file_size=size,
        arch=arch,
        params=params,
        bpw=round(sum(tensor_bytes.values()) * 8 / params, 4) if params else 0.0,
        quant=_quant(kv, tensor_bytes),
        ctx_train=ctx_train,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        swa_window=swa_window,
        swa_layers=swa_layers,
        recurrent_layers=recurrent,
        n_expert=_int(kv.get(f"{arch}.expert_count")) or 0,
        n_expert_used=n_expert_used,
        chat_template=bool(templates),
        tool_template=any("tools" in t or "tool_call" in t for t in templates),
        tensor_bytes=tensor_bytes,
        embd_bytes=embd_bytes,
        output_tied=output_tied,
        expert_bytes=expert_bytes,
        metadata={
            k: v
            for k, v in kv.items()
            if (k.startswith("general.") or k.startswith(f"{arch}.")) and not isinstance(v, _Array)
        },
    )


# ---------------------------------------------------------------------------- public API


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (models are larger than RAM on small boards)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_model_info(path: Path, sha256: str | None = None) -> ModelInfo:
    """Read a GGUF's header into a ModelInfo; hashes the file unless `sha256` is given.

    Any problem with the file is raised as a one-line ModelError naming it.
    """
    path = Path(path)
    header, size = _read_header(path)  # before hashing: a bad file fails fast
    if sha256 is None:
        try:
            sha256 = sha256_file(path)
        except OSError as e:
            raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return _derive(path, header, size, sha256)
    except ModelError:
        raise
    except Exception as e:  # a malformed value must still be one line, never a traceback
        raise ModelError(f"{path}: unreadable GGUF metadata ({type(e).__name__}: {e})") from None
