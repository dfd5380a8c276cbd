"""Host probe on recreated RK3588 / Raspberry Pi 5 trees (tests/fixtures/sysfs) and on this machine."""

from __future__ import annotations

import platform
import re
import shutil
from pathlib import Path

import pytest

from edgebench.errors import ConfigError
from edgebench.host import (
    Accelerator,
    CpuCluster,
    ThermalZone,
    host_class,
    measure_bandwidth,
    probe_host,
)

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"
RK3588 = FIXTURES / "rk3588"
RPI5 = FIXTURES / "rpi5"


@pytest.fixture
def rk3588_copy(tmp_path: Path) -> Path:
    """A writable copy of the RK3588 tree, for tests that remove or change files."""
    root = tmp_path / "rk3588"
    shutil.copytree(RK3588, root)
    return root


# ------------------------------------------------------------------------------------------- CPUs


def test_rk3588_clusters_follow_cpufreq_policies() -> None:
    host = probe_host(RK3588)
    assert host.n_cpus == 8
    assert host.clusters == [
        CpuCluster(cpus=[0, 1, 2, 3], max_khz=1800000, capacity=414, core="Cortex-A55"),
        CpuCluster(cpus=[4, 5], max_khz=2256000, capacity=1002, core="Cortex-A76"),
        CpuCluster(cpus=[6, 7], max_khz=2304000, capacity=1024, core="Cortex-A76"),
    ]


def test_rk3588_big_little_spans_both_a76_clusters() -> None:
    # cpu4-5 (capacity 1002) and cpu6-7 (1024) differ only by speed binning: both are "big".
    host = probe_host(RK3588)
    assert host.big_cpus == [4, 5, 6, 7]
    assert host.little_cpus == [0, 1, 2, 3]


def test_big_little_falls_back_to_max_freq(rk3588_copy: Path) -> None:
    for cap in rk3588_copy.glob("sys/devices/system/cpu/cpu*/cpu_capacity"):
        cap.unlink()
    host = probe_host(rk3588_copy)
    assert host.big_cpus == [4, 5, 6, 7]
    assert host.little_cpus == [0, 1, 2, 3]
    assert [c.capacity for c in host.clusters] == [None, None, None]


def test_rpi5_is_one_cluster_of_a76() -> None:
    host = probe_host(RPI5)
    assert host.n_cpus == 4
    assert host.clusters == [CpuCluster(cpus=[0, 1, 2, 3], max_khz=2400000, capacity=1024, core="Cortex-A76")]
    assert host.big_cpus == [0, 1, 2, 3]
    assert host.little_cpus == []


@pytest.mark.parametrize(
    ("root", "cpu_model", "board", "compatible", "klass"),
    [
        (
            RK3588,
            "4x Cortex-A55 + 4x Cortex-A76",
            "Radxa ROCK 5B+",
            ["radxa,rock-5b-plus", "rockchip,rk3588"],
            "rk3588",
        ),
        (
            RPI5,
            "4x Cortex-A76",
            "Raspberry Pi 5 Model B Rev 1.1",
            ["raspberrypi,5-model-b", "brcm,bcm2712"],
            "rpi5",
        ),
    ],
)
def test_identity_and_host_class(
    root: Path, cpu_model: str, board: str, compatible: list[str], klass: str
) -> None:
    host = probe_host(root)
    assert host.cpu_model == cpu_model
    assert host.board == board
    assert host.compatible == compatible
    assert host.arch == "aarch64"  # from the tree's cpuinfo, not from the x86 machine running tests
    assert host_class(host) == klass


def test_host_class_without_device_tree_uses_core_mix(rk3588_copy: Path) -> None:
    # Containers usually hide /proc/device-tree; the A55+A76 mix still identifies an RK3588.
    shutil.rmtree(rk3588_copy / "proc" / "device-tree")
    host = probe_host(rk3588_copy)
    assert host.board is None
    assert host.compatible == []
    assert host_class(host) == "rk3588"


# ------------------------------------------------------------------------------ memory, clocks, heat


@pytest.mark.parametrize(
    ("root", "total", "available", "swap_total", "swap_free"),
    [
        (RK3588, 24363252 // 1024, 22986104 // 1024, 12181624 // 1024, 12181624 // 1024),
        (RPI5, 16608528 // 1024, 15734880 // 1024, 204784 // 1024, 204784 // 1024),
    ],
)
def test_memory_from_meminfo(root: Path, total: int, available: int, swap_total: int, swap_free: int) -> None:
    host = probe_host(root)
    assert (host.ram_total_mib, host.ram_available_mib) == (total, available)
    assert (host.swap_total_mib, host.swap_free_mib) == (swap_total, swap_free)


def test_governor_and_current_clocks() -> None:
    rk = probe_host(RK3588)
    assert rk.governor == "schedutil"
    assert rk.cur_khz == {
        0: 1008000,
        1: 1008000,
        2: 1008000,
        3: 1008000,
        4: 408000,
        5: 408000,
        6: 408000,
        7: 408000,
    }
    pi = probe_host(RPI5)
    assert pi.governor == "ondemand"
    assert pi.cur_khz == dict.fromkeys(range(4), 1500000)


def test_mixed_governors_are_all_reported(rk3588_copy: Path) -> None:
    for n in (4, 5, 6, 7):
        (rk3588_copy / f"sys/devices/system/cpu/cpu{n}/cpufreq/scaling_governor").write_text("performance\n")
    assert probe_host(rk3588_copy).governor == "performance,schedutil"


def test_thermal_zones_in_celsius() -> None:
    rk = probe_host(RK3588)
    assert [z.name for z in rk.thermal] == [
        "soc-thermal",
        "bigcore0-thermal",
        "bigcore1-thermal",
        "littlecore-thermal",
        "center-thermal",
        "gpu-thermal",
        "npu-thermal",
    ]
    assert rk.max_temp_c == pytest.approx(44.375)
    pi = probe_host(RPI5)
    assert pi.thermal == [ThermalZone(name="cpu-thermal", temp_c=51.85)]
    assert pi.max_temp_c == pytest.approx(51.85)


# ------------------------------------------------------------------------------------ accelerators


def test_npu_and_mali_detected_on_rk3588() -> None:
    accels = probe_host(RK3588).accelerators
    assert accels == [
        Accelerator(kind="npu", name="Rockchip NPU (RKNPU driver: v0.9.8)", evidence="/dev/rknpu"),
        Accelerator(kind="gpu", name="Mali-G610", evidence="/sys/class/misc/mali0"),
    ]


def test_npu_found_from_devfreq_when_dev_node_and_debugfs_are_hidden(rk3588_copy: Path) -> None:
    # Without root, debugfs is unreadable; in a container /dev/rknpu may not be passed through.
    (rk3588_copy / "dev" / "rknpu").unlink()
    shutil.rmtree(rk3588_copy / "sys" / "kernel" / "debug")
    npus = [a for a in probe_host(rk3588_copy).accelerators if a.kind == "npu"]
    assert npus == [Accelerator(kind="npu", name="Rockchip NPU", evidence="/sys/class/devfreq/fdab0000.npu")]


def test_rpi5_has_no_npu_and_a_v3d_gpu() -> None:
    accels = probe_host(RPI5).accelerators
    assert [a.kind for a in accels] == ["gpu"]
    assert accels[0].name == "Broadcom V3D"
    assert accels[0].evidence == "/dev/dri/renderD128"


def test_display_only_render_node_is_not_a_gpu(tmp_path: Path) -> None:
    (tmp_path / "dev" / "dri").mkdir(parents=True)
    (tmp_path / "dev" / "dri" / "renderD128").touch()
    uevent = tmp_path / "sys" / "class" / "drm" / "renderD128" / "device" / "uevent"
    uevent.parent.mkdir(parents=True)
    uevent.write_text("DRIVER=rockchip-drm\n")
    assert probe_host(tmp_path).accelerators == []


# ------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_and_distinguishes_boards() -> None:
    first, second = probe_host(RK3588), probe_host(RK3588)
    assert re.fullmatch(r"[0-9a-f]{16}", first.fingerprint)
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != probe_host(RPI5).fingerprint


def test_fingerprint_ignores_volatile_values(rk3588_copy: Path) -> None:
    before = probe_host(rk3588_copy).fingerprint
    (rk3588_copy / "sys/class/thermal/thermal_zone1/temp").write_text("81250\n")
    (rk3588_copy / "sys/devices/system/cpu/cpu6/cpufreq/scaling_cur_freq").write_text("2304000\n")
    meminfo = rk3588_copy / "proc" / "meminfo"
    meminfo.write_text(meminfo.read_text().replace("MemAvailable:   22986104", "MemAvailable:    1048576"))
    after = probe_host(rk3588_copy)
    assert after.max_temp_c == pytest.approx(81.25)  # the edits did take effect…
    assert after.ram_available_mib == 1024
    assert after.fingerprint == before  # …without touching the identity


def test_fingerprint_survives_a_different_kernel_reservation(rk3588_copy: Path) -> None:
    # Another kernel/firmware reserves a few MiB more: same board, same fingerprint.
    before = probe_host(rk3588_copy).fingerprint
    meminfo = rk3588_copy / "proc" / "meminfo"
    meminfo.write_text(meminfo.read_text().replace("MemTotal:       24363252", "MemTotal:       24301812"))
    after = probe_host(rk3588_copy)
    assert after.ram_total_mib == 24301812 // 1024
    assert after.fingerprint == before


def test_fingerprint_changes_when_a_cluster_is_reclocked(rk3588_copy: Path) -> None:
    before = probe_host(rk3588_copy).fingerprint
    for n in (6, 7):
        (rk3588_copy / f"sys/devices/system/cpu/cpu{n}/cpufreq/cpuinfo_max_freq").write_text("2400000\n")
    assert probe_host(rk3588_copy).fingerprint != before


def test_fingerprint_changes_with_installed_ram(rk3588_copy: Path) -> None:
    before = probe_host(rk3588_copy).fingerprint
    meminfo = rk3588_copy / "proc" / "meminfo"
    meminfo.write_text(meminfo.read_text().replace("MemTotal:       24363252", "MemTotal:       16093740"))
    assert probe_host(rk3588_copy).fingerprint != before


# -------------------------------------------------------------------------------- robustness, live


def test_empty_root_does_not_crash(tmp_path: Path) -> None:
    host = probe_host(tmp_path)
    assert (host.n_cpus, host.clusters, host.big_cpus, host.little_cpus) == (0, [], [], [])
    assert (host.ram_total_mib, host.swap_total_mib) == (0, 0)
    assert host.board is None and host.governor is None and host.max_temp_c is None
    assert host.thermal == [] and host.accelerators == [] and host.cur_khz == {}
    assert host.arch == "unknown"
    assert host_class(host) == "other"


def test_unparseable_values_become_none(rk3588_copy: Path) -> None:
    (rk3588_copy / "sys/devices/system/cpu/cpu0/cpu_capacity").write_text("garbage\n")
    (rk3588_copy / "sys/class/thermal/thermal_zone0/temp").write_text("")
    host = probe_host(rk3588_copy)
    assert host.clusters[0] == CpuCluster(cpus=[0], max_khz=1800000, capacity=None, core="Cortex-A55")
    assert "soc-thermal" not in [z.name for z in host.thermal]


def test_fixture_trees_are_not_measured() -> None:
    host = probe_host(RK3588, measure_bandwidth=True)
    assert host.bandwidth_gbs is None and host.bandwidth_method is None


def test_real_host_values_are_sane() -> None:
    host = probe_host(Path("/"), measure_bandwidth=True)
    assert host.n_cpus >= 1
    assert sorted(host.big_cpus + host.little_cpus) == sorted(c for cl in host.clusters for c in cl.cpus)
    assert host.ram_total_mib > 0
    assert 0 <= host.ram_available_mib <= host.ram_total_mib
    assert host.arch == platform.machine()
    assert re.fullmatch(r"[0-9a-f]{16}", host.fingerprint)
    assert host.bandwidth_gbs is not None and 0.1 < host.bandwidth_gbs < 10_000
    assert host.bandwidth_method == "numpy add kernel, 3×64 MiB, best of 5"


def test_measure_bandwidth_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="size_mib"):
        measure_bandwidth(size_mib=0)
    with pytest.raises(ConfigError, match="repeats"):
        measure_bandwidth(size_mib=1, repeats=0)
