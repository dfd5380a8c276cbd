"""What is this board? Read from a filesystem root: `/` or a recorded tree under tests/fixtures/sysfs.

Every reader tolerates a missing or unreadable file (containers hide /sys/firmware, debugfs needs
root, VMs have no cpufreq): the value becomes None or empty, the probe never fails.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edgebench.errors import ConfigError
from edgebench.host import bandwidth as _bandwidth

__all__ = [
    "Accelerator",
    "ClockState",
    "CpuCluster",
    "HostInfo",
    "ThermalZone",
    "check_root",
    "clock_state",
    "host_class",
    "probe_host",
]

HostClass = Literal["rk3588", "rpi5", "arm64", "x86", "other"]

_CPU = "sys/devices/system/cpu"

# MIDR part numbers of ARM Ltd cores (implementer 0x41), as in Linux arch/arm64/include/asm/cputype.h.
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2",
    0xD80: "Cortex-A520",
    0xD81: "Cortex-A720",
    0xD82: "Cortex-X4",
}

# A CPU counts as "big" when its capacity (or max clock) is within 10 % of the fastest one:
# speed binning moves clusters of the same core a few percent apart (RK3588 picks 2256-2400 MHz
# per A76 cluster), while a real big/little gap is 2x or more.
_BIG_BAND = 0.9

# DRM drivers that mean a usable compute device. Display-only drivers (rockchip-drm, vc4-drm,
# simpledrm) also create render nodes and must not count as a GPU.
_DRM_COMPUTE: dict[str, tuple[Literal["npu", "gpu"], str]] = {
    "v3d": ("gpu", "Broadcom V3D"),
    "panfrost": ("gpu", "Mali (panfrost)"),
    "panthor": ("gpu", "Mali (panthor)"),
    "amdgpu": ("gpu", "AMD GPU"),
    "i915": ("gpu", "Intel GPU"),
    "xe": ("gpu", "Intel GPU"),
    "nouveau": ("gpu", "NVIDIA GPU (nouveau)"),
    "msm": ("gpu", "Adreno (msm)"),
    "etnaviv": ("gpu", "Vivante (etnaviv)"),
    "RKNPU": ("npu", "Rockchip NPU"),
}


class CpuCluster(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpus: list[int]
    max_khz: int | None
    capacity: int | None
    core: str | None  # "Cortex-A76", from the /proc/cpuinfo CPU part; None when unknown (x86)


class ThermalZone(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    temp_c: float


class Accelerator(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["npu", "gpu"]
    name: str
    evidence: str  # absolute path on the probed system that proved it


class HostInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_model: str
    arch: str
    board: str | None
    n_cpus: int
    clusters: list[CpuCluster]
    big_cpus: list[int]
    little_cpus: list[int]
    ram_total_mib: int
    ram_available_mib: int
    swap_total_mib: int
    swap_free_mib: int
    governor: str | None
    cur_khz: dict[int, int]
    thermal: list[ThermalZone]
    max_temp_c: float | None
    accelerators: list[Accelerator]
    bandwidth_gbs: float | None
    bandwidth_method: str | None
    fingerprint: str
    compatible: list[str] = Field(default_factory=list)  # device-tree compatible, most specific first
    # CPU features every online core has (/proc/cpuinfo "flags" on x86, "Features" on Arm): what a
    # native llama.cpp build compiles for, hence which weights ggml repacks (avx2, avx512f, asimddp…)
    cpu_flags: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------- readers


def _read_bytes(root: Path, rel: str) -> bytes | None:
    try:
        return (root / rel).read_bytes()
    except OSError:  # missing, permission denied (debugfs), a directory, EINVAL from a sensor
        return None


def _read(root: Path, rel: str) -> str | None:
    data = _read_bytes(root, rel)
    return None if data is None else data.decode("utf-8", errors="replace").strip()


def _read_int(root: Path, rel: str) -> int | None:
    text = _read(root, rel)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _glob(root: Path, pattern: str) -> list[Path]:
    try:
        return sorted(root.glob(pattern))
    except OSError:
        return []


def _parse_cpulist(text: str) -> list[int]:
    """Kernel cpu list syntax: "0-3,6,8-9"."""
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            cpus.extend(range(int(lo), int(hi or lo) + 1))
    return sorted(set(cpus))


def _parse_cpuinfo(text: str) -> tuple[dict[int, dict[str, str]], dict[str, str]]:
    """Per-processor blocks keyed by processor number, plus the global lines (Model, Hardware…)."""
    per_cpu: dict[int, dict[str, str]] = {}
    glob: dict[str, str] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        proc = fields.get("processor", "")
        if proc.isdigit():
            per_cpu[int(proc)] = fields
        else:
            glob.update(fields)
    return per_cpu, glob


def _cpu_flags(per_cpu: dict[int, dict[str, str]], cpus: list[int]) -> list[str]:
    """Flags common to every online core (a big.LITTLE pair may differ: the weaker core decides)."""
    sets = [set((f.get("flags") or f.get("Features") or "").split()) for c in cpus if (f := per_cpu.get(c))]
    return sorted(set.intersection(*sets)) if sets else []


def _parse_meminfo(text: str) -> dict[str, int]:
    """meminfo values in kB."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[key.strip()] = int(fields[0])
    return out


def _arm_core(fields: dict[str, str]) -> str | None:
    try:
        implementer = int(fields.get("CPU implementer", ""), 16)
        part = int(fields.get("CPU part", ""), 16)
    except ValueError:
        return None
    return _ARM_PARTS.get(part) if implementer == 0x41 else None


# --------------------------------------------------------------------------------------------- sections


def _online_cpus(root: Path, per_cpu: dict[int, dict[str, str]]) -> list[int]:
    online = _read(root, f"{_CPU}/online")
    if online:
        return _parse_cpulist(online)
    dirs = [p.name[3:] for p in _glob(root, f"{_CPU}/cpu[0-9]*")]
    return sorted(int(d) for d in dirs if d.isdigit()) or sorted(per_cpu)


def _clusters(
    cpus: list[int],
    capacity: dict[int, int | None],
    max_khz: dict[int, int | None],
    core: dict[int, str | None],
) -> list[CpuCluster]:
    # Same capacity + same max clock (+ same core) = one cluster; RK3588's two A76 pairs stay apart
    # because each has its own cpufreq policy and binned max clock.
    groups: dict[tuple[int | None, int | None, str | None], list[int]] = {}
    for cpu in cpus:
        groups.setdefault((capacity[cpu], max_khz[cpu], core[cpu]), []).append(cpu)
    return [
        CpuCluster(cpus=members, max_khz=key[1], capacity=key[0], core=key[2])
        for key, members in sorted(groups.items(), key=lambda kv: kv[1][0])
    ]


def _big_little(
    cpus: list[int], capacity: dict[int, int | None], max_khz: dict[int, int | None]
) -> tuple[list[int], list[int]]:
    for metric in (capacity, max_khz):
        values = [metric[c] for c in cpus]
        known = [v for v in values if v is not None]
        if known and len(known) == len(values):
            top = max(known)
            big = [c for c, v in zip(cpus, known, strict=True) if v >= _BIG_BAND * top]
            return big, [c for c in cpus if c not in big]
    return list(cpus), []  # nothing to rank by (VM without cpufreq): all CPUs are equal


def _cpu_model(
    per_cpu: dict[int, dict[str, str]], glob: dict[str, str], cores: list[str | None], dt_model: str | None
) -> str:
    first = per_cpu[min(per_cpu)] if per_cpu else {}
    if "model name" in first and "CPU part" not in first:  # x86 (32-bit ARM has both; prefer parts)
        return first["model name"]
    if cores and all(cores):
        counts: dict[str, int] = {}
        for core in cores:
            counts[str(core)] = counts.get(str(core), 0) + 1
        return " + ".join(f"{n}x {core}" for core, n in counts.items())
    for candidate in (first.get("model name"), glob.get("Hardware"), glob.get("Model"), dt_model):
        if candidate:
            return candidate
    return platform.processor() or "unknown"


def _is_live(root: Path) -> bool:
    """True when `root` is this machine's own filesystem root, not a recorded tree."""
    return root.resolve() == Path("/").resolve()


def _arch(root: Path, per_cpu: dict[int, dict[str, str]]) -> str:
    if _is_live(root):
        return platform.machine() or "unknown"
    # A recorded tree: infer from its cpuinfo, not from the machine running the tests.
    first = per_cpu[min(per_cpu)] if per_cpu else {}
    if "CPU implementer" in first:
        return "aarch64" if first.get("CPU architecture", "8") == "8" else "armv7l"
    if "vendor_id" in first:
        return "x86_64"
    return "unknown"


def _thermal(root: Path) -> list[ThermalZone]:
    zones: list[tuple[int, ThermalZone]] = []
    for zone in _glob(root, "sys/class/thermal/thermal_zone*"):
        index = zone.name.removeprefix("thermal_zone")
        rel = zone.relative_to(root).as_posix()
        milli = _read_int(root, f"{rel}/temp")
        if milli is None or not index.isdigit():
            continue
        zones.append(
            (int(index), ThermalZone(name=_read(root, f"{rel}/type") or zone.name, temp_c=milli / 1000))
        )
    return [z for _, z in sorted(zones, key=lambda iz: iz[0])]  # numeric order: zone10 after zone9


def _uevent_driver(root: Path, rel_device: str) -> str | None:
    for line in (_read(root, f"{rel_device}/uevent") or "").splitlines():
        if line.startswith("DRIVER="):
            return line.removeprefix("DRIVER=")
    return None


def _accelerators(root: Path) -> list[Accelerator]:
    found: list[Accelerator] = []
    claimed: set[str] = set()  # real sysfs device dirs already reported, so a render node doesn't repeat one

    def rels(pattern: str) -> list[str]:
        return [p.relative_to(root).as_posix() for p in _glob(root, pattern)]

    def first_existing(paths: Iterable[str]) -> str | None:
        return next((p for p in paths if (root / p).exists()), None)

    def claim(nodes: Iterable[str]) -> None:
        claimed.update(os.path.realpath(root / n / "device") for n in nodes)

    # Rockchip NPU (vendor rknpu driver): misc device, debugfs (root only), or its devfreq node.
    npu_devfreq = rels("sys/class/devfreq/*.npu")
    npu = first_existing(["dev/rknpu", "sys/kernel/debug/rknpu/version", *npu_devfreq])
    if npu:
        version = _read(root, "sys/kernel/debug/rknpu/version")  # "RKNPU driver: v0.9.8"
        name = f"Rockchip NPU ({version})" if version else "Rockchip NPU"
        found.append(Accelerator(kind="npu", name=name, evidence=f"/{npu}"))
        claim(npu_devfreq)

    # NVIDIA proprietary driver: one directory per GPU, holding "Model: …".
    nv_info = rels("proc/driver/nvidia/gpus/*/information")
    nvidia = nv_info[0] if nv_info else first_existing(["dev/nvidia0"])
    if nvidia:
        model = re.search(r"^Model:\s*(.+)$", _read(root, nvidia) or "", re.MULTILINE)
        found.append(
            Accelerator(kind="gpu", name=model.group(1) if model else "NVIDIA GPU", evidence=f"/{nvidia}")
        )

    # Arm Mali: vendor kbase misc device or a devfreq node. gpuinfo: "Mali-G610 4 cores r0p0 0xA867".
    mali_nodes = [p for p in ["sys/class/misc/mali0"] if (root / p).exists()] + rels(
        "sys/class/devfreq/*.gpu"
    )
    if mali_nodes:
        info = _read(root, "sys/class/misc/mali0/device/gpuinfo") or ""
        name = info.split()[0] if info.startswith("Mali") else "Mali GPU"
        found.append(Accelerator(kind="gpu", name=name, evidence=f"/{mali_nodes[0]}"))
        claim(mali_nodes)

    # DRM render nodes usable from here (/dev/dri is often not passed into containers), named by driver.
    for node in rels("dev/dri/renderD*"):
        sys_node = f"sys/class/drm/{node.rsplit('/', 1)[1]}"
        kind_name = _DRM_COMPUTE.get(_uevent_driver(root, f"{sys_node}/device") or "")
        device = os.path.realpath(root / sys_node / "device")
        if kind_name is None or device in claimed or (kind_name[0] == "npu" and npu):
            continue
        found.append(Accelerator(kind=kind_name[0], name=kind_name[1], evidence=f"/{node}"))
        claimed.add(device)
    return found


def _fingerprint(
    cpu_model: str, arch: str, board: str | None, clusters: list[CpuCluster], ram_total_mib: int
) -> str:
    # Identity only: nothing that changes between two probes of the same board (temperature,
    # current clock, free memory). MemTotal is the installed RAM minus firmware/kernel
    # reservations, so rounding up to whole GiB recovers the installed size stably.
    identity = {
        "cpu_model": cpu_model,
        "arch": arch,
        "board": board,
        "clusters": [c.model_dump() for c in clusters],
        "ram_gib": math.ceil(ram_total_mib / 1024),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ API


def check_root(root: Path, what: str = "sysroot") -> None:
    """A root the probe can read: a directory with proc/cpuinfo or sys/devices/system/cpu under
    it. Missing entries inside a real root are normal (the probe reports unknown); a root with
    neither is a typo, and probing it would report a machine with 0 CPUs."""
    if not root.is_dir():
        raise ConfigError(f"{what} {root}: not a directory")
    if not (root / "proc/cpuinfo").is_file() and not (root / _CPU).is_dir():
        raise ConfigError(f"{what} {root}: not a filesystem root (no proc/cpuinfo or {_CPU} under it)")


def probe_host(root: Path = Path("/"), *, measure_bandwidth: bool = False) -> HostInfo:
    """Describe the host whose /proc, /sys and /dev live under `root`.

    `measure_bandwidth` runs the numpy bandwidth test (about a second, 192 MiB); it only applies
    when `root` is this machine's `/`, since a recorded tree cannot be measured.
    """
    per_cpu, glob = _parse_cpuinfo(_read(root, "proc/cpuinfo") or "")
    cpus = _online_cpus(root, per_cpu)
    capacity = {c: _read_int(root, f"{_CPU}/cpu{c}/cpu_capacity") for c in cpus}
    max_khz = {c: _read_int(root, f"{_CPU}/cpu{c}/cpufreq/cpuinfo_max_freq") for c in cpus}
    core = {c: _arm_core(per_cpu.get(c, {})) for c in cpus}
    clusters = _clusters(cpus, capacity, max_khz, core)
    big, little = _big_little(cpus, capacity, max_khz)

    cur_khz = {
        c: khz
        for c in cpus
        if (khz := _read_int(root, f"{_CPU}/cpu{c}/cpufreq/scaling_cur_freq")) is not None
    }
    if not cur_khz:  # x86 VMs have no cpufreq but report the clock in cpuinfo
        for c in cpus:
            mhz = per_cpu.get(c, {}).get("cpu MHz")
            if mhz and re.fullmatch(r"[0-9.]+", mhz):
                cur_khz[c] = round(float(mhz) * 1000)
    governors = {g for c in cpus if (g := _read(root, f"{_CPU}/cpu{c}/cpufreq/scaling_governor"))}

    mem = _parse_meminfo(_read(root, "proc/meminfo") or "")
    ram_total_mib = mem.get("MemTotal", 0) // 1024

    compat_raw = _read_bytes(root, "proc/device-tree/compatible") or b""
    compatible = [s for s in compat_raw.decode("ascii", errors="replace").split("\0") if s]
    dt_model = (_read_bytes(root, "proc/device-tree/model") or b"").decode(errors="replace").strip(
        "\0 \n"
    ) or None
    board = dt_model or glob.get("Model") or _read(root, "sys/class/dmi/id/product_name") or None

    cpu_model = _cpu_model(per_cpu, glob, [core[c] for c in cpus], dt_model)
    arch = _arch(root, per_cpu)
    thermal = _thermal(root)

    gbs: float | None = None
    method: str | None = None
    if measure_bandwidth and _is_live(root):
        gbs, method = _bandwidth.measure_bandwidth(), _bandwidth.bandwidth_method()

    return HostInfo(
        cpu_model=cpu_model,
        arch=arch,
        board=board,
        n_cpus=len(cpus),
        clusters=clusters,
        big_cpus=big,
        little_cpus=little,
        ram_total_mib=ram_total_mib,
        ram_available_mib=mem.get("MemAvailable", mem.get("MemFree", 0))
        // 1024,  # MemAvailable: Linux ≥ 3.14
        swap_total_mib=mem.get("SwapTotal", 0) // 1024,
        swap_free_mib=mem.get("SwapFree", 0) // 1024,
        governor=",".join(sorted(governors)) or None,  # several policies may disagree: list them all
        cur_khz=cur_khz,
        thermal=thermal,
        max_temp_c=max((z.temp_c for z in thermal), default=None),
        accelerators=_accelerators(root),
        bandwidth_gbs=gbs,
        bandwidth_method=method,
        fingerprint=_fingerprint(cpu_model, arch, board, clusters, ram_total_mib),
        compatible=compatible,
        cpu_flags=_cpu_flags(per_cpu, cpus),
    )


def host_class(host: HostInfo) -> HostClass:
    """Coarse platform class used to pick default sweep presets."""
    compatible = set(host.compatible)
    if compatible & {"rockchip,rk3588", "rockchip,rk3588s"}:
        return "rk3588"
    if "brcm,bcm2712" in compatible or re.match(r"Raspberry Pi (5|500|Compute Module 5)\b", host.board or ""):
        return "rpi5"
    # Containers usually hide /proc/device-tree; RK3588's core mix is distinctive enough on its own.
    cores = sorted(str(cl.core) for cl in host.clusters for _ in cl.cpus)
    if cores == ["Cortex-A55"] * 4 + ["Cortex-A76"] * 4:
        return "rk3588"
    if host.arch in ("aarch64", "arm64"):
        return "arm64"
    if host.arch in ("x86_64", "amd64") or re.fullmatch(r"i[3-6]86", host.arch):
        return "x86"
    return "other"


# ------------------------------------------------------------------------------------- clock gating


class ClockState(BaseModel):
    """What the thermal gate reads before a measured process (cheap: a few sysfs files)."""

    model_config = ConfigDict(frozen=True)

    zones: int  # thermal zones with a readable temperature
    max_temp_c: float | None
    governor: str | None  # of the measured CPUs ("a,b" when their policies disagree)
    cur_mhz: float | None  # mean current clock of the measured CPUs
    # The clock their governor holds them at when nothing is wrong: performance → scaling_max_freq,
    # powersave → scaling_min_freq, userspace → scaling_setspeed. None for dynamic governors
    # (schedutil, ondemand…): an idle clock says nothing about the clock under load.
    level_mhz: float | None
    cooling: list[str]  # cpufreq cooling devices in a state > 0: the kernel capped the clock

    @property
    def sensors(self) -> bool:
        return self.zones > 0 or self.governor is not None


_LEVEL = {
    "performance": ("scaling_max_freq", "cpuinfo_max_freq"),
    "powersave": ("scaling_min_freq", "cpuinfo_min_freq"),
    "userspace": ("scaling_setspeed",),
}


def clock_state(root: Path = Path("/"), cpus: Iterable[int] | None = None) -> ClockState:
    """Hottest zone, and the clock of `cpus` (default: every online CPU) against its governor's level."""
    zones = _thermal(root)
    chosen = list(cpus) if cpus is not None else _online_cpus(root, {})
    cur: list[int] = []
    level: list[int] = []
    governors: set[str] = set()
    for c in chosen:
        base = f"{_CPU}/cpu{c}/cpufreq"
        gov = _read(root, f"{base}/scaling_governor")
        khz = _read_int(root, f"{base}/scaling_cur_freq")
        if gov is None or khz is None:
            continue
        governors.add(gov)
        cur.append(khz)
        for name in _LEVEL.get(gov, ()):
            if (want := _read_int(root, f"{base}/{name}")) is not None:
                level.append(want)
                break
    cooling = []
    for dev in _glob(root, "sys/class/thermal/cooling_device*"):
        rel = dev.relative_to(root).as_posix()
        kind = _read(root, f"{rel}/type") or ""
        state = _read_int(root, f"{rel}/cur_state")
        if kind.startswith("cpufreq") and state:
            cooling.append(f"{kind} state {state}")
    return ClockState(
        zones=len(zones),
        max_temp_c=max((z.temp_c for z in zones), default=None),
        governor=",".join(sorted(governors)) or None,
        cur_mhz=sum(cur) / len(cur) / 1000 if cur else None,
        level_mhz=sum(level) / len(level) / 1000 if level and len(level) == len(cur) else None,
        cooling=cooling,
    )
