"""Registered models: GGUF metadata read once, sha256 cached by (path, size, mtime).

A registered name is an identifier: one file per name, printable, on one line.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from edgebench.errors import ConfigError, ModelError
from edgebench.models.gguf import ModelInfo, clean_name, read_model_info
from edgebench.store import Store
from edgebench.textsafe import one_line

__all__ = ["add_model", "check_name", "list_models", "resolve_model"]

# Stored with each cached read; a record from before the current metadata checks is read again
# (its sha256 is kept, the header walk is cheap).
_CHECKS = 2
_CHECKS_KEY = "_edgebench_checks"


def check_name(name: str, what: str = "model name") -> str:
    """A model name given by the user: non-empty, printable, one line."""
    if not name.strip():
        raise ConfigError(f"{what} {name!r}: empty")
    if clean_name(name) != name:
        raise ConfigError(
            f"{what} {one_line(repr(name))}: control characters and square brackets are not allowed in a name"
        )
    return name


def _resolved(path: Path) -> Path:
    shown = one_line(str(path))
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # the store, llama.cpp's argv and our JSON all want UTF-8
        raise ModelError(f"{shown}: file name is not valid UTF-8; rename the file") from None
    try:
        return path.expanduser().resolve()
    except RuntimeError:  # Python < 3.13 reports a symlink loop this way
        raise ModelError(f"{shown}: symlink loop") from None
    except OSError as exc:
        raise ModelError(f"{shown}: cannot resolve: {exc.strerror or exc}") from None


def add_model(store: Store, path: Path, name: str | None = None, *, replace: bool = False) -> ModelInfo:
    """Read (or reuse the cached read of) a GGUF and register it under `name`.

    An explicit name already held by another file is refused unless `replace` moves it here; a
    name taken from the GGUF's general.name that another file holds (two quantizations of one
    model) falls back to the file name.
    """
    if name is not None:
        check_name(name)
    path = _resolved(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a loop that resolve() left in place
            raise ModelError(f"{path}: symlink loop") from None
        raise ModelError(f"{path}: cannot read: {exc.strerror}") from exc
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    cached = store.cached_model(str(path), st.st_size, st.st_mtime_ns)
    if cached is not None and cached.get(_CHECKS_KEY) == _CHECKS:
        info = ModelInfo.model_validate(cached)
    else:
        info = read_model_info(path, sha256=cached["sha256"] if cached else None)
        cached = None
    final = _unique_name(store, info, name, replace)
    if cached is not None and final == info.name:
        return info
    info = info.model_copy(update={"name": final})
    record: dict[str, Any] = {**info.model_dump(mode="json"), _CHECKS_KEY: _CHECKS}
    with store.transaction():  # the name check and the write as one step against concurrent adds
        holders = _holders(store, final, info.path)
        if holders and (name is None or not replace):
            raise _taken(final, holders[0], info.path)
        for other in holders:
            store.remove_model(other.path)
        store.put_model(str(path), st.st_size, st.st_mtime_ns, info.sha256, info.name, record)
    return info


def _holders(store: Store, name: str, path: str) -> list[ModelInfo]:
    return [m for m in list_models(store) if m.name == name and m.path != path]


def _taken(name: str, holder: ModelInfo, path: str) -> ModelError:
    return ModelError(
        f"model name {name!r}: already registered for {holder.path}; choose another --name, "
        f"or --replace to give the name to {path}"
    )


def _unique_name(store: Store, info: ModelInfo, name: str | None, replace: bool) -> str:
    if name is not None:
        holders = _holders(store, name, info.path)
        if holders and not replace:
            raise _taken(name, holders[0], info.path)
        return name
    stem = clean_name(Path(info.path).stem) or "model"
    for candidate in (info.name, stem, f"{stem}-{info.sha256[:8]}"):
        if not _holders(store, candidate, info.path):
            return candidate
    raise ModelError(f"{info.path}: every name it could take is registered; give it one with --name")


def list_models(store: Store) -> list[ModelInfo]:
    return [ModelInfo.model_validate(m) for m in store.models()]


def resolve_model(store: Store, ref: str) -> ModelInfo:
    """A model by registered name, path, or sha256 prefix (≥ 8 hex digits); a path is added."""
    models = list_models(store)
    named = [m for m in models if ref in (m.name, m.path)]
    if len(named) > 1:  # a store written before names were unique
        paths = ", ".join(m.path for m in named)
        raise ModelError(f"model {ref!r}: names {len(named)} files ({paths}); give a path or sha256 prefix")
    if named:
        return named[0]
    if len(ref) >= 8:
        hits = [m for m in models if m.sha256.startswith(ref.lower())]
        if len(hits) == 1:
            return hits[0]
    p = Path(ref).expanduser()
    if p.exists() or p.is_symlink() or ref.endswith(".gguf"):
        return add_model(store, p)
    known = ", ".join(m.name for m in models) or "none registered"
    raise ModelError(f"model {ref!r}: not a registered name, path or sha256 prefix (known: {known})")
