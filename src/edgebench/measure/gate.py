"""Thermal and clock gating: before each measured llama-bench process, wait until the host is cool.

A board without active cooling throttles within minutes (RK3588, Pi 5), so whichever config runs
first wins by temperature. Before every process the gate reads the hottest thermal zone and the
measured CPUs' clock; it waits (bounded) until the zone is below `max_temp_c`, no cpufreq cooling
device is active and, under a fixed governor (performance, powersave, userspace), the clock is at
the governor's level. When the wait runs out the process runs anyway and says it was throttled:
its row is flagged, and the race never pairs it with a cool one.

Where the host exposes none of this (VMs, containers) there is nothing to wait for: the gate says
so once (`sensors` is False) and every check records that it could not see.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgebench.host.probe import ClockState, clock_state

__all__ = ["NO_SENSORS", "GateCheck", "GateSettings", "ThermalGate"]

NO_SENSORS = (
    "thermal gating: this host exposes no thermal zone and no cpufreq governor: measured processes "
    "are not gated and throttling cannot be seen (rows say 'not gated')"
)


class GateSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    # Below the lowest passive trip point of the boards we know (Pi 5 firmware 80 °C, RK3588 85 °C)
    # with room for a process of a minute to heat up without reaching it.
    max_temp_c: float = 70.0
    clock_tolerance: float = 0.05  # a fixed governor's clock this far below its level = capped
    max_wait_s: float = 120.0
    poll_s: float = 2.0


class GateCheck(BaseModel):
    """The host as a measured process found it, and how long the gate waited for that."""

    model_config = ConfigDict(frozen=True)

    gated: bool  # False: no sensors (or gating off): nothing was checked
    max_temp_c: float | None
    governor: str | None
    cur_mhz: float | None
    level_mhz: float | None  # the governor's level (fixed governors only)
    waited_s: float
    throttled: bool  # the wait ran out with the host still hot or capped
    why: str  # what was still wrong when it ran out ("" when cool)
    # measured over the process itself (host/busy.py): cores other processes kept busy (on its CPUs
    # when pinned), and whether they took cores its threads needed (None: not measured)
    others_cores: float | None = None
    contended: bool = False


def problems(s: ClockState, st: GateSettings) -> list[str]:
    out = []
    if s.max_temp_c is not None and s.max_temp_c >= st.max_temp_c:
        out.append(f"hottest zone {s.max_temp_c:.1f} °C ≥ {st.max_temp_c:g} °C")
    if s.cooling:
        out.append("cpufreq cooling active: " + ", ".join(s.cooling[:3]))
    if s.cur_mhz is not None and s.level_mhz and s.cur_mhz < (1 - st.clock_tolerance) * s.level_mhz:
        out.append(f"clock {s.cur_mhz:.0f} MHz < {s.governor} level {s.level_mhz:.0f} MHz")
    return out


class ThermalGate:
    """`wait(cpus)` before each measured process; `sleep` and `now` are injectable for tests."""

    def __init__(
        self,
        root: Path = Path("/"),
        settings: GateSettings | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root, self.settings = root, settings or GateSettings()
        self.sleep, self.now = sleep, now

    def sensors(self) -> bool:
        return clock_state(self.root).sensors

    def wait(self, cpus: Iterable[int] | None = None) -> GateCheck:
        st = self.settings
        chosen = list(cpus) if cpus is not None else None
        t0 = self.now()
        while True:
            s = clock_state(self.root, chosen)
            if not st.enabled or not s.sensors:
                return _check(s, False, 0.0, [])
            wrong = problems(s, st)
            waited = self.now() - t0
            if not wrong or waited >= st.max_wait_s:
                return _check(s, True, waited, wrong)
            self.sleep(min(st.poll_s, st.max_wait_s - waited))


def _check(s: ClockState, gated: bool, waited: float, wrong: list[str]) -> GateCheck:
    return GateCheck(
        gated=gated,
        max_temp_c=s.max_temp_c,
        governor=s.governor,
        cur_mhz=round(s.cur_mhz, 1) if s.cur_mhz is not None else None,
        level_mhz=round(s.level_mhz, 1) if s.level_mhz is not None else None,
        waited_s=round(waited, 2),
        throttled=bool(wrong),
        why="; ".join(wrong),
    )
