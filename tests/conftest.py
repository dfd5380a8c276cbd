"""Shared fixtures: a throwaway data dir per test; one real llama.cpp build and models per session.

The llama.cpp build lives in the user cache (~/.cache/edgebench or $EDGEBENCH_CACHE) so every
test session, `make run` and CI reuse it; the first session builds it (~5-10 min on 2 cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebench.config import load_config
from edgebench.models.default import assemble_default_model
from edgebench.runtime.locate import Runtime
from edgebench.setup import ensure_runtime
from edgebench.testing.synth import write_tiny_llama


@pytest.fixture(autouse=True)
def _data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "edgebench-home"
    monkeypatch.setenv("EDGEBENCH_HOME", str(home))
    monkeypatch.delenv("EDGEBENCH_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no stray ./edgebench.toml from the checkout
    yield home


@pytest.fixture(scope="session")
def runtime() -> Runtime:
    """The real llama.cpp build (built on first use, then reused from the cache)."""
    cfg = load_config()
    return ensure_runtime(cfg)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """gemma-3-270m from the PyPI package, assembled once into the shared cache."""
    cfg = load_config()
    return assemble_default_model(cfg.cache_dir / "models")
