"""One `RuntimeConfig` → argv for llama-bench and llama-server alike (the only place with flags).

The two binaries spell some options differently (llama-bench takes comma lists and `0|1`, the
server takes `common/arg.cpp` options), and llama.cpp forks and older builds differ again
(`-mmp` vs `--load-mode`, `-fa 1` vs `-fa on`). A `Dialect`, read from the binary's `--help`,
captures those differences so one config means the same run on every build.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from edgebench.hostaddr import parse_endpoint

__all__ = [
    "KV_TYPES",
    "BenchTest",
    "Dialect",
    "FlashAttn",
    "RuntimeConfig",
    "bench_argv",
    "cpu_list",
    "cpu_mask_hex",
    "fit_params_argv",
    "imatrix_argv",
    "parse_cpus",
    "quantize_argv",
    "quantize_type_probe_argv",
    "rpc_server_argv",
    "server_argv",
]

# ggml types llama.cpp accepts for -ctk/-ctv (common/arg.cpp kv_cache_types).
KV_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
FlashAttn = Literal["on", "off", "auto"]
Affinity = Literal["taskset", "mask"]


_LATER_DEFAULTS: dict[str, Any] = {
    "kv_unified": None,
    "swa_full": False,
    "repack": True,
    "ctx_checkpoints": None,
    "rpc": (),
    "tensor_split": None,
}


class RuntimeConfig(BaseModel):
    """Everything that changes how llama.cpp runs a model; hashed into every result key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threads: int = Field(default=4, ge=1, le=512)
    threads_batch: int | None = Field(default=None, ge=1, le=512)
    cpus: tuple[int, ...] | None = None  # pin to these CPUs (big cores on big.LITTLE)
    affinity: Affinity = "taskset"  # taskset works with OpenMP builds, where -C is ignored
    ctx: int = Field(default=4096, ge=0)  # 0 = the model's ctx_train (llama.cpp semantics)
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: FlashAttn = "auto"
    batch: int = Field(default=2048, ge=1)
    ubatch: int = Field(default=512, ge=1)
    mmap: bool = True
    mlock: bool = False
    ngl: int = Field(default=0, ge=-1)  # -1 = all layers
    jinja: bool = True
    reasoning_budget: int | None = Field(default=None, ge=-1)
    parallel: int = Field(default=1, ge=1, le=256)
    # Options the memory planner must know about (they change buffer sizes), typed, not in `extra`:
    kv_unified: bool | None = None  # -kvu / -no-kvu; None: llama.cpp's default
    swa_full: bool = False  # --swa-full: the SWA cache at full context instead of the window
    repack: bool = True  # False: -nr (no CPU weight repacking)
    ctx_checkpoints: int | None = Field(default=None, ge=0)  # --ctx-checkpoints; None: default (32)
    # llama.cpp RPC: rpc-server workers ("host:port") whose devices take offloaded layers (-ngl),
    # split by tensor_split (one weight per worker; None: llama.cpp splits by free memory)
    rpc: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] | None = None
    extra: tuple[str, ...] = ()  # passed through verbatim, for options we do not model

    @model_validator(mode="before")
    @classmethod
    def _typed_from_extra(cls, data: Any) -> Any:
        """Older configs spelled the planner-relevant options in `extra`: move them to their fields."""
        if not isinstance(data, dict) or not data.get("extra"):
            return data
        extra, out, data = list(data["extra"]), [], dict(data)
        i = 0
        while i < len(extra):
            a = extra[i]
            if a in ("-kvu", "--kv-unified"):
                data["kv_unified"] = True
            elif a in ("-no-kvu", "--no-kv-unified"):
                data["kv_unified"] = False
            elif a == "--swa-full":
                data["swa_full"] = True
            elif a in ("-nr", "--no-repack"):
                data["repack"] = False
            elif a in ("--ctx-checkpoints", "-ctxcp") and i + 1 < len(extra):
                data["ctx_checkpoints"] = extra[i + 1]
                i += 1
            else:
                out.append(a)
            i += 1
        data["extra"] = tuple(out)
        return data

    @model_serializer(mode="wrap")
    def _stable(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Result keys hash this dump: the typed options added later are left out at their
        # defaults, so every row measured before they existed keeps its key.
        d: dict[str, Any] = handler(self)
        for k, default in _LATER_DEFAULTS.items():
            v = d.get(k, ...)
            if v == default or (isinstance(v, list) and tuple(v) == default):  # JSON mode: a list
                del d[k]
        return d

    @field_validator("cache_type_k", "cache_type_v")
    @classmethod
    def _kv_type(cls, v: str) -> str:
        if v.lower() not in KV_TYPES:
            raise ValueError(f"unknown KV cache type {v!r}; one of {', '.join(KV_TYPES)}")
        return v.lower()

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not v or any(c < 0 for c in v):
            raise ValueError("CPU list must name at least one CPU, all ≥ 0")
        return tuple(sorted(set(v)))

    @field_validator("rpc")
    @classmethod
    def _rpc(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for ep in v:
            parse_endpoint(ep)  # a ConfigError names the endpoint
        return v

    @field_validator("tensor_split")
    @classmethod
    def _split(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and (not v or any(not math.isfinite(x) or x < 0 for x in v) or not sum(v)):
            raise ValueError("tensor_split: one finite weight ≥ 0 per device, not all 0")
        return v

    @model_validator(mode="after")
    def _ubatch_le_batch(self) -> RuntimeConfig:
        if self.ubatch > self.batch:
            raise ValueError(f"ubatch ({self.ubatch}) cannot exceed batch ({self.batch})")
        return self

    def key(self) -> str:
        """Stable hash of every field, for result keys."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human label: t4 kv=q8_0/q8_0 fa=on ub=512 cpus=4-7."""
        parts = [f"t{self.threads}"]
        if self.threads_batch and self.threads_batch != self.threads:
            parts[0] += f"/{self.threads_batch}"
        parts.append(f"kv={self.cache_type_k}/{self.cache_type_v}")
        parts.append(f"fa={self.flash_attn}")
        parts.append(f"b={self.batch}/{self.ubatch}")
        if self.cpus:
            parts.append(f"cpus={cpu_list(self.cpus)}")
        return " ".join(parts)


class BenchTest(BaseModel):
    """One llama-bench test: pp<n_prompt>, tg<n_gen>, optionally at a context depth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_prompt: int = Field(default=512, ge=0)
    n_gen: int = Field(default=0, ge=0)
    depth: int = Field(default=0, ge=0)
    reps: int = Field(default=5, ge=1)
    warmup: bool = True

    @property
    def name(self) -> str:
        base = f"pp{self.n_prompt}" if self.n_prompt and not self.n_gen else f"tg{self.n_gen}"
        if self.n_prompt and self.n_gen:
            base = f"pp{self.n_prompt}+tg{self.n_gen}"
        return f"{base} @ d{self.depth}" if self.depth else base


class Dialect(BaseModel):
    """How a particular llama.cpp build spells the options that changed over time."""

    model_config = ConfigDict(frozen=True)

    bench_load_mode: bool = True  # llama-bench `-lm mmap|none|mlock` (new) vs `-mmp 0|1` (old)
    bench_fa_words: bool = True  # `-fa on|off|auto` (new) vs `-fa 0|1` (old)
    server_load_mode: bool = True  # server `--load-mode` (new) vs `--no-mmap`/`--mlock` (old)
    server_reasoning_budget: bool = True
    server_log_verbosity: bool = True  # `-lv 4` prints the buffer lines without --verbose's debug flood

    @classmethod
    def from_help(cls, bench_help: str, server_help: str) -> Dialect:
        return cls(
            bench_load_mode="--load-mode" in bench_help,
            bench_fa_words="on|off" in bench_help,
            server_load_mode="--load-mode" in server_help,
            server_reasoning_budget="--reasoning-budget" in server_help,
            server_log_verbosity="--log-verbosity" in server_help,
        )


def parse_cpus(spec: str) -> tuple[int, ...]:
    """'0-3,6' → (0, 1, 2, 3, 6). Raises ValueError naming the bad part."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"bad CPU range {part!r} (expected e.g. 0-3,6)") from None
    if not out:
        raise ValueError(f"empty CPU list {spec!r}")
    return tuple(sorted(out))


def cpu_list(cpus: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 6) → '0-3,6' (taskset -c syntax)."""
    runs: list[str] = []
    start = prev = cpus[0]
    for c in (*cpus[1:], None):
        if c is not None and c == prev + 1:
            prev = c
            continue
        runs.append(f"{start}-{prev}" if prev > start else str(start))
        if c is not None:
            start = prev = c
    return ",".join(runs)


def cpu_mask_hex(cpus: tuple[int, ...]) -> str:
    return hex(sum(1 << c for c in cpus))


def _taskset_prefix(cfg: RuntimeConfig) -> list[str]:
    if cfg.cpus is None or cfg.affinity != "taskset":
        return []
    return [shutil.which("taskset") or "taskset", "-c", cpu_list(cfg.cpus)]


def _common_kv(cfg: RuntimeConfig) -> list[str]:
    return ["-ctk", cfg.cache_type_k, "-ctv", cfg.cache_type_v]


def bench_argv(
    binary: str,
    model: str,
    cfg: RuntimeConfig,
    test: BenchTest,
    dialect: Dialect | None = None,
    *,
    verbose: bool = False,
) -> list[str]:
    """llama-bench argv for exactly one test, JSON on stdout (one config per process); `verbose`
    makes llama.cpp say why it refused a config (the line diagnose_failure reads)."""
    d = dialect or Dialect()
    argv = [
        *_taskset_prefix(cfg),
        binary,
        "-m",
        model,
        "-o",
        "json",
        "-p",
        str(test.n_prompt),
        "-n",
        str(test.n_gen),
        "-d",
        str(test.depth),
        "-r",
        str(test.reps),
        "-t",
        str(cfg.threads),
        "-b",
        str(cfg.batch),
        "-ub",
        str(cfg.ubatch),
        *_common_kv(cfg),
        "-ngl",
        str(999 if cfg.ngl < 0 else cfg.ngl),
    ]
    if d.bench_fa_words:
        argv += ["-fa", cfg.flash_attn]
    elif cfg.flash_attn != "auto":
        argv += ["-fa", "1" if cfg.flash_attn == "on" else "0"]
    if d.bench_load_mode:
        argv += ["-lm", _load_mode(cfg)]
    else:
        argv += ["-mmp", "1" if cfg.mmap else "0"]
    if cfg.cpus is not None and cfg.affinity == "mask":
        argv += ["-C", cpu_mask_hex(cfg.cpus), "--cpu-strict", "1"]
    if cfg.rpc:
        argv += ["-rpc", ",".join(cfg.rpc)]
    if cfg.tensor_split:
        argv += ["-ts", "/".join(f"{x:g}" for x in cfg.tensor_split)]  # llama-bench: / between devices
    if not test.warmup:
        argv.append("--no-warmup")
    if verbose:
        argv.append("-v")
    # llama-bench has no separate batch thread count; pp runs use -t as well.
    return argv + list(cfg.extra)


def server_argv(
    binary: str,
    model: str,
    cfg: RuntimeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    dialect: Dialect | None = None,
    verbose: bool = False,
) -> list[str]:
    """llama-server argv; `verbose` asks for the buffer-size lines the memory breakdown reads
    (they are LLAMA_LOG_INFO, printed from log verbosity 4 on)."""
    d = dialect or Dialect()
    argv = [
        *_taskset_prefix(cfg),
        binary,
        "-m",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "-c",
        str(cfg.ctx),
        "-t",
        str(cfg.threads),
        "-b",
        str(cfg.batch),
        "-ub",
        str(cfg.ubatch),
        *_common_kv(cfg),
        "-fa",
        cfg.flash_attn,
        "-ngl",
        str(999 if cfg.ngl < 0 else cfg.ngl),
        "-np",
        str(cfg.parallel),
        "--no-webui",
    ]
    if cfg.threads_batch is not None:
        argv += ["-tb", str(cfg.threads_batch)]
    if cfg.cpus is not None and cfg.affinity == "mask":
        argv += ["-C", cpu_mask_hex(cfg.cpus), "--cpu-strict", "1"]
    if d.server_load_mode:
        argv += ["--load-mode", _load_mode(cfg)]
    else:
        if not cfg.mmap:
            argv.append("--no-mmap")
        if cfg.mlock:
            argv.append("--mlock")
    argv.append("--jinja" if cfg.jinja else "--no-jinja")
    if cfg.reasoning_budget is not None and d.server_reasoning_budget:
        argv += ["--reasoning-budget", str(cfg.reasoning_budget)]
    argv += _planner_flags(cfg)
    if cfg.rpc:
        argv += ["--rpc", ",".join(cfg.rpc)]
    if cfg.tensor_split:
        argv += ["-ts", ",".join(f"{x:g}" for x in cfg.tensor_split)]
    if verbose:
        argv += ["-lv", "4"] if d.server_log_verbosity else ["--verbose"]
    return argv + list(cfg.extra)


def _planner_flags(cfg: RuntimeConfig) -> list[str]:
    """The typed options that change buffer sizes, as llama-server spells them."""
    out: list[str] = []
    if cfg.kv_unified is not None:
        out.append("-kvu" if cfg.kv_unified else "-no-kvu")
    if cfg.swa_full:
        out.append("--swa-full")
    if not cfg.repack:
        out.append("-nr")
    if cfg.ctx_checkpoints is not None:
        out += ["--ctx-checkpoints", str(cfg.ctx_checkpoints)]
    return out


def _load_mode(cfg: RuntimeConfig) -> str:
    if cfg.mmap and cfg.mlock:
        return "mmap+mlock"
    if cfg.mlock:
        return "mlock"
    return "mmap" if cfg.mmap else "none"


def fit_params_argv(binary: str, model: str, cfg: RuntimeConfig) -> list[str]:
    """llama-fit-params argv printing llama.cpp's own projection of the host buffers
    (`-fitp on`: model, context and compute MiB per device, from a no-alloc load of this config)."""
    argv = [binary, "-m", model, "-c", str(cfg.ctx), "-t", str(cfg.threads), "-b", str(cfg.batch)]
    argv += ["-ub", str(cfg.ubatch), *_common_kv(cfg), "-fa", cfg.flash_attn, "-np", str(cfg.parallel)]
    if not cfg.mmap:
        argv.append("--no-mmap")
    sizes = _planner_flags(cfg.model_copy(update={"ctx_checkpoints": None}))  # server-only option
    return [*argv, *sizes, "-fitp", "on"]


def quantize_argv(
    binary: str,
    src: str,
    dst: str,
    qtype: str,
    *,
    allow_requantize: bool = False,
    pure: bool = False,
    token_embedding_type: str | None = None,
    output_tensor_type: str | None = None,
    tensor_type_file: str | None = None,
    imatrix: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """llama-quantize argv; `allow_requantize` is for already-quantized sources (lossy twice);
    `pure` with a --tensor-type-file is a recipe (quant/): every type said, none guessed."""
    argv = [binary, *(["--pure"] if pure else []), *(["--allow-requantize"] if allow_requantize else [])]
    if token_embedding_type:
        argv += ["--token-embedding-type", token_embedding_type.lower()]
    if output_tensor_type:
        argv += ["--output-tensor-type", output_tensor_type.lower()]
    if tensor_type_file:
        argv += ["--tensor-type-file", tensor_type_file]
    if imatrix:
        argv += ["--imatrix", imatrix]
    return [*argv, src, dst, qtype, *([str(threads)] if threads else [])]


def quantize_type_probe_argv(binary: str, ggml_type: str) -> list[str]:
    """llama-quantize parses --tensor-type before it opens any file: "invalid ggml_type" for a type
    its ggml lacks, a missing-file error otherwise."""
    return [binary, "--tensor-type", f"x={ggml_type.lower()}", "/nonexistent.gguf", "/dev/null", "Q8_0"]


def imatrix_argv(binary: str, model: str, text: str, out: str, *, ctx: int, threads: int) -> list[str]:
    """llama-imatrix over a text (GGUF output, no perplexity pass)."""
    return [binary, "-m", model, "-f", text, "-o", out, "-c", str(ctx), "-b", str(ctx), "-t", str(threads),
            "--no-ppl"]  # fmt: skip


def rpc_server_argv(binary: str, host: str, port: int, *, threads: int, cache: bool) -> list[str]:
    """llama.cpp's rpc-server (-c: its tensor cache in LLAMA_CACHE)."""
    return [binary, "-H", host, "-p", str(port), "-t", str(threads), *(["-c"] if cache else [])]
