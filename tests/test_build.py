"""Build logic with real cmake: presets, cache keys, reuse, and a build that fails for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.errors import BuildError, ConfigError
from edgebench.runtime import build as build_mod
from edgebench.runtime.build import _error_tail, build, build_key, cached_builds
from edgebench.runtime.presets import PRESETS, resolve_preset

FIXTURES = Path(__file__).parent / "fixtures"


def test_auto_preset_follows_the_host() -> None:
    assert resolve_preset("auto", arch="x86_64").name == "x86-native"
    assert resolve_preset("auto", FIXTURES / "sysfs/rk3588", arch="aarch64").name == "rk3588"
    assert resolve_preset("auto", FIXTURES / "sysfs/rpi5", arch="aarch64").name == "rpi5"
    assert resolve_preset("auto", Path("/nonexistent"), arch="aarch64").name == "generic-arm64"


def test_rk3588_preset_carries_the_seed_flags() -> None:
    args = PRESETS["rk3588"].cmake_args
    for flag in (
        "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16",  # the seed's armv8.2-a compiled no dotprod
        "-DGGML_INTERNAL_DOTPROD=ON",
        "-DGGML_INTERNAL_FP16_VECTOR_ARITHMETIC=ON",
        "-DGGML_OPENMP=ON",
        "-DGGML_LLAMAFILE=OFF",
        "-DCMAKE_C_FLAGS=-mcpu=cortex-a76+crc+crypto+dotprod",
        "-DCMAKE_CXX_FLAGS=-mcpu=cortex-a76+crc+crypto+dotprod",
    ):
        assert flag in args
    assert PRESETS["rk3588"].arch == "aarch64"


def test_unknown_preset_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown build preset 'rk3399'; one of auto, x86-native"):
        resolve_preset("rk3399")


def test_cache_key_depends_on_source_preset_and_flags() -> None:
    p = PRESETS["x86-native"]
    k = build_key("lcp-0.3.36", p, ["-DA=1", "-DB=2"])
    assert k == build_key("lcp-0.3.36", p, ["-DB=2", "-DA=1"])
    assert k.startswith("lcp-0.3.36-x86-native-")
    assert k != build_key("lcp-0.3.37", p, ["-DA=1", "-DB=2"])
    assert k != build_key("lcp-0.3.36", PRESETS["rk3588"], ["-DA=1", "-DB=2"])
    assert k != build_key("lcp-0.3.36", p, ["-DA=1", "-DB=3"])
    # ccache does not change the binaries
    assert k == build_key("lcp-0.3.36", p, ["-DA=1", "-DB=2", "-DCMAKE_C_COMPILER_LAUNCHER=ccache"])


def _fake_tree(root: Path, source: str) -> Path:
    """A tiny CMake project with llama.cpp's target names: real cmake, real compiler."""
    root.mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.14)\nproject(fake CXX)\n"
        "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\n"
        "add_executable(llama-bench main.cpp)\nadd_executable(llama-server main.cpp)\n"
    )
    (root / "main.cpp").write_text(source)
    return root


def test_failed_build_shows_compiler_lines_and_log(tmp_path: Path) -> None:
    src = _fake_tree(tmp_path / "src", "int main() { return undeclared_symbol_xyz; }\n")
    with pytest.raises(BuildError) as exc:
        build(builds_dir=tmp_path / "builds", cache_dir=tmp_path, preset=PRESETS["x86-native"], source=src)
    msg = str(exc.value)
    assert "llama.cpp build failed (preset x86-native" in msg
    assert "undeclared_symbol_xyz" in msg
    log = Path(msg.rsplit("full log: ", 1)[1].strip())
    assert log.is_file() and "undeclared_symbol_xyz" in log.read_text()
    assert cached_builds(tmp_path / "builds") == []  # a failed build is not a cache entry


def test_build_of_user_source_is_cached_and_reused(tmp_path: Path) -> None:
    src = _fake_tree(tmp_path / "src", "int main() { return 0; }\n")
    seen: list[int] = []
    info = build(
        builds_dir=tmp_path / "builds",
        cache_dir=tmp_path,
        preset=PRESETS["x86-native"],
        source=src,
        on_progress=lambda pct, _w: seen.append(pct),
    )
    assert Path(info.bin_dir, "llama-bench").is_file()
    assert info.source_id.startswith("src-")
    assert set(info.targets) == {"llama-bench", "llama-server"}
    assert seen and max(seen) == 100
    again = build(
        builds_dir=tmp_path / "builds", cache_dir=tmp_path, preset=PRESETS["x86-native"], source=src
    )
    assert again == info  # reused: same record, no rebuild
    assert cached_builds(tmp_path / "builds") == [info]


def test_source_without_cmakelists(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"no CMakeLists\.txt"):
        build(builds_dir=tmp_path, cache_dir=tmp_path, preset=PRESETS["x86-native"], source=tmp_path)


def test_error_tail_prefers_compiler_errors() -> None:
    lines = [
        "[ 10%] Building x",
        "main.cpp:1:20: error: 'y' was not declared",
        "make: *** [x] Error 1",
        "done",
    ]
    tail = _error_tail(lines)
    assert "was not declared" in tail and "done" not in tail


def test_cached_build_gains_a_new_tool_incrementally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build cached by an older edgebench (whose tool list lacked llama-quantize) gets just that
    tool built into it on the next use, instead of a full rebuild or a missing binary."""
    src = _fake_tree(tmp_path / "src", "int main() { return 0; }\n")
    with (src / "CMakeLists.txt").open("a") as fh:
        fh.write("add_executable(llama-quantize main.cpp)\n")
    kw = {"builds_dir": tmp_path / "builds", "cache_dir": tmp_path, "preset": PRESETS["x86-native"]}
    older = {k: v for k, v in build_mod.TARGETS.items() if k != "llama-quantize"}
    with monkeypatch.context() as m:
        m.setattr(build_mod, "TARGETS", older)
        info = build(source=src, **kw)  # type: ignore[arg-type]
    assert "llama-quantize" not in info.targets and not Path(info.bin_dir, "llama-quantize").exists()
    assert "llama-imatrix" in info.absent  # the tree has no such target: not looked for again
    seen: list[str] = []
    topped = build(source=src, on_progress=lambda _p, what: seen.append(what), **kw)  # type: ignore[arg-type]
    assert "llama-quantize" in topped.targets
    assert Path(topped.bin_dir, "llama-quantize").is_file()
    assert topped.built_at == info.built_at  # the same cache entry, not a rebuild
    assert any("llama-quantize into the cached" in w for w in seen)
    assert build(source=src, **kw) == topped  # type: ignore[arg-type]
