"""Test helper: copies of a GGUF with metadata values replaced, added or dropped.

The tensor infos and tensor data are copied verbatim (their offsets are relative to the data
section, which is re-aligned after the rewritten key/value section), so one read of a base
model makes any number of variants cheaply: what the metadata tests and the fuzz test need.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

VT = gguf.GGUFValueType
_FMT = {
    VT.UINT8: "B",
    VT.INT8: "b",
    VT.UINT16: "H",
    VT.INT16: "h",
    VT.UINT32: "I",
    VT.INT32: "i",
    VT.FLOAT32: "f",
    VT.BOOL: "?",
    VT.UINT64: "Q",
    VT.INT64: "q",
    VT.FLOAT64: "d",
}


@dataclass(frozen=True)
class Value:
    """A typed GGUF metadata value; `sub` is the element type of an ARRAY."""

    vtype: VT
    value: Any
    sub: VT | None = None


def _pack(v: Value) -> bytes:
    out = struct.pack("<I", v.vtype)
    return out + _pack_raw(v.vtype, v.value, v.sub)


def _pack_raw(vtype: VT, value: Any, sub: VT | None) -> bytes:
    if vtype in _FMT:
        return struct.pack("<" + _FMT[vtype], value)
    if vtype == VT.STRING:
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")
        return struct.pack("<Q", len(raw)) + raw
    assert vtype == VT.ARRAY and sub is not None
    out = struct.pack("<IQ", sub, len(value))
    return out + b"".join(_pack_raw(sub, item, None) for item in value)


class GGUFTemplate:
    """A GGUF read once (little-endian, v3), rewritten with other metadata on demand."""

    def __init__(self, path: Path) -> None:
        reader = gguf.GGUFReader(path)
        data = path.read_bytes()
        self.kv: dict[str, Value] = {}
        kv_end = 24
        for key, field in reader.fields.items():
            end = field.offset + sum(int(p.nbytes) for p in field.parts)
            if key.startswith("GGUF."):
                continue
            kv_end = max(kv_end, end)
            vtype = VT(field.types[0])
            if vtype == VT.ARRAY:
                sub = VT(field.types[-1])
                items = field.contents()
                self.kv[key] = Value(vtype, list(items), sub)
            else:
                self.kv[key] = Value(vtype, field.contents())
        infos_end = max(t.field.offset + sum(int(p.nbytes) for p in t.field.parts) for t in reader.tensors)
        self.n_tensors = len(reader.tensors)
        self.tensor_infos = data[kv_end:infos_end]
        self.tensor_data = data[reader.data_offset :]
        self.alignment = 32

    def write(
        self,
        dst: Path,
        set_: Mapping[str, Value] | None = None,
        drop: Sequence[str] = (),
    ) -> Path:
        kv = {k: v for k, v in self.kv.items() if k not in drop}
        kv.update(set_ or {})
        body = bytearray(b"GGUF" + struct.pack("<IQQ", 3, self.n_tensors, len(kv)))
        for key, value in kv.items():
            raw_key = key.encode("utf-8")
            body += struct.pack("<Q", len(raw_key)) + raw_key + _pack(value)
        body += self.tensor_infos
        body += b"\0" * (-len(body) % self.alignment)
        dst.write_bytes(bytes(body) + self.tensor_data)
        return dst
