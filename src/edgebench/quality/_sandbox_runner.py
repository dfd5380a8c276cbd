"""Runs inside the sandbox: import the model's code, call its function, write back plain values.

Executed as a script (`python -I -S runner.py JOB OUT`) by an interpreter that sees nothing of
edgebench, so it uses only the standard library. It never sees expected values: the job holds the
code and each call's arguments; the checker compares what comes back. Everything here shares a
process with the model's code and can be tampered with by it, which is why the checker trusts
nothing from this side beyond plain JSON it decodes strictly (`decode`, used by the checker too).

OUT gets one JSON line when the runner starts, one when the code is loaded, then one per call,
each flushed at once, so a call that hangs or kills the process still leaves the earlier ones.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import resource
import sys
from typing import Any

__all__ = ["Opaque", "decode", "encode"]

_MAX_DEPTH = 100
_BIG_INT_BITS = 12_000  # ~3600 digits: beyond this an int goes as hex (json's int limit is 4300 digits)
_MAX_RESULT_CHARS = 4 << 20  # one call's result; the whole file is capped by RLIMIT_FSIZE (16 MiB)


class Opaque:
    """A returned object that is not a plain value: equal to nothing but itself."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


def encode(value: Any, depth: int = 0) -> Any:
    """A plain value as JSON with tags for what JSON lacks. Subclasses of builtin types (Counter,
    defaultdict, namedtuple, an int subclass) are sent as their base type's value, read through
    the base type's own methods so an overridden `__eq__` / `__iter__` / `__str__` does not count."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    d = depth + 1
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        n = int.__int__(value)
        return n if n.bit_length() < _BIG_INT_BITS else {"$": "int", "v": hex(n)}
    if isinstance(value, float):
        x = float.__float__(value)
        return x if math.isfinite(x) else {"$": "float", "v": repr(x)}
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [encode(x, d) for x in list.__iter__(value)]
    if isinstance(value, tuple):
        return {"$": "tuple", "v": [encode(x, d) for x in tuple.__iter__(value)]}
    if isinstance(value, dict):
        return {"$": "dict", "v": [[encode(k, d), encode(v, d)] for k, v in dict.items(value)]}
    if isinstance(value, frozenset):
        return {"$": "frozenset", "v": [encode(x, d) for x in frozenset.__iter__(value)]}
    if isinstance(value, set):
        return {"$": "set", "v": [encode(x, d) for x in set.__iter__(value)]}
    if isinstance(value, (bytes, bytearray)):
        return {"$": "bytes", "v": bytes(value).hex()}
    if isinstance(value, complex):
        return {"$": "complex", "v": [encode(value.real, d), encode(value.imag, d)]}
    return {"$": "opaque", "v": type(value).__qualname__[:80]}


def decode(data: Any, depth: int = 0) -> Any:
    """The checker's side: only builtin plain values come out; anything else raises ValueError."""
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deeply")
    d = depth + 1
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(x, d) for x in data]
    if type(data) is not dict or set(data) != {"$", "v"}:
        raise ValueError(f"not an encoded value: {type(data).__name__}")
    tag, v = data["$"], data["v"]
    try:
        if tag == "opaque" and type(v) is str:
            return Opaque(v)
        if tag == "int" and type(v) is str:
            return int(v, 16)
        if tag == "float" and v in ("nan", "inf", "-inf"):
            return float(v)
        if tag == "bytes" and type(v) is str:
            return bytes.fromhex(v)
        if type(v) is not list:
            raise ValueError(f"{tag}: not a list")
        items = [decode(x, d) for x in v]
        if tag == "tuple":
            return tuple(items)
        if tag == "set":
            return set(items)
        if tag == "frozenset":
            return frozenset(items)
        if tag == "complex" and len(items) == 2 and all(type(x) in (int, float) for x in items):
            return complex(items[0], items[1])
        if tag == "dict" and all(type(kv) is list and len(kv) == 2 for kv in items):
            return {k: val for k, val in items}
    except TypeError as exc:  # an unhashable key or set member
        raise ValueError(f"{tag}: {exc}") from exc
    raise ValueError(f"unknown tag {tag!r}")


def _describe(exc: BaseException) -> dict[str, str]:
    try:
        message = str(exc)[:300]
    except Exception:  # a model-defined exception whose __str__ fails
        message = ""
    return {"type": type(exc).__name__[:80], "message": message}


def main(job_path: str, out_path: str) -> None:
    me = os.getpid()
    out = open(out_path, "w", encoding="utf-8")  # noqa: SIM115 (held for the whole run)

    def emit(record: dict[str, Any]) -> None:
        if os.getpid() != me:  # a child the model forked must not speak for the runner
            os._exit(0)
        line = json.dumps(record, allow_nan=False)
        if len(line) > _MAX_RESULT_CHARS:
            line = json.dumps({"unserialisable": f"the result is too large ({len(line)} characters as JSON)"})
        out.write(line + "\n")
        out.flush()

    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    # Per user namespace (bwrap) or per throwaway uid (root): a fork bomb stops here.
    resource.setrlimit(resource.RLIMIT_NPROC, (job["nproc"], job["nproc"]))
    sys.set_int_max_str_digits(0)  # the model may print or build large ints; that is its business
    emit({"started": True})
    # Not "__main__": a demo under `if __name__ == "__main__":` (often with input()) does not run.
    ns: dict[str, Any] = {"__name__": "solution", "__builtins__": builtins}
    load_error = None
    try:
        exec(compile(job["setup"], "setup.py", "exec"), ns)
        exec(compile(job["code"], "solution.py", "exec"), ns)
    except BaseException as exc:  # SystemExit and input()'s EOFError included: reported, not fatal
        load_error = _describe(exc)
    fn = ns.get(job["entry"])
    emit({"loaded": callable(fn), "error": load_error})
    if not callable(fn):
        os._exit(0)
    for call in job["calls"]:
        args, kwargs = decode(call["args"]), decode(call["kwargs"])
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            emit({"raised": _describe(exc)})
            continue
        try:
            emit({"value": encode(value)})
        except (ValueError, RecursionError) as exc:
            emit({"unserialisable": str(exc)[:200]})
    out.close()
    os._exit(0)  # no atexit handlers or lingering threads of the model's


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
