"""Run model-written Python against hidden asserts in a throwaway subprocess.

Not a security boundary against a hostile author, but enough for code a small model writes by
mistake: `python -I` in an empty temp cwd with a minimal env (no proxies), an audit hook that
refuses sockets, subprocesses and ctypes, an address-space limit (RLIMIT_AS) and CPU/file-size
limits set in `preexec_fn`, and a wall-clock timeout that kills the whole process group.
"""

from __future__ import annotations

import ast
import json
import os
import re
import resource
import signal
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgebench.runtime import proc

__all__ = ["RunResult", "extract_code", "run_python"]

Status = Literal["passed", "failed", "error", "timeout", "syntax"]


class RunResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Status
    detail: str = ""
    output_tail: str = ""  # last lines the code printed (stdout + stderr)


# Runs first in the child. The audit hook cannot be removed once added, so code that re-imports
# socket, or reaches for _socket directly, still hits it.
_HARNESS = r"""
import json, sys
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "os.kill", "os.killpg", "pty.", "ctypes.", "urllib.Request")
def _guard(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError("sandbox: " + event + " is not allowed")
sys.addaudithook(_guard)
import socket
class _NoSocket(socket.socket):
    def __init__(self, *a, **k):
        raise PermissionError("sandbox: network access is not allowed")
socket.socket = _NoSocket
_dumps, _open = json.dumps, open
with _open("job.json", encoding="utf-8") as f:
    _job = json.load(f)
_out = _open("result.json", "w", encoding="utf-8")
def _finish(status, detail=""):
    _out.write(_dumps({"status": status, "detail": detail})); _out.close()
    raise SystemExit(0)
def _describe(e):
    return type(e).__name__ + (": " + str(e) if str(e) else "")
_ns = {"__name__": "solution", "__builtins__": __builtins__}
try:
    exec(compile(_job["setup"], "setup.py", "exec"), _ns)
    exec(compile(_job["code"], "solution.py", "exec"), _ns)
except SystemExit:
    pass
except BaseException as e:
    _finish("error", "while running the code: " + _describe(e))
if _job["entry"] and not callable(_ns.get(_job["entry"])):
    _finish("failed", "no function named " + _job["entry"])
for _test in _job["tests"]:
    try:
        exec(compile(_test, "test.py", "exec"), _ns)
    except AssertionError as e:
        _finish("failed", "failed: " + _test + (" (" + str(e) + ")" if str(e) else ""))
    except BaseException as e:
        _finish("error", "in " + _test + ": " + _describe(e))
_finish("passed")
"""

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_CODE_START = re.compile(r"^(?:def |class |import |from |async def |@|[A-Za-z_]\w*\s*=)", re.M)


def extract_code(text: str, entry: str | None = None) -> str | None:
    """The Python in a reply: a fenced block (the one defining `entry`, if any), else the raw text."""
    blocks = [
        str(body) for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")
    ]
    if blocks:
        if entry:
            for body in blocks:
                if re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", body, re.M):
                    return body
        return blocks[0]
    if _compiles(text):
        return text
    start = _CODE_START.search(text)  # prose around the code: from the first code-looking line,
    if start is None:  # the longest run of lines that compiles
        return None
    lines = text[start.start() :].splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if _compiles(candidate):
            return candidate
    return None


def _compiles(src: str) -> bool:
    try:
        with warnings.catch_warnings():  # a model's `x is 1` must not print on our stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            ast.parse(src)
    except (SyntaxError, ValueError):
        return False
    return True


def missing_nodes(code: str, required: Sequence[str]) -> list[str]:
    """AST node types from `required` that `code` does not contain (structure, not string matching)."""
    present = {type(node).__name__ for node in ast.walk(ast.parse(code))}
    return [name for name in required if name not in present]


def run_python(
    code: str,
    tests: Sequence[str],
    *,
    setup: str = "",
    entry: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> RunResult:
    """Run `setup`, `code`, then each test; the first failing test is reported."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        return RunResult(status="syntax", detail=f"does not compile: {e}")
    with tempfile.TemporaryDirectory(prefix="edgebench-code-") as tmp:
        cwd = Path(tmp)
        job = {"code": code, "setup": setup, "tests": list(tests), "entry": entry}
        (cwd / "job.json").write_text(json.dumps(job), encoding="utf-8")
        (cwd / "harness.py").write_text(_HARNESS, encoding="utf-8")
        env = {"PATH": os.defpath, "HOME": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        # The one subprocess runner: own process group killed as a whole on timeout, a bare env,
        # and address-space / CPU / file-size limits applied in the child before exec.
        limits = {
            resource.RLIMIT_AS: memory_mb << 20,
            resource.RLIMIT_CPU: int(timeout_s) + 2,
            resource.RLIMIT_FSIZE: 16 << 20,
            resource.RLIMIT_CORE: 0,
        }
        res = proc.run(
            [sys.executable, "-I", "-B", "harness.py"],
            cwd=cwd,
            env=env,
            inherit_env=False,
            timeout_s=timeout_s,
            rlimits=limits,
        )
        tail = (res.stdout + res.stderr)[-2000:]
        if res.cause is proc.ExitCause.TIMEOUT:
            return RunResult(status="timeout", detail=f"no result within {timeout_s:g} s", output_tail=tail)
        result = cwd / "result.json"
        if res.returncode == -signal.SIGXCPU:
            return RunResult(status="timeout", detail="CPU time limit reached", output_tail=tail)
        if not result.is_file() or not result.read_text(encoding="utf-8").strip():
            return RunResult(status="error", detail=f"exited with code {res.returncode}", output_tail=tail)
        data = json.loads(result.read_text(encoding="utf-8"))
        return RunResult(status=data["status"], detail=data.get("detail", ""), output_tail=tail)
