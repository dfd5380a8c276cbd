"""edgebench.toml: pydantic models with defaults that work with no file at all.

Lookup order for the file: `--config PATH` → `$EDGEBENCH_CONFIG` → `./edgebench.toml` →
`<data dir>/edgebench.toml`. The data dir is `$EDGEBENCH_HOME`, else the platform's user data dir.
The build cache is separate (`$EDGEBENCH_CACHE`, else the user cache dir) so tests can use a
throwaway data dir while reusing one llama.cpp build.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgebench.errors import ConfigError
from edgebench.models.gguf import clean_name
from edgebench.runtime.flags import KV_TYPES
from edgebench.textsafe import one_line

__all__ = [
    "BackendConfig",
    "BudgetConfig",
    "Config",
    "LlamaCppConfig",
    "ModelEntry",
    "RunConfig",
    "ServeConfig",
    "SweepConfig",
    "TierConfig",
    "load_config",
]


class _Strict(BaseModel):
    # NaN and ±inf are never a setting: `timeout_s = inf` passes gt=0 and breaks the timers.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _kv_types(v: list[str]) -> list[str]:
    if not v:
        raise ValueError("give at least one KV cache type")
    bad = [k for k in v if k not in KV_TYPES]
    if bad:
        raise ValueError(f"unknown KV cache type {bad[0]!r}; one of {', '.join(KV_TYPES)}")
    return v


class LlamaCppConfig(_Strict):
    bin_dir: Path | None = None  # a build of your own (llama.cpp, ik_llama.cpp, rk-llama.cpp)
    source: Path | None = None  # build from this source tree instead of the pinned one
    preset: str = "auto"
    cmake_args: list[str] = []  # appended after the preset's flags
    jobs: int | None = Field(default=None, ge=1)


class ModelEntry(_Strict):
    path: Path
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or clean_name(v) != v):
            raise ValueError(
                f"{one_line(repr(v))}: a model name is one printable line without [ ], not empty"
            )
        return v


class BackendConfig(_Strict):
    """An OpenAI-compatible endpoint that edgebench does not start itself (rkllama, Ollama, vLLM)."""

    name: str
    kind: Literal["llama-server", "openai", "rkllama", "ollama", "vllm"] = "openai"
    url: str
    model: str | None = None
    max_ctx: int | None = Field(default=None, ge=1)  # e.g. 4096 on the RK3588 NPU
    api_key_env: str | None = None
    memory_mib: float | None = Field(default=None, ge=0)  # what it holds in RAM: counted by `serve`

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class SweepConfig(_Strict):
    threads: list[int] | None = None  # None: chosen from the host (cores, big cluster)
    kv: list[str] = ["f16", "q8_0", "q4_0"]
    flash_attn: list[Literal["on", "off", "auto"]] = ["on", "off"]
    ubatch: list[int] = [512]
    depth: list[int] = [0]
    n_prompt: int = Field(default=512, ge=1)
    n_gen: int = Field(default=128, ge=1)
    ci_target: float = Field(default=0.03, gt=0, lt=1)  # stop repeating at ±3 % CI half-width
    max_reps: int = Field(default=10, ge=2)  # over all processes of one point
    # The CI is over llama-bench processes, not repetitions (stats.summarize_groups): each point
    # runs ≥ min_processes processes of reps_per_process repetitions.
    reps_per_process: int = Field(default=2, ge=1)
    min_processes: int = Field(default=3, ge=1)
    timeout_s: float = Field(default=600, gt=0)
    # Racing the finalists (measure/race.py): the best few per test kind, interleaved, paired rounds.
    race: bool = True
    race_size: int = Field(default=3, ge=2)
    race_margin: float = Field(default=0.10, ge=0, lt=1)  # also race configs this close to the best
    race_min_rounds: int = Field(default=4, ge=2)
    race_max_rounds: int = Field(default=8, ge=2)
    race_reps: int = Field(default=1, ge=1)  # repetitions per race (and screening) process
    # Thermal gating (measure/gate.py) before each measured process, where the host has sensors.
    gate: bool = True
    gate_temp_c: float = Field(default=70.0, gt=0)
    gate_wait_s: float = Field(default=120.0, ge=0)
    gate_clock_tolerance: float = Field(default=0.05, ge=0, lt=1)

    @model_validator(mode="after")
    def _enough_reps(self) -> SweepConfig:
        if self.max_reps < self.min_processes:
            raise ValueError(f"max_reps ({self.max_reps}) must be ≥ min_processes ({self.min_processes})")
        if self.race_max_rounds < self.race_min_rounds:
            raise ValueError(
                f"race_max_rounds ({self.race_max_rounds}) must be ≥ race_min_rounds ({self.race_min_rounds})"
            )
        return self

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(t < 1 for t in v)):
            raise ValueError("thread counts must be ≥ 1")
        return v

    @field_validator("kv")
    @classmethod
    def _kv(cls, v: list[str]) -> list[str]:
        return _kv_types(v)


class BudgetConfig(_Strict):
    ram_reserve_mib: int = Field(default=1024, ge=0)  # left to the OS when judging "fits"
    swap_growth_mib: int = Field(default=64, ge=0)  # more swap than this during a run = not stable
    latency_s: float = Field(default=30.0, gt=0)  # interactive budget for "best default"
    quality_latency_s: float = Field(default=120.0, gt=0)
    # Decide-stage rule thresholds (decide/rank.py, decide/route.py).
    tool_call_floor: float = Field(default=0.5, ge=0, le=1)  # tool_call pass rate for "best default"
    context_floor: int = Field(default=8192, ge=0)  # stable context for "best default" / practical
    tool_refusal_max: float = Field(default=0.5, ge=0, le=1)  # refused + no_call share of tool runs
    loop_rate_max: float = Field(default=0.25, ge=0, le=1)  # timeout + empty share of all runs
    ram_tie_frac: float = Field(default=0.05, ge=0, lt=1)  # RAM closer than this is not "less" (Pareto)

    def usable_mib(self, ram_total_mib: float) -> float:
        """RAM a model may use: the host's total minus what is left to the OS."""
        return float(ram_total_mib - self.ram_reserve_mib)


class RunConfig(_Strict):
    """What `edgebench run` measures: lighter than each stage's own defaults, to finish in minutes."""

    n_prompt: int = Field(default=128, ge=1)
    n_gen: int = Field(default=32, ge=1)
    ci_target: float = Field(default=0.05, gt=0, lt=1)
    max_reps: int = Field(default=5, ge=2)
    kv: list[str] = ["f16", "q8_0"]
    flash_attn: list[Literal["on", "off", "auto"]] = ["on"]
    # None: the serving spec's KV type, so the context proven is the one that will be served
    context_kv: str | None = None
    # decode (only) is also measured at these deeper contexts (the winner only), for the depth plot
    depths: list[int] = [0, 1024]
    # the run's race is lighter than [sweep]'s: two finalists, at most 4 interleaved rounds
    race_size: int = Field(default=2, ge=2)
    race_max_rounds: int = Field(default=4, ge=2)
    # largest context the probe tries in a run (`edgebench context` goes on to ctx_train)
    context_max: int = Field(default=4096, ge=256)
    suite: str = "seed14"
    suite_dirs: list[Path] = []
    samples: int = Field(default=0, ge=0)
    variants: bool = False  # canonical prompts only in a run; `edgebench quality` runs every variant
    requantized_variants: bool = True  # Q4_0 / Q8_0 copies of the default model, labelled as such

    # Checked here, at load, not when the run reaches the stage after sweeping for an hour.
    @field_validator("kv")
    @classmethod
    def _kv(cls, v: list[str]) -> list[str]:
        return _kv_types(v)

    @field_validator("context_kv")
    @classmethod
    def _context_kv(cls, v: str | None) -> str | None:
        return None if v is None else _kv_types([v])[0]

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if not v or v[0] != 0 or any(d < 0 for d in v) or len(set(v)) != len(v):
            raise ValueError("start with 0, then distinct deeper contexts, e.g. [0, 2048]")
        return v

    @field_validator("flash_attn")
    @classmethod
    def _fa(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one of on, off, auto")
        return v


class QualityConfig(_Strict):
    # Code items run only inside bubblewrap; where it is missing or cannot create namespaces they are
    # not scored. True runs them anyway, in a plain subprocess with limits: the host is exposed.
    allow_unsandboxed: bool = False


class TierConfig(_Strict):
    """One tier of `edgebench serve` (interactive, quality, batch, route or a use case's name)."""

    ttl_s: float | None = Field(default=None, gt=0)  # idle unload; None: [serve] ttl_s
    cpus: Literal["big", "little", "all"] | None = None  # core pinning on big.LITTLE; None: by tier


class ServeConfig(_Strict):
    """`edgebench serve`: the gateway's limits (every one has a default that works)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    api_key_file: Path | None = None  # one line; or $EDGEBENCH_API_KEY, or --api-key
    budget_mib: float | None = Field(default=None, gt=0)  # None: host RAM − [budgets] ram_reserve_mib
    ttl_s: float = Field(default=600, gt=0)  # idle unload of a model no tier says otherwise for
    ready_timeout_s: float = Field(default=300, gt=0)
    queue_depth: int = Field(default=16, ge=1)  # waiting requests per model beyond its slots: 429 past it
    max_body_bytes: int = Field(default=4 * 2**20, ge=1024)
    stall_k: float = Field(default=20, gt=1)  # stall = no token for max(k × measured inter-token time,
    stall_floor_s: float = Field(default=10, gt=0)  # floor)
    cors_origins: list[str] = []  # none: no CORS headers at all
    tiers: dict[str, TierConfig] = {}


class Config(_Strict):
    data_dir: Path
    cache_dir: Path
    llama_cpp: LlamaCppConfig = LlamaCppConfig()
    models: list[ModelEntry] = []
    backends: list[BackendConfig] = []
    sweep: SweepConfig = SweepConfig()
    budgets: BudgetConfig = BudgetConfig()
    run: RunConfig = RunConfig()
    quality: QualityConfig = QualityConfig()
    serve: ServeConfig = ServeConfig()
    source_file: Path | None = None

    @field_validator("models")
    @classmethod
    def _unique_names(cls, v: list[ModelEntry]) -> list[ModelEntry]:
        names = [m.name for m in v if m.name is not None]
        if dup := next((n for n in names if names.count(n) > 1), None):
            raise ValueError(f"model name {dup!r} is given to {names.count(dup)} models; one file per name")
        return v

    @property
    def store_path(self) -> Path:
        return self.data_dir / "edgebench.sqlite"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def builds_dir(self) -> Path:
        return self.cache_dir / "llama.cpp"


def default_data_dir() -> Path:
    env = os.environ.get("EDGEBENCH_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("edgebench"))


def default_cache_dir() -> Path:
    env = os.environ.get("EDGEBENCH_CACHE")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("edgebench"))


def _find_file(explicit: Path | None, data_dir: Path) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit}: not found")
        return explicit
    env = os.environ.get("EDGEBENCH_CONFIG")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ConfigError(f"config file {p} (from EDGEBENCH_CONFIG): not found")
        return p
    for p in (Path.cwd() / "edgebench.toml", data_dir / "edgebench.toml"):
        if p.is_file():
            return p
    return None


def load_config(path: Path | None = None) -> Config:
    """Read and validate the config; every problem becomes one ConfigError naming the field."""
    data_dir = default_data_dir()
    file = _find_file(path, data_dir)
    raw: dict[str, object] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {one_line(str(exc))}") from exc
        except RecursionError:
            raise ConfigError(f"{file}: not valid TOML: nested too deeply") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read: {exc}") from exc
        # data_dir/cache_dir written in the file are relative to it, like every other path there
        for key in ("data_dir", "cache_dir"):
            if isinstance(raw.get(key), str):
                raw[key] = str(_rel(file.parent, Path(str(raw[key]))))
    raw.setdefault("data_dir", str(data_dir))
    raw.setdefault("cache_dir", str(default_cache_dir()))
    raw["source_file"] = str(file) if file else None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        origin = file or "config"
        raise ConfigError(f"{origin}: {where}: {one_line(msg)}") from exc
    # Relative paths in the file are relative to the file, like every other tool's config.
    if file is not None:
        base = file.parent
        cfg = cfg.model_copy(
            update={
                "models": [m.model_copy(update={"path": _rel(base, m.path)}) for m in cfg.models],
                "run": cfg.run.model_copy(
                    update={
                        "suite_dirs": [_rel(base, d) for d in cfg.run.suite_dirs],
                        "suite": _suite_rel(base, cfg.run.suite),
                    }
                ),
                "serve": cfg.serve.model_copy(
                    update={
                        "api_key_file": _rel(base, cfg.serve.api_key_file) if cfg.serve.api_key_file else None
                    }
                ),
                "llama_cpp": cfg.llama_cpp.model_copy(
                    update={
                        "bin_dir": _rel(base, cfg.llama_cpp.bin_dir) if cfg.llama_cpp.bin_dir else None,
                        "source": _rel(base, cfg.llama_cpp.source) if cfg.llama_cpp.source else None,
                    }
                ),
            }
        )
    _check_suite(file or "config", cfg.run)
    return cfg


def _rel(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else (base / p)


_SUITE_SUFFIXES = (".yaml", ".yml")


def _is_suite_path(suite: str) -> bool:
    # quality.suite.load_suite's rule: a .yaml name or a path with a separator is a file
    return Path(suite).suffix in _SUITE_SUFFIXES or "/" in suite


def _suite_rel(base: Path, suite: str) -> str:
    return str(_rel(base, Path(suite))) if _is_suite_path(suite) else suite


def _check_suite(origin: Path | str, run: RunConfig) -> None:
    """[run] suite and suite_dirs exist (found by name only; the YAML is parsed when it runs)."""
    from edgebench.quality.suite import BUILTIN_DIR  # the quality package is loaded only here

    for d in run.suite_dirs:
        if not d.is_dir():
            raise ConfigError(f"{origin}: run.suite_dirs: {d}: not a directory")
    if _is_suite_path(run.suite):
        if not Path(run.suite).expanduser().is_file():
            raise ConfigError(f"{origin}: run.suite: {run.suite!r}: no such file")
        return
    dirs = [*run.suite_dirs, BUILTIN_DIR]
    if any((d / f"{run.suite}{ext}").is_file() for d in dirs for ext in _SUITE_SUFFIXES):
        return
    known = sorted({p.stem for d in dirs for p in d.iterdir() if p.suffix in _SUITE_SUFFIXES})
    raise ConfigError(f"{origin}: run.suite: {run.suite!r}: not found (available: {', '.join(known)})")
