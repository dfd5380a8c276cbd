"""Registered models: GGUF metadata read once, sha256 cached by (path, size, mtime)."""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import ModelError
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.store import Store

__all__ = ["add_model", "list_models", "resolve_model"]


def add_model(store: Store, path: Path, name: str | None = None) -> ModelInfo:
    """Read (or reuse the cached read of) a GGUF and register it under `name`."""
    path = path.expanduser().resolve()
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read: {exc.strerror}") from exc
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    cached = store.cached_model(str(path), st.st_size, st.st_mtime_ns)
    if cached is not None:
        info = ModelInfo.model_validate(cached)
        if name and name != info.name:
            info = info.model_copy(update={"name": name})
            store.put_model(
                str(path), st.st_size, st.st_mtime_ns, info.sha256, info.name, info.model_dump(mode="json")
            )
        return info
    info = read_model_info(path)
    if name:
        info = info.model_copy(update={"name": name})
    store.put_model(
        str(path), st.st_size, st.st_mtime_ns, info.sha256, info.name, info.model_dump(mode="json")
    )
    return info


def list_models(store: Store) -> list[ModelInfo]:
    return [ModelInfo.model_validate(m) for m in store.models()]


def resolve_model(store: Store, ref: str) -> ModelInfo:
    """A model by registered name, path, or sha256 prefix (≥ 8 hex digits); a path is added."""
    models = list_models(store)
    for m in models:
        if ref in (m.name, m.path):
            return m
    if len(ref) >= 8:
        hits = [m for m in models if m.sha256.startswith(ref.lower())]
        if len(hits) == 1:
            return hits[0]
    p = Path(ref).expanduser()
    if p.exists() or ref.endswith(".gguf"):
        return add_model(store, p)
    known = ", ".join(m.name for m in models) or "none registered"
    raise ModelError(f"model {ref!r}: not a registered name, path or sha256 prefix (known: {known})")
