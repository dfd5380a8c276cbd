"""Option values checked before a command does any work: each failure is a ConfigError naming the
option and the value as typed (typer's own range checks let NaN and inf through)."""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from pathlib import Path

from edgebench.errors import ConfigError

__all__ = ["int_list", "out_dir", "out_file", "positive", "word_list"]


def int_list(opt: str, text: str | None, *, minimum: int) -> list[int] | None:
    """'2,4,6' → [2, 4, 6]; None when the option was not given. An empty list is an error: `-t ""`
    must not quietly mean "the default sweep"."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{opt} {text!r}: expected comma-separated integers, e.g. 1,2,4") from None
    if not values:
        raise ConfigError(f"{opt} {text!r}: no values; give e.g. 1,2,4 or leave the option out")
    if any(v < minimum for v in values):
        raise ConfigError(f"{opt} {text!r}: values must be ≥ {minimum}")
    return values


def word_list(opt: str, text: str | None, allowed: Collection[str]) -> list[str] | None:
    if text is None:
        return None
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise ConfigError(f"{opt} {text!r}: no values; one or more of {', '.join(allowed)}")
    if bad := [v for v in values if v not in allowed]:
        raise ConfigError(f"{opt} {text!r}: unknown {bad[0]!r}; one of {', '.join(allowed)}")
    return values


def positive(opt: str, value: float | None) -> float | None:
    """A finite number > 0 (timeouts, budgets), or None when not given."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{opt} {value:g}: must be a finite number > 0")
    return value


def _writable_dir(opt: str, path: Path, d: Path) -> None:
    if not d.is_dir():
        raise ConfigError(f"{opt} {path}: {d} is not a directory")
    if not os.access(d, os.W_OK | os.X_OK):
        raise ConfigError(f"{opt} {path}: {d} is not writable")


def out_file(opt: str, path: Path | None) -> Path | None:
    """A file we will write at the end of a long run: its directory must be there and writable now."""
    if path is None:
        return None
    if path.is_dir():
        raise ConfigError(f"{opt} {path}: is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{opt} {path}: the file is not writable")
    _writable_dir(opt, path, path.parent if str(path.parent) else Path("."))
    return path


def out_dir(opt: str, path: Path | None) -> Path | None:
    """A directory we will write files into (created if missing, like mkdir -p)."""
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{opt} {path}: not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{opt} {path}: cannot create: {exc.strerror or exc}") from None
    _writable_dir(opt, path, path)
    return path


def rpc_endpoints(text: str | None) -> tuple[str, ...]:
    """'10.0.0.2:50052,10.0.0.3:50052' → the endpoints, each checked as host:port."""
    if text is None:
        return ()
    from edgebench.hostaddr import parse_endpoint

    eps = [x.strip() for x in text.split(",") if x.strip()]
    if not eps:
        raise ConfigError(f"--rpc {text!r}: give host:port of each worker, comma-separated")
    for ep in eps:
        parse_endpoint(ep)
    return tuple(eps)


def split_weights(text: str | None, rpc: str | None) -> tuple[float, ...] | None:
    """'1,1' → one weight per RPC worker (--tensor-split); only with --rpc."""
    if text is None:
        return None
    if rpc is None:
        raise ConfigError("--tensor-split: only with --rpc (it splits the layers over the workers)")
    try:
        w = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--tensor-split {text!r}: comma-separated weights, e.g. 1,1") from None
    n = len(rpc_endpoints(rpc))
    if len(w) != n or any(not math.isfinite(x) or x < 0 for x in w) or not sum(w):
        raise ConfigError(
            f"--tensor-split {text!r}: {n} finite weights ≥ 0 (one per --rpc worker), not all 0"
        )
    return w
