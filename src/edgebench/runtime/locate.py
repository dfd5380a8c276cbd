"""Find llama.cpp: configured bin dir → PATH → edgebench's build cache; say what the build is.

The `Runtime` record is what every result row's provenance points at: `build_id` combines the
version line with a hash of the llama-bench binary, so two builds that print the same
"version: 0 (unknown)" (source builds without .git) are still told apart.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgebench.errors import RuntimeNotFound
from edgebench.runtime import proc
from edgebench.runtime.build import BuildInfo, cached_builds
from edgebench.runtime.flags import Dialect
from edgebench.runtime.presets import TARGETS, host_arch

__all__ = ["REQUIRED", "Runtime", "locate", "probe_runtime"]

# Without these two nothing can be measured; the others are reported when missing.
REQUIRED = ("llama-bench", "llama-server")
# "version: 4567 (abc1234)" (2024-25) or "version: 0.5.0-dev (build 1, commit 0c1e570)" (2026).
_VERSION = re.compile(r"version:\s*(\d+)\s*\(([^)]*)\)")
_VERSION_NEW = re.compile(r"version:\s*(\S+)\s*\(build\s*(\d+),\s*commit\s*([^)]*)\)")
_BUILT = re.compile(r"built with (.+?) for (.+)$", re.MULTILINE)


class Runtime(BaseModel):
    model_config = ConfigDict(frozen=True)

    bin_dir: str
    found_via: Literal["config", "path", "cache"]
    build_number: int
    commit: str
    compiler: str
    target: str
    build_id: str
    backends: list[str]
    binaries: dict[str, str]  # name → path, for the targets present
    missing: list[str]
    dialect: Dialect
    preset: str | None = None  # when built by edgebench
    cmake_args: list[str] = []

    def binary(self, name: str) -> str:
        try:
            return self.binaries[name]
        except KeyError:
            raise RuntimeNotFound(
                f"{name}: not in the llama.cpp build at {self.bin_dir}; "
                "rebuild with `edgebench runtime build --force`"
            ) from None


def _has_required(d: Path) -> bool:
    return all((d / b).is_file() for b in REQUIRED)


def locate(*, bin_dir: Path | None, builds_dir: Path, preset: str | None = None) -> Runtime:
    """The first complete build found, in the documented order; RuntimeNotFound says the fix."""
    if bin_dir is not None:
        if not _has_required(bin_dir):
            missing = [b for b in REQUIRED if not (bin_dir / b).is_file()]
            raise RuntimeNotFound(
                f"llama.cpp bin dir {bin_dir} (llama_cpp.bin_dir in the config): "
                f"{', '.join(missing)} not found there"
            )
        return probe_runtime(bin_dir, "config")
    on_path = shutil.which("llama-bench")
    if on_path and _has_required(Path(on_path).resolve().parent):
        return probe_runtime(Path(on_path).resolve().parent, "path")
    builds = [
        b
        for b in cached_builds(builds_dir)
        if b.arch == host_arch()
        and _has_required(Path(b.bin_dir))
        and (preset is None or preset == "auto" or b.preset == preset)
    ]
    if builds:
        newest = max(builds, key=lambda b: b.built_at)
        return probe_runtime(Path(newest.bin_dir), "cache", newest)
    raise RuntimeNotFound(
        "llama.cpp: no build found (not configured, not on PATH, none in the cache "
        f"{builds_dir}); fix: `edgebench runtime build`"
    )


def probe_runtime(
    bin_dir: Path, found_via: Literal["config", "path", "cache"], info: BuildInfo | None = None
) -> Runtime:
    binaries: dict[str, str] = {}
    for logical, names in TARGETS.items():
        for name in (logical, *names):
            if (bin_dir / name).is_file():
                binaries[logical] = str(bin_dir / name)
                break
    bench = binaries.get("llama-bench") or str(bin_dir / "llama-bench")
    server = binaries.get("llama-server") or str(bin_dir / "llama-server")
    ver = proc.run([server, "--version"], timeout_s=30)
    text = ver.stdout + ver.stderr
    if ver.returncode is None or (not ver.ok and "version:" not in text):
        raise RuntimeNotFound(f"{server}: does not run ({ver.detail})")
    b = _BUILT.search(text)
    number, commit = 0, "unknown"
    if m_new := _VERSION_NEW.search(text):
        number, commit = int(m_new.group(2)), m_new.group(3).strip()
    elif m := _VERSION.search(text):
        number, commit = int(m.group(1)), m.group(2).strip()
    bench_help = proc.run([bench, "--help"], timeout_s=30)
    server_help = proc.run([server, "--help"], timeout_s=30)
    dialect = Dialect.from_help(
        bench_help.stdout + bench_help.stderr, server_help.stdout + server_help.stderr
    )
    digest = hashlib.sha256(Path(bench).read_bytes()).hexdigest()[:10]
    return Runtime(
        bin_dir=str(bin_dir),
        found_via=found_via,
        build_number=number,
        commit=commit,
        compiler=b.group(1).strip() if b else "unknown",
        target=b.group(2).strip() if b else "unknown",
        build_id=f"b{number}-{commit}-{digest}",
        backends=_backends(server),
        binaries=binaries,
        missing=[t for t in TARGETS if t not in binaries],
        dialect=dialect,
        preset=info.preset if info else None,
        cmake_args=info.cmake_args if info else [],
    )


def _backends(server: str) -> list[str]:
    """CPU always; GPUs/RPC as llama.cpp lists them (`--list-devices`)."""
    res = proc.run([server, "--list-devices"], timeout_s=30)
    found = ["CPU"]
    for line in (res.stdout + res.stderr).splitlines():
        m = re.match(r"^\s+([A-Za-z]+)\d*:\s", line)
        if m and m.group(1) not in found:
            found.append(m.group(1))
    return found
