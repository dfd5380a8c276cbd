"""Read llama.cpp's own memory figures out of a llama-server (or llama-cli) log.

llama.cpp prints its buffer sizes with LLAMA_LOG_INFO, which common/log.cpp maps to verbosity 4
(trace): a server started with the default `-lv 3` prints none of them. `-lv 4` prints the
buffer lines and the per-device table (`common_memory_breakdown_print`, LOG_TRC, common/fit.cpp)
that llama-server prints on a clean exit; `--verbose` prints the same plus debug lines.

Two things make a log harder than a grep:
- llama-server's `--fit` step (on by default) first builds the model and context with
  `no_alloc`: under `--verbose` its buffer lines (all 0.00 MiB) and its compute estimate come
  first, and under `-lv 4` its projected table does. The real load is the last "session".
- iSWA models get two KV caches ("creating non-SWA/SWA KV cache" announces which), hybrid models
  a KV cache plus a recurrent-state ("RS") buffer.

Every field is optional: a line we do not find is None, and no log, however odd, raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BreakdownRow",
    "CacheInfo",
    "DeviceMemory",
    "MemoryBreakdown",
    "parse_memory_log",
    "read_memory_log",
]

CacheKind = Literal["kv", "kv_base", "kv_swa", "recurrent"]


class DeviceMemory(BaseModel):
    """Buffer sizes (MiB, as llama.cpp printed them) on one device; "CPU" is host memory."""

    model_config = ConfigDict(frozen=True)

    device: str
    model_mib: float | None = None  # weights: CPU_Mapped (mmap) or CPU (read into RAM), CUDA0 …
    repack_mib: float | None = None  # CPU_REPACK: weights copied into a kernel-friendly layout
    kv_mib: float | None = None  # all attention KV caches (iSWA: non-SWA + SWA)
    kv_swa_mib: float | None = None  # the SWA part of kv_mib
    recurrent_mib: float | None = None  # recurrent/SSM state ("RS buffer")
    compute_mib: float | None = None
    output_mib: float | None = None  # logits/embeddings buffer

    @property
    def total_mib(self) -> float:
        parts = (self.model_mib, self.repack_mib, self.kv_mib, self.recurrent_mib)
        return sum(v for v in (*parts, self.compute_mib, self.output_mib) if v is not None)


class CacheInfo(BaseModel):
    """One `llama_kv_cache: size = …` or `llama_memory_recurrent: size = …` line."""

    model_config = ConfigDict(frozen=True)

    kind: CacheKind
    size_mib: float
    cells: int
    layers: int  # as printed: a recurrent cache prints the model's layer count, skipped ones included
    seqs: int | None = None
    streams: int | None = None
    type_k: str | None = None  # R type for a recurrent cache
    type_v: str | None = None  # S type for a recurrent cache
    k_mib: float | None = None
    v_mib: float | None = None


class BreakdownRow(BaseModel):
    """A row of llama.cpp's `memory breakdown [MiB]` table (whole MiB, truncated by llama.cpp)."""

    model_config = ConfigDict(frozen=True)

    name: str  # "Host", "CPU_REPACK", "CUDA0 (RTX 4090)", …
    self_mib: int
    model_mib: int
    context_mib: int  # KV cache + recurrent state
    compute_mib: int
    total_mib: int | None = None  # device rows only
    free_mib: int | None = None
    unaccounted_mib: int | None = None


class MemoryBreakdown(BaseModel):
    """What one llama.cpp run reported about its memory, per device, plus load timings."""

    model_config = ConfigDict(frozen=True)

    devices: dict[str, DeviceMemory] = {}
    caches: list[CacheInfo] = []
    table: list[BreakdownRow] = []  # the table printed after the load (llama-server: on exit)
    fit_table: list[BreakdownRow] = []  # the --fit step's no_alloc projection, printed before it
    dry_run: bool = False  # only no_alloc (all-zero) buffers were found
    n_ctx: int | None = None
    n_ctx_seq: int | None = None
    n_seq_max: int | None = None
    n_batch: int | None = None
    n_ubatch: int | None = None
    n_outputs_max: int | None = None
    flash_attn: str | None = None  # as printed: "auto", "enabled", "disabled", "1", …
    kv_unified: bool | None = None
    load_time_ms: float | None = None  # llama_perf "load time" (llama-cli, llama-perplexity)
    ready_s: float | None = None  # log timestamp of llama-server's "model loaded"
    fit_s: float | None = None  # time the --fit step took
    reserve_ms: float | None = None  # sched_reserve: worst-case graph reservation

    @property
    def host(self) -> DeviceMemory | None:
        return self.devices.get("CPU")

    def _cache(self, *kinds: CacheKind) -> CacheInfo | None:
        return next((c for c in self.caches if c.kind in kinds), None)

    @property
    def kv_cells(self) -> int | None:
        """Cells of the full-attention KV cache (per stream)."""
        c = self._cache("kv", "kv_base")
        return c.cells if c else None

    @property
    def kv_layers(self) -> int | None:
        c = self._cache("kv", "kv_base")
        return c.layers if c else None

    @property
    def kv_swa_cells(self) -> int | None:
        c = self._cache("kv_swa")
        return c.cells if c else None

    @property
    def kv_swa_layers(self) -> int | None:
        c = self._cache("kv_swa")
        return c.layers if c else None

    @property
    def recurrent_cells(self) -> int | None:
        c = self._cache("recurrent")
        return c.cells if c else None


# ---------------------------------------------------------------------------- patterns

_NUM = r"(\d+(?:\.\d+)?)"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# common/log.cpp timestamps: minutes.seconds.millis.micros ("0.08.018.598"), maybe after "[pid] "
_STAMP = re.compile(r"^(?:\[\d+\]\s+)?(\d+)\.(\d{2})\.(\d{3})\.(\d{3})\s")
# load_tensors (llm_load_tensors before 2025): "  CPU_Mapped model buffer size =   235.16 MiB"
_MODEL_BUF = re.compile(
    rf"(?:load_tensors|llm_load_tensors):\s+(\S+)\s+(?:model )?buffer size\s*=\s*{_NUM} MiB"
)
_KV_BUF = re.compile(rf":\s+(\S+)\s+KV buffer size\s*=\s*{_NUM} MiB")
_RS_BUF = re.compile(rf":\s+(\S+)\s+RS buffer size\s*=\s*{_NUM} MiB")
_COMPUTE_BUF = re.compile(rf":\s+(\S+)\s+compute buffer size\s*=\s*{_NUM} MiB")
_OUTPUT_BUF = re.compile(rf":\s+(\S+)\s+output buffer size\s*=\s*{_NUM} MiB")
_ISWA = re.compile(r"creating\s+(non-SWA|SWA) KV cache, size = (\d+) cells")
# llama_kv_cache (llama_kv_cache_unified before 2025): "size =    6.00 MiB (  2048 cells,   3 layers,
# 4/1 seqs), K (f16):    3.00 MiB, V (f16):    3.00 MiB"; older builds print "1 seqs"
_KV_SIZE = re.compile(
    rf"llama_kv_cache\w*: size =\s*{_NUM} MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*(\d+)(?:/(\d+))? seqs\), "
    rf"K \((\w+)\):\s*{_NUM} MiB, V \((\w+)\):\s*{_NUM} MiB"
)
_RS_SIZE = re.compile(
    rf"llama_memory_recurrent: size =\s*{_NUM} MiB \(\s*(\d+) cells,\s*(\d+) layers,\s*(\d+) seqs[^)]*\), "
    rf"R \((\w+)\):\s*{_NUM} MiB, S \((\w+)\):\s*{_NUM} MiB"
)
_CTX_PARAM = re.compile(
    r"(?:llama_context|llama_new_context_with_model|llama_init_from_model):\s+"
    r"(n_ctx|n_ctx_seq|n_ctx_per_seq|n_seq_max|n_batch|n_ubatch|n_outputs_max|flash_attn|kv_unified)"
    r"\s+=\s+(\S+)"
)
_TABLE = re.compile(r"memory_breakdown_print: \|\s*(.*?)\s*\|\s*(.*?)\s*\|\s*$")
_LOAD_TIME = re.compile(rf"\bload time =\s*{_NUM} ms")
_FIT_TIME = re.compile(rf"fitting params to free memory took {_NUM} seconds")
_RESERVE = re.compile(rf"reserve took {_NUM} ms")
_READY = re.compile(r"\bmodel loaded\s*$")

# Extra CPU buffer types that hold a second, re-laid-out copy of some weights (ggml-cpu).
_REPACK_BUFFERS = ("_REPACK", "_AARCH64", "_KLEIDIAI", "AMX")


def _device_of(buffer: str) -> str:
    """CPU_Mapped, CPU_REPACK, CPU and pinned *_Host buffers are host memory; others are devices."""
    if buffer.startswith("CPU") or buffer.endswith("_Host") or buffer == "AMX":
        return "CPU"
    return buffer


def _is_repack(buffer: str) -> bool:
    return any(buffer.endswith(s) or buffer == s for s in _REPACK_BUFFERS)


# ---------------------------------------------------------------------------- parsing


class _Session:
    """The buffers of one model+context construction (the --fit dry run, then the real load)."""

    def __init__(self) -> None:
        self.start: int | None = None  # index of its first line
        self.model: dict[str, float] = {}
        self.repack: dict[str, float] = {}
        self.kv: dict[str, float] = {}
        self.kv_swa: dict[str, float] = {}
        self.rs: dict[str, float] = {}
        self.compute: dict[str, float] = {}
        self.output: dict[str, float] = {}
        self.caches: list[CacheInfo] = []
        self.params: dict[str, str] = {}
        self.reserve_ms: float | None = None
        self.has_context = False  # anything after the weights: a new weights line starts a new session

    def touch(self, i: int, *, context: bool = True) -> None:
        if self.start is None:
            self.start = i
        self.has_context = self.has_context or context

    def nonzero(self) -> bool:
        """Real buffers: the --fit dry run prints 0.00 MiB weights and caches (and its compute estimate)."""
        return any(v > 0 for d in (self.model, self.repack, self.kv, self.rs) for v in d.values())


def _add(d: dict[str, float], key: str, mib: float) -> None:
    d[key] = d.get(key, 0.0) + mib


def _table_row(label: str, numbers: str) -> BreakdownRow | None:
    vals = [int(v) for v in re.findall(r"-?\d+", numbers)]
    name = label.removeprefix("- ").strip()
    if len(vals) == 7:  # device: total = free + (self = model + context + compute) + unaccounted
        total, free, self_, model, context, compute, unacc = vals
        return BreakdownRow(
            name=name,
            self_mib=self_,
            model_mib=model,
            context_mib=context,
            compute_mib=compute,
            total_mib=total,
            free_mib=free,
            unaccounted_mib=unacc,
        )
    if len(vals) == 4:  # host / other buffer types: self = model + context + compute
        self_, model, context, compute = vals
        return BreakdownRow(
            name=name, self_mib=self_, model_mib=model, context_mib=context, compute_mib=compute
        )
    return None


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def _bool(v: str | None) -> bool | None:
    if v is None:
        return None
    low = v.lower()
    return True if low in ("true", "1", "enabled") else False if low in ("false", "0", "disabled") else None


def parse_memory_log(text: str | Iterable[str]) -> MemoryBreakdown:
    """Parse a llama.cpp log (a string or lines); unknown or missing lines leave fields None."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    sessions: list[_Session] = []
    cur = _Session()
    tables: list[tuple[int, list[BreakdownRow]]] = []
    pending_kind: CacheKind = "kv"
    load_time_ms = ready_s = fit_s = None

    for i, raw in enumerate(lines):
        line = _ANSI.sub("", raw).rstrip()
        if m := _MODEL_BUF.search(line):
            if cur.has_context:
                sessions.append(cur)
                cur = _Session()
            cur.touch(i, context=False)
            name, mib = m.group(1), float(m.group(2))
            _add(cur.repack if _is_repack(name) else cur.model, _device_of(name), mib)
        elif m := _ISWA.search(line):
            cur.touch(i)
            pending_kind = "kv_swa" if m.group(1) == "SWA" else "kv_base"
        elif m := _KV_BUF.search(line):
            cur.touch(i)
            dev, mib = _device_of(m.group(1)), float(m.group(2))
            _add(cur.kv, dev, mib)
            if pending_kind == "kv_swa":
                _add(cur.kv_swa, dev, mib)
        elif m := _KV_SIZE.search(line):
            cur.touch(i)
            g = m.groups()
            cur.caches.append(
                CacheInfo(
                    kind=pending_kind,
                    size_mib=float(g[0]),
                    cells=int(g[1]),
                    layers=int(g[2]),
                    seqs=int(g[3]),
                    streams=_int(g[4]),
                    type_k=g[5],
                    k_mib=float(g[6]),
                    type_v=g[7],
                    v_mib=float(g[8]),
                )
            )
        elif m := _RS_BUF.search(line):
            cur.touch(i)
            _add(cur.rs, _device_of(m.group(1)), float(m.group(2)))
        elif m := _RS_SIZE.search(line):
            cur.touch(i)
            g = m.groups()
            cur.caches.append(
                CacheInfo(
                    kind="recurrent",
                    size_mib=float(g[0]),
                    cells=int(g[1]),
                    layers=int(g[2]),
                    seqs=int(g[3]),
                    type_k=g[4],
                    k_mib=float(g[5]),
                    type_v=g[6],
                    v_mib=float(g[7]),
                )
            )
        elif m := _COMPUTE_BUF.search(line):
            cur.touch(i)
            _add(cur.compute, _device_of(m.group(1)), float(m.group(2)))
        elif m := _OUTPUT_BUF.search(line):
            cur.touch(i)
            _add(cur.output, _device_of(m.group(1)), float(m.group(2)))
        elif m := _CTX_PARAM.search(line):
            cur.touch(i)
            key = "n_ctx_seq" if m.group(1) == "n_ctx_per_seq" else m.group(1)
            cur.params[key] = m.group(2)
            if key == "n_ctx":  # a new context: its first cache is a plain one unless iSWA says otherwise
                pending_kind = "kv"
        elif m := _TABLE.search(line):
            label, numbers = m.group(1), m.group(2)
            if "memory breakdown" in label:
                tables.append((i, []))
            elif tables and (row := _table_row(label, numbers)) is not None:
                tables[-1][1].append(row)
        elif m := _RESERVE.search(line):
            cur.touch(i)
            cur.reserve_ms = float(m.group(1))
        elif m := _LOAD_TIME.search(line):
            load_time_ms = float(m.group(1))
        elif m := _FIT_TIME.search(line):
            fit_s = float(m.group(1))
        elif _READY.search(line) and (s := _STAMP.match(line)):
            mins, secs, ms, us = (int(x) for x in s.groups())
            ready_s = mins * 60 + secs + ms / 1e3 + us / 1e6
    sessions.append(cur)

    real = [s for s in sessions if s.nonzero()]
    chosen = real[-1] if real else sessions[-1]
    start = chosen.start if chosen.start is not None else len(lines)
    after = [rows for (at, rows) in tables if at >= start and rows]
    before = [rows for (at, rows) in tables if at < start and rows]
    if not real and not after and before:  # a log with only the --fit projection
        after, before = before, []

    names = set().union(chosen.model, chosen.repack, chosen.kv, chosen.rs, chosen.compute, chosen.output)
    devices = {
        d: DeviceMemory(
            device=d,
            model_mib=chosen.model.get(d),
            repack_mib=chosen.repack.get(d),
            kv_mib=chosen.kv.get(d),
            kv_swa_mib=chosen.kv_swa.get(d),
            recurrent_mib=chosen.rs.get(d),
            compute_mib=chosen.compute.get(d),
            output_mib=chosen.output.get(d),
        )
        for d in sorted(names)
    }
    p = chosen.params
    return MemoryBreakdown(
        devices=devices,
        caches=chosen.caches,
        table=after[-1] if after else [],
        fit_table=before[-1] if before else [],
        dry_run=bool(names) and not real,
        n_ctx=_int(p.get("n_ctx")),
        n_ctx_seq=_int(p.get("n_ctx_seq")),
        n_seq_max=_int(p.get("n_seq_max")),
        n_batch=_int(p.get("n_batch")),
        n_ubatch=_int(p.get("n_ubatch")),
        n_outputs_max=_int(p.get("n_outputs_max")),
        flash_attn=p.get("flash_attn"),
        kv_unified=_bool(p.get("kv_unified")),
        load_time_ms=load_time_ms,
        ready_s=ready_s,
        fit_s=fit_s,
        reserve_ms=chosen.reserve_ms,
    )


def read_memory_log(path: Path) -> MemoryBreakdown:
    """parse_memory_log of a log file (undecodable bytes replaced; a missing file raises OSError)."""
    return parse_memory_log(Path(path).read_text(errors="replace"))
