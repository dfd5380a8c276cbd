"""Run a model's Python in its own process and namespaces, and get back plain values only.

The checker (edgebench) writes the code and each call's arguments to a job directory, runs
`_sandbox_runner.py` under bubblewrap, and reads one JSON line per call. Expected values never
enter the sandbox, and nothing the model's code builds is ever compared here: results are decoded
strictly into builtin values (`_sandbox_runner.decode`).

Inside bubblewrap the code has its own mount, pid, network, ipc and uts namespaces: no network
(a private loopback), no view of other processes, read-only /usr, /lib*, /bin and the
interpreter's prefix, a private size-capped /tmp and /dev/shm, its own /proc, an empty
environment, a new session, and it dies with its parent. It runs unprivileged: bwrap maps it
to 65534 in a user namespace that cannot create further ones; as root, `setpriv` first drops to
a throwaway uid (no capabilities, no_new_privs) that then runs bwrap so, or, when that uid cannot
read the interpreter (a pyenv under /root), bwrap sets up as root and setpriv drops inside. Whether
bwrap works here is probed once with a trusted one-liner, never inferred from a model's run.
Limits: address space, CPU seconds, file size and core size through `runtime.proc.run`'s rlimits,
the process count (set by the runner, see there), the wall time (`timeout_s`, the whole process
group is killed), and the output, which goes to a log file the file-size limit caps, not into the
checker's memory.

Where bwrap is missing or cannot create namespaces (user namespaces disabled), code is not run
unless the user allowed unsandboxed execution (`[quality] allow_unsandboxed`,
`--allow-unsandboxed`); then it runs in a separate process with the same limits and, as root,
as a throwaway uid, but sees the host's filesystem, processes and network.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgebench.errors import EdgebenchError
from edgebench.quality import _sandbox_runner
from edgebench.runtime import proc
from edgebench.textsafe import one_line

__all__ = [
    "BWRAP",
    "CallOutcome",
    "SandboxRun",
    "allow_unsandboxed",
    "isolation_problem",
    "run_calls",
    "unsandboxed_allowed",
]

BWRAP = "bwrap"  # looked up on PATH at run time
SETPRIV = "setpriv"  # util-linux: drops root inside the sandbox
NPROC = 16  # processes the code may have at once, itself included (multiprocessing fits)
# RLIMIT_AS is per process, so the tree's resident memory is capped as well (runtime.proc's watchdog
# kills the group): memory_mb plus this much per process for libraries each one counts again.
RSS_SLACK_PER_PROC_MIB = 16
FSIZE_BYTES = 16 << 20  # any file it writes, its printed output included
TMPFS_BYTES = 64 << 20  # its private /tmp (tmpfs is RAM that RLIMIT_AS does not count)
SHM_BYTES = 8 << 20
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_THROWAWAY_UIDS = (1_800_000_000, 1_000_000)  # first, count: owns nothing on the host
_TAIL_BYTES = 4000
_SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
_SANDBOX_ENV["PYTHONHASHSEED"] = "0"  # set iteration order, hence printed output, repeatable

Isolation = Literal["bwrap", "none"]


class CallOutcome(BaseModel):
    """One call of the model's function, as the runner reported it (`value` still encoded)."""

    model_config = ConfigDict(frozen=True)

    value: Any = None
    raised: str | None = None  # "ValueError: message"
    unserialisable: str | None = None


class SandboxRun(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: Literal["ran", "timeout", "crashed", "unsandboxed"]
    isolation: Isolation
    detail: str = ""
    started: bool = False  # the runner reported in
    load_finished: bool = False  # the code ran to its end, or raised (not: ended the process, hung)
    loaded: bool = False  # the entry function was defined
    load_error: str | None = None  # the code raised at import (maybe after defining the function)
    outcomes: list[CallOutcome] = []  # in call order; shorter than the calls when it stopped early
    output_tail: str = ""
    wall_s: float = 0.0


_allowed = False
# bwrap path -> why it cannot isolate here (None: it can), from a probe with no model code in it:
# a model's run must not be able to tell us "bwrap failed" and so switch isolation off for later ones.
_probed: dict[str, str | None] = {}
_PROBE_MARK = "edgebench-sandbox-ok"


def allow_unsandboxed(allowed: bool = True) -> None:
    """Let code run without isolation where bwrap is unavailable (the user's explicit choice)."""
    global _allowed
    _allowed = allowed


def unsandboxed_allowed() -> bool:
    return _allowed


def isolation_problem() -> str | None:
    """Why code cannot be isolated on this machine, or None when bubblewrap is usable."""
    bwrap = shutil.which(BWRAP)
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    if os.geteuid() == 0 and shutil.which(SETPRIV) is None:
        return "setpriv (util-linux) is not installed: root cannot be dropped inside the sandbox"
    if bwrap not in _probed:
        _probed[bwrap] = _probe()
    return _probed[bwrap]


def _probe() -> str | None:
    """Start the sandbox once with a trusted one-liner: does bwrap set up its namespaces here?"""
    with tempfile.TemporaryDirectory(prefix="edgebench-probe-") as tmp:
        jobdir, outdir = Path(tmp) / "job", Path(tmp) / "out"
        jobdir.mkdir(mode=0o755)
        outdir.mkdir(mode=0o755)
        uid = None
        if os.geteuid() == 0:
            uid = _THROWAWAY_UIDS[0] + secrets.randbelow(_THROWAWAY_UIDS[1])
            Path(tmp).chmod(0o711)
        inner = [_interpreter(), "-I", "-S", "-c", f"print({_PROBE_MARK!r})"]
        try:
            res = proc.run(
                _bwrap_argv(str(jobdir), str(outdir), uid, inner),
                env={"PATH": os.defpath, "LANG": "C.UTF-8"},
                inherit_env=False,
                timeout_s=30,
            )
        except EdgebenchError as exc:  # could not even be started
            return one_line(str(exc), 200)
    if _PROBE_MARK in res.stdout:
        return None
    said = [ln for ln in res.stderr.splitlines() if ln.strip()]
    return one_line(said[-1] if said else f"bwrap: {res.detail}", 200)


def run_calls(
    code: str,
    entry: str,
    calls: list[tuple[list[Any], dict[str, Any]]],
    *,
    setup: str = "",
    timeout_s: float = 10.0,
    memory_mb: int = 512,
) -> SandboxRun:
    """Load `code`, call `entry(*args, **kwargs)` for each call, return what came back."""
    problem = isolation_problem()
    if problem is not None and not _allowed:
        return SandboxRun(status="unsandboxed", isolation="none", detail=f"not run: {problem}")
    isolation: Isolation = "none" if problem else "bwrap"
    job = {
        "code": code,
        "setup": setup,
        "entry": entry,
        "nproc": NPROC,
        "calls": [
            {"args": _sandbox_runner.encode(list(args)), "kwargs": _sandbox_runner.encode(dict(kwargs))}
            for args, kwargs in calls
        ],
    }
    with tempfile.TemporaryDirectory(prefix="edgebench-code-") as tmp:
        return _run_job(Path(tmp), job, isolation, timeout_s, memory_mb)


def _run_job(
    tmp: Path, job: dict[str, Any], isolation: Isolation, timeout_s: float, memory_mb: int
) -> SandboxRun:
    jobdir, outdir, log = tmp / "job", tmp / "out", tmp / "output.log"
    jobdir.mkdir(mode=0o755)
    outdir.mkdir(mode=0o700)
    (jobdir / "job.json").write_text(json.dumps(job, allow_nan=False), encoding="utf-8")
    shutil.copyfile(_sandbox_runner.__file__, jobdir / "runner.py")
    for f in jobdir.iterdir():
        f.chmod(0o644)
    uid = None
    if os.geteuid() == 0:  # the code runs as a uid that owns nothing and counts only its own processes
        uid = _THROWAWAY_UIDS[0] + secrets.randbelow(_THROWAWAY_UIDS[1])
        os.chown(outdir, uid, uid)
        tmp.chmod(0o711)  # the dropped uid (bwrap itself, or the code unsandboxed) must reach job/, out/
    python = _interpreter()
    if isolation == "bwrap":
        inner = [python, "-I", "-S", "-B", "/job/runner.py", "/job/job.json", "/out/results.jsonl"]
        argv = _bwrap_argv(str(jobdir), str(outdir), uid, inner)
    else:
        inner = [python, "-I", "-S", "-B", str(jobdir / "runner.py"), str(jobdir / "job.json")]
        inner.append(str(outdir / "results.jsonl"))
        argv = _drop_root(uid, inner) if uid is not None else inner
    limits = {
        resource.RLIMIT_AS: memory_mb << 20,
        resource.RLIMIT_CPU: int(timeout_s) + 2,
        resource.RLIMIT_FSIZE: FSIZE_BYTES,
        resource.RLIMIT_CORE: 0,
    }
    # The code's stdout and stderr go to a file (capped by RLIMIT_FSIZE), never through a pipe into
    # our memory: `sh` redirects, then becomes bwrap.
    res = proc.run(
        ["/bin/sh", "-c", 'exec "$@" >"$0" 2>&1', str(log), *argv],
        cwd=tmp,
        env={"PATH": os.defpath, "LANG": "C.UTF-8"},
        inherit_env=False,
        timeout_s=timeout_s,
        rlimits=limits,
        rss_limit_mib=memory_mb + NPROC * RSS_SLACK_PER_PROC_MIB,
    )
    tail = _tail(log)
    lines = _records(outdir / "results.jsonl")
    started = bool(lines) and lines[0] == {"started": True}
    load_finished = len(lines) > 1 and "loaded" in lines[1]
    loaded = load_finished and lines[1]["loaded"] is True
    load_error = lines[1].get("error") if len(lines) > 1 and isinstance(lines[1], dict) else None
    outcomes = [_outcome(rec) for rec in lines[2:]]
    if res.cause is proc.ExitCause.TIMEOUT:
        status: Literal["ran", "timeout", "crashed"] = "timeout"
        detail = f"no result within {timeout_s:g} s"
    elif _killed_by_cpu_limit(res.returncode):
        status, detail = "timeout", "CPU time limit reached"
    elif res.returncode != 0:
        status, detail = "crashed", one_line(res.detail, 200)
    else:
        status, detail = "ran", ""
    return SandboxRun(
        status=status,
        isolation=isolation,
        detail=detail,
        started=started,
        load_finished=load_finished,
        loaded=loaded,
        load_error=_error_text(load_error),
        outcomes=outcomes,
        output_tail=tail[-2000:],
        wall_s=res.wall_s,
    )


def _killed_by_cpu_limit(returncode: int | None) -> bool:
    # SIGXCPU kills the runner; bwrap reports that as exit 128 + 24 (not the printed text: the code
    # could print it). A backstop: the wall limit, below the CPU limit, normally comes first.
    return returncode in (-24, 152)


def _interpreter() -> str:
    """The base interpreter: a venv's python needs the venv (pyvenv.cfg) bound too; stdlib suffices."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


def _bwrap_argv(jobdir: str, outdir: str, uid: int | None, inner: list[str]) -> list[str]:
    """As a user: bwrap maps us to nobody in a user namespace that cannot create further ones. As
    root, the same after setpriv has dropped to `uid`, when that uid can read the interpreter; else
    (a pyenv under /root, mode 0700) bwrap sets up as root without a user namespace (its one uid
    would be root) and setpriv drops to `uid` inside, after the mounts."""
    bwrap = shutil.which(BWRAP) or BWRAP
    prefix = os.path.realpath(sys.base_prefix)
    privileged = uid is not None and not _others_can_read(prefix)
    argv = [bwrap]
    if not privileged:
        argv += ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    else:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    for k, v in _SANDBOX_ENV.items():
        argv += ["--setenv", k, v]
    for d in _SYSTEM_DIRS:
        argv += ["--ro-bind-try", d, d]
    if not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS):
        # e.g. /root/.pyenv/versions/3.11.7: bwrap would create /root 0700, unreadable to nobody
        parents = Path(prefix).parents
        for parent in reversed([p for p in parents if str(p) != "/"]):
            argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    # 1777 like a host /tmp: as root, bwrap would make them 0755 root-owned, unwritable to the code
    argv += ["--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]
    argv += ["--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp"]
    argv += ["--ro-bind", jobdir, "/job", "--bind", outdir, "/out", "--remount-ro", "/"]
    argv += ["--chdir", "/tmp", "--hostname", "sandbox", "--"]
    if uid is None:
        return argv + inner
    return argv + _drop_root(uid, inner) if privileged else _drop_root(uid, argv + inner)


def _others_can_read(prefix: str) -> bool:
    """Whether a uid that owns nothing can reach `prefix` (o+x on every parent) and read it."""
    try:
        if os.stat(prefix).st_mode & 0o005 != 0o005:
            return False
        return all(os.stat(p).st_mode & 0o001 for p in Path(prefix).parents)
    except OSError:
        return False


def _drop_root(uid: int, inner: list[str]) -> list[str]:
    return [
        shutil.which(SETPRIV) or "/usr/bin/setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *inner,
    ]


def _tail(log: Path) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(0, log.stat().st_size - _TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _records(path: Path) -> list[dict[str, Any]]:
    """The runner's JSON lines, up to the first that is not one (a torn last line, or tampering)."""
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            break
        if not isinstance(rec, dict):
            break
        out.append(rec)
    return out


def _error_text(err: Any) -> str | None:
    if not isinstance(err, dict):
        return None
    kind, message = str(err.get("type", "?")), str(err.get("message", ""))
    return one_line(f"{kind}: {message}" if message else kind, 240)


def _outcome(rec: dict[str, Any]) -> CallOutcome:
    if "value" in rec:
        return CallOutcome(value=rec["value"])
    if "raised" in rec:
        return CallOutcome(raised=_error_text(rec["raised"]) or "an exception")
    return CallOutcome(unserialisable=one_line(str(rec.get("unserialisable", "unreadable result")), 200))
