"""Board presets for the llama.cpp source build: the cmake flags users found worth having.

`rk3588` is seed 000's board-tuned build verbatim; `rpi5` targets the Pi 5's Cortex-A76 (seed 004
builds natively on the Pi; when we cross-compile we spell the same core out with -mcpu).
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.errors import ConfigError

__all__ = [
    "PRESETS",
    "TARGETS",
    "Preset",
    "common_cmake_args",
    "cross_cmake_args",
    "host_arch",
    "resolve_preset",
]

# Only what edgebench drives; building everything would triple the time on a 2-core box.
# Logical name → cmake target names it has had (rpc-server became ggml-rpc-server in 2026).
TARGETS: dict[str, tuple[str, ...]] = {
    "llama-server": ("llama-server",),
    "llama-bench": ("llama-bench",),
    "llama-quantize": ("llama-quantize",),
    "llama-fit-params": ("llama-fit-params",),
    "llama-cli": ("llama-cli",),
    "rpc-server": ("ggml-rpc-server", "rpc-server"),
    "llama-perplexity": ("llama-perplexity",),
    "llama-imatrix": ("llama-imatrix",),
}

_A76 = "-mcpu=cortex-a76+crc+crypto+dotprod"


class Preset(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    arch: str  # "x86_64" | "aarch64": what the binaries run on
    cmake_args: tuple[str, ...]
    note: str
    # The CPU features the binaries are compiled for, in ggml's names (what decides which weights
    # ggml-cpu repacks: the checks are `#if defined(__ARM_FEATURE_DOTPROD)` and the like).
    # None = -march=native: the build host's own flags (HostInfo.cpu_flags).
    target_features: tuple[str, ...] | None = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="x86-native",
            arch="x86_64",
            cmake_args=("-DGGML_NATIVE=ON",),
            note="this x86-64 CPU's own instruction set (-march=native)",
        ),
        Preset(
            name="generic-arm64",
            arch="aarch64",
            cmake_args=("-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8-a"),
            note="any 64-bit Arm (no dotprod/fp16: portable, slower)",
            target_features=("neon",),
        ),
        Preset(
            name="rk3588",
            arch="aarch64",
            cmake_args=(
                "-DGGML_NATIVE=OFF",
                # seed 000 says armv8.2-a; the features must be in -march itself (see below)
                "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",
                "-DGGML_INTERNAL_DOTPROD=ON",
                "-DGGML_INTERNAL_FP16_VECTOR_ARITHMETIC=ON",
                "-DGGML_OPENMP=ON",
                "-DGGML_LLAMAFILE=OFF",
                f"-DCMAKE_C_FLAGS={_A76}",
                f"-DCMAKE_CXX_FLAGS={_A76}",
            ),
            note="Rockchip RK3588 (4×A76 + 4×A55): armv8.2-a, dotprod, fp16, OpenMP (seed 000)",
            # ggml appends -march=$GGML_CPU_ARM_ARCH after CMAKE_C_FLAGS and gcc's -march overrides
            # -mcpu's +dotprod: with seed 000's plain armv8.2-a the binary had no DOTPROD (seen in its
            # system_info under qemu: no dotprod kernels, nothing repacked). Both RK3588 core types
            # (A76, A55) have dotprod and fp16. tests/test_cross.py checks the binary's features.
            target_features=("neon", "dotprod", "fp16"),
        ),
        Preset(
            name="rpi5",
            arch="aarch64",
            cmake_args=(
                "-DGGML_NATIVE=OFF",
                "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",
                "-DGGML_OPENMP=ON",
                "-DCMAKE_C_FLAGS=-mcpu=cortex-a76",
                "-DCMAKE_CXX_FLAGS=-mcpu=cortex-a76",
            ),
            note="Raspberry Pi 5 (4×Cortex-A76, BCM2712): the cores -DGGML_NATIVE=ON finds there",
            target_features=("neon", "dotprod", "fp16"),
        ),
        Preset(
            name="cuda",
            arch=platform.machine() or "x86_64",
            cmake_args=("-DGGML_NATIVE=ON", "-DGGML_CUDA=ON"),
            note="NVIDIA GPU via CUDA (needs nvcc)",
        ),
        Preset(
            name="vulkan",
            arch=platform.machine() or "x86_64",
            cmake_args=("-DGGML_NATIVE=ON", "-DGGML_VULKAN=ON"),
            note="any Vulkan GPU (needs the Vulkan SDK / glslc)",
        ),
    )
}


def common_cmake_args() -> list[str]:
    """Flags every preset shares: Release, no tests/examples, nothing fetched from the network."""
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",  # self-contained binaries: the cache dir can be copied to a board
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI at configure time
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_CURL=OFF",  # older trees: no model downloads from hubs
        "-DGGML_RPC=ON",  # rpc-server, for multi-host later
    ]
    if shutil.which("ccache"):
        args += ["-DCMAKE_C_COMPILER_LAUNCHER=ccache", "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache"]
    return args


def cross_cmake_args(arch: str) -> list[str]:
    """Toolchain flags when the preset's arch is not this machine's (Debian cross compilers)."""
    if arch != "aarch64":
        raise ConfigError(f"preset arch {arch}: no cross toolchain known for it")
    gcc, gxx = "aarch64-linux-gnu-gcc", "aarch64-linux-gnu-g++"
    if not (shutil.which(gcc) and shutil.which(gxx)):
        raise ConfigError(f"cross-compiling for {arch} needs {gxx}: apt-get install g++-aarch64-linux-gnu")
    return [
        "-DCMAKE_SYSTEM_NAME=Linux",
        "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
        f"-DCMAKE_C_COMPILER={gcc}",
        f"-DCMAKE_CXX_COMPILER={gxx}",
        "-DCMAKE_FIND_ROOT_PATH=/usr/aarch64-linux-gnu",
        "-DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER",
        "-DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY",
        "-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY",
    ]


def host_arch() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def resolve_preset(name: str, sysroot: Path = Path("/"), arch: str | None = None) -> Preset:
    """`auto` picks from the host: RK3588 / Pi 5 by device tree, else the architecture's default."""
    if name != "auto":
        if name not in PRESETS:
            raise ConfigError(f"unknown build preset {name!r}; one of auto, {', '.join(PRESETS)}")
        return PRESETS[name]
    arch = arch or host_arch()
    if arch == "aarch64":
        compat = _read(sysroot / "proc/device-tree/compatible")
        if "rockchip,rk3588" in compat:
            return PRESETS["rk3588"]
        if "brcm,bcm2712" in compat:
            return PRESETS["rpi5"]
        return PRESETS["generic-arm64"]
    if arch == "x86_64":
        return PRESETS["x86-native"]
    raise ConfigError(f"no build preset for this architecture ({arch}); pass --preset")


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
