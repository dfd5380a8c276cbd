"""Host probe: CPU clusters, memory, clocks, thermals and accelerators of the board we run on."""

from __future__ import annotations

from edgebench.host.bandwidth import bandwidth_method, measure_bandwidth
from edgebench.host.probe import Accelerator, CpuCluster, HostInfo, ThermalZone, host_class, probe_host

__all__ = [
    "Accelerator",
    "CpuCluster",
    "HostInfo",
    "ThermalZone",
    "bandwidth_method",
    "host_class",
    "measure_bandwidth",
    "probe_host",
]
