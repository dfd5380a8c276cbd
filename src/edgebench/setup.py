"""Set-up that every pipeline run needs: a llama.cpp build, the models, the host record.

`doctor_report` only looks; `ensure_runtime` / `ensure_models` also fix what they can (build
llama.cpp, assemble the default model), so `edgebench run` works on a fresh machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.config import Config
from edgebench.errors import BuildError, EdgebenchError, RuntimeNotFound
from edgebench.host.probe import HostInfo, probe_host
from edgebench.models.default import (
    CHAT_MODEL_NAME,
    DEFAULT_MODEL_NAME,
    assemble_default_model,
    fetch_chat_model,
)
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import add_model, list_models
from edgebench.runtime.build import build, top_up_cached
from edgebench.runtime.locate import Runtime, locate
from edgebench.runtime.presets import resolve_preset
from edgebench.store import Store

__all__ = ["DoctorReport", "doctor_report", "ensure_models", "ensure_runtime", "locate_quietly"]


class DoctorReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    host: HostInfo
    runtime: Runtime | None
    runtime_problem: str | None  # what is wrong and the fix, when runtime is None
    models: list[ModelInfo]
    data_dir: str
    cache_dir: str
    config_file: str | None
    store: str


def doctor_report(
    cfg: Config, store: Store, *, sysroot: Path = Path("/"), bandwidth: bool = True
) -> DoctorReport:
    host = probe_host(sysroot, measure_bandwidth=bandwidth and sysroot == Path("/"))
    runtime: Runtime | None = None
    problem: str | None = None
    try:
        runtime = locate(bin_dir=cfg.llama_cpp.bin_dir, builds_dir=cfg.builds_dir)
    except EdgebenchError as exc:
        problem = str(exc)
    return DoctorReport(
        host=host,
        runtime=runtime,
        runtime_problem=problem,
        models=list_models(store),
        data_dir=str(cfg.data_dir),
        cache_dir=str(cfg.cache_dir),
        config_file=str(cfg.source_file) if cfg.source_file else None,
        store=str(cfg.store_path),
    )


def locate_quietly(cfg: Config) -> Runtime | None:
    """The build in use, or None (a report can be written without one)."""
    try:
        return locate(bin_dir=cfg.llama_cpp.bin_dir, builds_dir=cfg.builds_dir)
    except EdgebenchError:
        return None


def ensure_runtime(cfg: Config, on_progress: Callable[[int, str], None] | None = None) -> Runtime:
    """Locate llama.cpp; if there is none (and none is configured), build the pinned source."""
    try:
        rt = locate(bin_dir=cfg.llama_cpp.bin_dir, builds_dir=cfg.builds_dir)
        info_file = Path(rt.bin_dir).parent.parent / "build-info.json"
        if cfg.llama_cpp.bin_dir is None and rt.missing and info_file.is_file():
            # a build cached by an older edgebench: build just the tools it lacks, into it; if
            # that fails, the tool's first use says so (Runtime.binary: rebuild with --force)
            with contextlib.suppress(BuildError):
                top_up_cached(info_file, cfg.llama_cpp.jobs, on_progress)
                rt = locate(bin_dir=None, builds_dir=cfg.builds_dir)
        return rt
    except RuntimeNotFound:
        if cfg.llama_cpp.bin_dir is not None:
            raise  # the user named a build; building another one behind their back would mislead
    preset = resolve_preset(cfg.llama_cpp.preset)
    build(
        builds_dir=cfg.builds_dir,
        cache_dir=cfg.cache_dir,
        preset=preset,
        source=cfg.llama_cpp.source,
        extra_args=list(cfg.llama_cpp.cmake_args),
        jobs=cfg.llama_cpp.jobs,
        on_progress=on_progress,
    )
    return locate(bin_dir=None, builds_dir=cfg.builds_dir)


def ensure_models(cfg: Config, store: Store) -> list[ModelInfo]:
    """The configured models, or the embedded default set when none are configured: the base
    gemma-3-270m first (its requantized variants are made from it), then SmolLM2-135M-Instruct."""
    if cfg.models:
        # the config is declarative: its [[models]] name follows the path it gives now
        return [add_model(store, m.path, m.name, replace=m.name is not None) for m in cfg.models]
    base = add_model(store, assemble_default_model(cfg.models_dir), DEFAULT_MODEL_NAME)
    chat = add_model(store, fetch_chat_model(cfg.cache_dir, cfg.models_dir), CHAT_MODEL_NAME)
    return [base, chat]
