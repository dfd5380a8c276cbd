"""Shared set-up for the benchmark scripts: the real build, gemma-3-270m, the host, a temp store."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgebench.config import load_config
from edgebench.host.probe import HostInfo, probe_host
from edgebench.models.default import assemble_default_model
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.runtime.locate import Runtime
from edgebench.setup import ensure_runtime
from edgebench.store import Store


def setup() -> tuple[Runtime, HostInfo, ModelInfo]:
    cfg = load_config()
    runtime = ensure_runtime(cfg)
    model = read_model_info(assemble_default_model(cfg.cache_dir / "models"))
    return runtime, probe_host(measure_bandwidth=True), model


def fresh_store() -> Store:
    """A new store each time: a benchmark must measure, never resume."""
    return Store(Path(tempfile.mkdtemp(prefix="edgebench-bench-")) / "bench.sqlite")
