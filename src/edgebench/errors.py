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

__all__ = [
    "BuildError",
    "ConfigError",
    "EdgebenchError",
    "ModelError",
    "ProcError",
    "RuntimeNotFound",
    "StoreError",
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
