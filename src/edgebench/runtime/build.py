"""Source build of llama.cpp into a cache keyed by (source version, preset, flags).

The pinned source is the llama.cpp tree vendored in llama-cpp-python's sdist, fetched with pip
from PyPI (never from a git host at run time) and checked against its sha256. A user source dir
(`--source`, e.g. ik_llama.cpp or rk-llama.cpp) builds the same way under its own key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.errors import BuildError, ProcError
from edgebench.runtime import proc
from edgebench.runtime.presets import (
    TARGETS,
    Preset,
    common_cmake_args,
    cross_cmake_args,
    host_arch,
)

__all__ = [
    "PINNED_SDIST_SHA256",
    "PINNED_VERSION",
    "BuildInfo",
    "build",
    "build_dir_for",
    "cached_builds",
    "fetch_pinned_source",
    "top_up_cached",
]

PINNED_VERSION = "0.3.36"  # llama-cpp-python release whose sdist vendors the llama.cpp we build
PINNED_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_PROGRESS = re.compile(r"^\[\s*(\d+)%\]\s*(.*)$")


class BuildInfo(BaseModel):
    """Written next to the binaries as build-info.json; the cache's record of what it holds."""

    model_config = ConfigDict(frozen=True)

    key: str
    source: str  # "llama-cpp-python==0.3.36" or the user's source dir
    source_id: str
    preset: str
    arch: str
    cmake_args: list[str]
    targets: list[str]
    absent: list[str] = []  # tools edgebench drives that this source tree has no target for
    bin_dir: str
    built_at: str
    build_s: float
    log: str


def fetch_pinned_source(cache_dir: Path) -> Path:
    """Download (once) and unpack the pinned sdist; returns the llama.cpp tree inside it."""
    dest = cache_dir / "src" / f"llama-cpp-python-{PINNED_VERSION}"
    tree = dest / "vendor" / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return tree
    sdist_dir = cache_dir / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{PINNED_VERSION}.tar.gz"
    if not sdist.is_file():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        # pip prepares the sdist's metadata in an isolated env (scikit-build-core, from PyPI too).
        res = proc.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                str(sdist_dir),
                f"llama-cpp-python=={PINNED_VERSION}",
            ],
            timeout_s=900,
        )
        if not sdist.is_file():
            raise BuildError(
                f"llama.cpp source: pip could not fetch llama-cpp-python=={PINNED_VERSION}"
                f" from the package index: {res.detail}"
            )
    digest = _sha256(sdist)
    if digest != PINNED_SDIST_SHA256:
        sdist.unlink()
        raise BuildError(
            f"llama.cpp source {sdist.name}: sha256 {digest[:12]}… does not match the "
            f"pinned {PINNED_SDIST_SHA256[:12]}… (deleted; run again to re-fetch)"
        )
    tmp = dest.with_name(dest.name + ".partial")
    with tarfile.open(sdist) as tar:
        prefix = f"llama_cpp_python-{PINNED_VERSION}/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix + "vendor/llama.cpp/")]
        for m in members:
            m.name = m.name[len(prefix) :]
        tar.extractall(tmp, members=members, filter="data")
    tmp.rename(dest)
    return tree


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _git(tree: Path, *args: str) -> str:
    """git's stdout, or "" when git is missing or the tree is not a checkout."""
    try:
        res = proc.run(["git", "-C", str(tree), *args], timeout_s=30)
    except ProcError:
        return ""
    return res.stdout.strip() if res.ok else ""


def source_id(source: Path | None) -> tuple[str, str]:
    """(description, id) of a source tree; the id goes into the cache key."""
    if source is None:
        return f"llama-cpp-python=={PINNED_VERSION}", f"lcp-{PINNED_VERSION}"
    head = _git(source, "rev-parse", "--short=12", "HEAD")
    if head:
        dirty = _git(source, "status", "--porcelain", "-uno")
        return str(source), f"{source.name}-{head}" + ("-dirty" if dirty else "")
    # Not a git checkout: the newest mtime under the main dirs stands in for a version.
    newest = max(
        (
            p.stat().st_mtime
            for d in ("src", "ggml", "common", "tools")
            for p in (source / d).rglob("*")
            if p.is_file()
        ),
        default=0.0,
    )
    h = hashlib.sha256(f"{source.resolve()}:{newest}".encode()).hexdigest()[:12]
    return str(source), f"{source.name}-{h}"


def _cmake_args(preset: Preset, extra: list[str], src_id: str) -> list[str]:
    args = [*common_cmake_args(), *preset.cmake_args, *extra]
    if preset.arch != host_arch():
        args += cross_cmake_args(preset.arch)
    if src_id.startswith("lcp-"):
        # The sdist has no .git: name the build after the release that pins it.
        args += ["-DLLAMA_BUILD_NUMBER=0", f"-DLLAMA_BUILD_COMMIT={src_id}"]
    return args


def build_key(src_id: str, preset: Preset, args: list[str]) -> str:
    # ccache on/off does not change the binaries, so it is not part of the key.
    stable = sorted(a for a in args if "COMPILER_LAUNCHER" not in a)
    blob = json.dumps([src_id, preset.name, preset.arch, stable])
    return f"{src_id}-{preset.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def build_dir_for(builds_dir: Path, source: Path | None, preset: Preset, extra_args: list[str]) -> Path:
    _, sid = source_id(source)
    return builds_dir / build_key(sid, preset, _cmake_args(preset, extra_args, sid))


def cached_builds(builds_dir: Path) -> list[BuildInfo]:
    out: list[BuildInfo] = []
    for info in sorted(builds_dir.glob("*/build-info.json")):
        try:
            out.append(BuildInfo.model_validate_json(info.read_text()))
        except (OSError, ValueError):
            continue  # a half-written cache entry is simply not a build
    return out


def build(
    *,
    builds_dir: Path,
    cache_dir: Path,
    preset: Preset,
    source: Path | None = None,
    extra_args: list[str] | None = None,
    jobs: int | None = None,
    force: bool = False,
    on_progress: Callable[[int, str], None] | None = None,
) -> BuildInfo:
    """Configure and build the targets; reuse the cache entry when its key already exists."""
    extra = list(extra_args or [])
    if source is not None and not (source / "CMakeLists.txt").is_file():
        raise BuildError(f"llama.cpp source {source}: no CMakeLists.txt there")
    desc, sid = source_id(source)
    args = _cmake_args(preset, extra, sid)
    key = build_key(sid, preset, args)
    out = builds_dir / key
    info_file = out / "build-info.json"
    if info_file.is_file() and not force:
        info = BuildInfo.model_validate_json(info_file.read_text())
        if not _new_tools(info):
            return info
    with _exclusive(builds_dir / f"{key}.lock", on_progress):
        # Another process may have finished this very build while we waited for the lock.
        if info_file.is_file() and not force:
            info = BuildInfo.model_validate_json(info_file.read_text())
            return _top_up(info, info_file, jobs, on_progress) if _new_tools(info) else info
        return _build_locked(
            key=key,
            out=out,
            desc=desc,
            sid=sid,
            args=args,
            preset=preset,
            source=source,
            cache_dir=cache_dir,
            jobs=jobs,
            on_progress=on_progress,
        )


def top_up_cached(
    info_file: Path, jobs: int | None = None, on_progress: Callable[[int, str], None] | None = None
) -> BuildInfo:
    """Build the tools a cached build lacks (see _top_up); a no-op when it has them all."""
    info = BuildInfo.model_validate_json(info_file.read_text())
    if not _new_tools(info):
        return info
    with _exclusive(info_file.parent.parent / f"{info.key}.lock", on_progress):
        info = BuildInfo.model_validate_json(info_file.read_text())
        return _top_up(info, info_file, jobs, on_progress) if _new_tools(info) else info


def _new_tools(info: BuildInfo) -> list[str]:
    """Tools this edgebench drives that a cached build (made by an older one) has not built yet."""
    return [t for t in TARGETS if t not in info.targets and t not in info.absent]


def _top_up(
    info: BuildInfo, info_file: Path, jobs: int | None, on_progress: Callable[[int, str], None] | None
) -> BuildInfo:
    """Build only the new tools in the cached, configured tree (an incremental build: a minute,
    not the full ten), so an upgrade of edgebench keeps its llama.cpp build."""
    work = Path(info.bin_dir).parent
    if not (work / "CMakeCache.txt").is_file():
        raise BuildError(f"cached llama.cpp build {info.key}: its cmake tree is gone; rebuild with --force")
    present = _present_targets(work)
    wanted = {t: present[t] for t in _new_tools(info) if t in present}
    if wanted:
        if on_progress:
            on_progress(0, f"building {', '.join(wanted)} into the cached llama.cpp build")
        argv = ["cmake", "--build", str(work), "--config", "Release", "-j", str(jobs or os.cpu_count() or 2)]
        res = proc.run([*argv, "--target", *wanted.values()])
        if not res.ok:
            tools = ", ".join(wanted)
            raise BuildError(f"llama.cpp build {info.key}: building {tools} failed ({res.detail})")
        _link_logical(Path(info.bin_dir), wanted)
    new = info.model_copy(
        update={
            "targets": [*info.targets, *wanted],
            "absent": [*info.absent, *(t for t in _new_tools(info) if t not in wanted)],
        }
    )
    info_file.write_text(new.model_dump_json(indent=2))
    return new


def _link_logical(bin_dir: Path, targets: dict[str, str]) -> None:
    for logical, target in targets.items():
        # One name per tool whatever the tree calls it, so locate and flags never guess.
        if logical != target and (bin_dir / target).is_file() and not (bin_dir / logical).exists():
            (bin_dir / logical).symlink_to(target)


@contextlib.contextmanager
def _exclusive(lock: Path, on_progress: Callable[[int, str], None] | None) -> Iterator[None]:
    """One build per cache entry at a time (two test sessions, or run + test, share the cache)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_progress:
                on_progress(0, "waiting for another edgebench building the same llama.cpp")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_locked(
    *,
    key: str,
    out: Path,
    desc: str,
    sid: str,
    args: list[str],
    preset: Preset,
    source: Path | None,
    cache_dir: Path,
    jobs: int | None,
    on_progress: Callable[[int, str], None] | None,
) -> BuildInfo:
    info_file = out / "build-info.json"
    if source is not None:
        tree = source
    else:
        with _exclusive(cache_dir / "src.lock", on_progress):
            tree = fetch_pinned_source(cache_dir)
    work = out / "cmake"
    log = out / "build.log"
    out.mkdir(parents=True, exist_ok=True)
    # Keep llama.cpp's build-info from picking up an enclosing git repo (e.g. the cache inside ours).
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
    t0 = time.monotonic()
    lines: list[str] = []

    def _line(ln: str) -> None:
        lines.append(ln)
        m = _PROGRESS.match(ln)
        if m and on_progress is not None:
            on_progress(int(m.group(1)), m.group(2))

    if on_progress:
        on_progress(0, "cmake configure")
    configure = ["cmake", "-S", str(tree), "-B", str(work), *args]
    with log.open("w") as fh:
        for argv in (configure, None):
            if argv is None:  # the build step: only targets this tree has
                targets = _present_targets(work)
                argv = [
                    "cmake",
                    "--build",
                    str(work),
                    "--config",
                    "Release",
                    "-j",
                    str(jobs or os.cpu_count() or 2),
                    "--target",
                    *targets.values(),
                ]
            fh.write("$ " + " ".join(argv) + "\n")
            fh.flush()

            def _sink(ln: str) -> None:
                fh.write(ln + "\n")
                _line(ln)

            res = proc.run(argv, env=env, on_line=_sink)
            if not res.ok:
                tail = _error_tail(lines)
                raise BuildError(
                    f"llama.cpp build failed (preset {preset.name}, {res.detail}); "
                    f"last lines:\n{tail}\nfull log: {log}"
                )
    bin_dir = work / "bin"
    _link_logical(bin_dir, targets)
    missing = [t for t in targets if not (bin_dir / t).is_file()]
    if missing:
        raise BuildError(
            f"llama.cpp build (preset {preset.name}) finished without {', '.join(missing)}; full log: {log}"
        )
    info = BuildInfo(
        key=key,
        source=desc,
        source_id=sid,
        preset=preset.name,
        arch=preset.arch,
        cmake_args=args,
        targets=list(targets),
        absent=[t for t in TARGETS if t not in targets],
        bin_dir=str(bin_dir),
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_s=round(time.monotonic() - t0, 1),
        log=str(log),
    )
    info_file.write_text(info.model_dump_json(indent=2))
    return info


def _present_targets(work: Path) -> dict[str, str]:
    """Logical tool name → the cmake target this configured tree has for it."""
    res = proc.run(["cmake", "--build", str(work), "--target", "help"], timeout_s=120)
    have = set(re.findall(r"^\.\.\. ([\w.+-]+)", res.stdout, re.MULTILINE))
    if not have:  # Ninja and others print "name: phony"
        have = set(re.findall(r"^([\w.+-]+): ", res.stdout, re.MULTILINE))
    found = {}
    for logical, names in TARGETS.items():
        for name in names:
            if name in have:
                found[logical] = name
                break
    if "llama-bench" not in found or "llama-server" not in found:
        raise BuildError(
            f"llama.cpp source has no llama-bench/llama-server targets (cmake said: "
            f"{res.detail}); is it a llama.cpp tree?"
        )
    return found


def _error_tail(lines: list[str], n: int = 12) -> str:
    """The compiler's own error lines if there are any, else the last lines of output."""
    errs = [ln for ln in lines if re.search(r"(error|Error|ERROR)[: ]", ln)]
    pick = errs[-n:] if errs else lines[-n:]
    return "\n".join("  " + ln for ln in pick)
