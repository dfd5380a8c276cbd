"""Untrusted text (GGUF metadata, llama.cpp's stderr, file names) made safe to show on one line.

A GGUF `general.name` or a crashed binary's output can hold newlines, ANSI escapes or other
control characters; printed raw they break the one-line error contract and can drive the
terminal. Everything shown or stored as a human-readable cause goes through `one_line`.
"""

from __future__ import annotations

import re

__all__ = ["one_line", "printable"]

# C0 and C1 controls and DEL; ESC sequences are removed whole first so no "[31m" residue stays.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    return f"\\x{ord(c):02x}"


def printable(text: str) -> str:
    """Drop ANSI escape sequences, show other control characters as \\xNN; keep newlines/tabs.
    Lone surrogates (non-UTF-8 file names decoded with surrogateescape) become "?"."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(_escape, _ANSI.sub("", text))


def one_line(text: str, limit: int | None = None) -> str:
    """`printable` with newlines and tabs escaped too: safe inside a one-line message."""
    out = printable(text).replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    if limit is not None and len(out) > limit:
        out = out[: max(0, limit - 1)] + "…"
    return out
