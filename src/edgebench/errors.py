"""One exception tree; the CLI turns any of these into a single `edgebench: error: …` line.

    EdgebenchError
     ├── ConfigError        bad edgebench.toml value or CLI option (names the field and the reason)
     ├── ModelError         a GGUF that cannot be read (names the file and the cause)
     ├── RuntimeNotFound    no llama.cpp binary where we looked (says how to fix it)
     ├── BuildError         a llama.cpp source build that failed (last compiler lines + log path)
     ├── ProcError          a subprocess that could not be started
     └── StoreError         the SQLite store cannot be opened or migrated

Messages are written for the user: they name the object first, then the cause.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "BuildError",
    "ConfigError",
    "EdgebenchError",
    "ModelError",
    "ProcError",
    "RuntimeNotFound",
    "StoreError",
    "validation_message",
]


class EdgebenchError(Exception):
    """Base class of every error edgebench reports to the user."""


class ConfigError(EdgebenchError):
    pass


class ModelError(EdgebenchError):
    pass


class RuntimeNotFound(EdgebenchError):
    pass


class BuildError(EdgebenchError):
    pass


class ProcError(EdgebenchError):
    pass


class StoreError(EdgebenchError):
    pass


def validation_message(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line naming the record, the field and the cause (its
    own str() is a multi-line dump with a URL)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    field = f"{exc.title}.{where}" if where else exc.title
    got = f" (got {err['input']!r})" if where and not isinstance(err.get("input"), dict | list) else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{field}: {str(err['msg']).removeprefix('Value error, ')}{got}{more}"
