"""Throughput sweep: llama-bench processes per (config, test), adaptive repetitions, resumable.

Each measured point is a `ThroughputResult` row in the store, committed as soon as it exists;
a failed config (OOM, crash, hang, an unsupported combination) is a row too, and the sweep
goes on. Re-running the same sweep finds the stored rows and skips them.

Repetitions are adaptive and come in processes: at least `min_processes` llama-bench processes of
`reps_per_process` repetitions, then more processes while the 95 % CI over the process means is
wider than the target (default ±3 %), up to a cap on repetitions (see stats.summarize_groups).
A search with a race after it only screens: `min_processes` processes of the race's repetitions,
whatever the CI; such a row is marked `screened`, and a search that wants the CI target measures
it again instead of resuming it.
Before every process the thermal gate (measure.gate) waits until the host is cool; a process that
still started hot or clock-capped flags its row `throttled`. Over every process, the cores other
processes kept busy are measured (host/busy.py); when they took cores the process's threads needed,
its row is flagged `contended`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench.host.busy import contended, others_cores, window
from edgebench.host.probe import HostInfo, probe_host
from edgebench.measure.gate import GateCheck, GateSettings, ThermalGate
from edgebench.measure.roofline import decode_bytes_per_token, decode_efficiency
from edgebench.measure.space import Point
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.bench import BenchOutcome, BenchRun, diagnose_failure, run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import TRANSIENT, ExitCause
from edgebench.stats import monotonic_drift, summarize_groups
from edgebench.store import Provenance, Store, result_key

__all__ = ["STAGE", "MeasureSettings", "PointMeasurer", "ThermalSnap", "ThroughputResult"]

STAGE = "throughput"
VERSION = 1  # record schema version (edgebench.stages); params' "ci" already marks the CI method
TRANSIENT_NOTE = "not the config's doing: retried on the next run"


class ThermalSnap(BaseModel):
    model_config = ConfigDict(frozen=True)

    governor: str | None
    mean_mhz: float | None
    max_temp_c: float | None


def thermal_snapshot(root: Path = Path("/")) -> ThermalSnap:
    h = probe_host(root)
    mhz = sum(h.cur_khz.values()) / len(h.cur_khz) / 1000 if h.cur_khz else None
    return ThermalSnap(governor=h.governor, mean_mhz=mhz, max_temp_c=h.max_temp_c)


class ThroughputResult(BaseModel):
    """One (model, config, test) measurement with its uncertainty and provenance."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_sha256: str
    point: Point
    config: RuntimeConfig
    test: str
    kind: str  # "pp" | "tg"
    n_prompt: int
    n_gen: int
    depth: int
    # ok | oom-killed | crashed | timeout | bad-args | unsupported | rss-limit | failed
    # | invalid-output (exited 0, printed no valid result) | environment
    status: str
    cause: str
    samples_ts: list[float]
    process_means: list[float] = []  # one per llama-bench process: the CI's unit
    n: int
    mean_ts: float | None
    sd_ts: float | None
    ci_low: float | None
    ci_high: float | None
    rel_ci: float | None
    processes: int
    peak_rss_mib: float
    wall_s: float
    bytes_per_token: float | None
    bandwidth_gbs: float | None
    efficiency: float | None
    thermal_before: ThermalSnap
    thermal_after: ThermalSnap
    drift: bool  # tg fell at every repetition: throttling suspected
    # One thermal-gate check per process (empty in rows stored before gating existed).
    gates: list[GateCheck] = []
    throttled: bool = False  # some process started hot or clock-capped after the gate's wait ran out
    contended: bool = False  # some process shared the cores its threads needed with other processes
    # Measured to screen for a race (min_processes, whatever the CI): resumed by a search that
    # screens too, measured again by one that wants the CI target.
    screened: bool = False
    # Our timeout or the environment, not the config: shown, never reused (the next run retries).
    transient: bool = False
    bench_row: dict[str, Any] | None  # llama-bench's own JSON row (all samples merged), for export
    build_id: str
    host_fingerprint: str
    measured_at: str
    resumed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.mean_ts is not None


class MeasureSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    ci_target: float = 0.03  # relative CI half-width over process means that stops the repeats
    reps_per_process: int = 2
    min_processes: int = 3  # the CI is over processes (see stats.summarize_groups): at least 3
    max_reps: int = 10  # repetitions over all processes
    timeout_s: float = 600
    rss_limit_mib: float | None = None
    gate: GateSettings = GateSettings()


def _next_reps(groups: list[list[float]], st: MeasureSettings, screen_reps: int | None = None) -> int:
    """Repetitions for the next llama-bench process; 0 when the CI over processes is tight enough
    (after at least `min_processes`) or the repetition budget is spent. `screen_reps`: screening
    (a race re-measures the finalists interleaved; the search only proposes them): `min_processes`
    processes of that many repetitions, whatever the CI."""
    left = st.max_reps - sum(len(g) for g in groups)
    if left <= 0 or (screen_reps is not None and len(groups) >= st.min_processes):
        return 0
    if screen_reps is not None:
        return min(screen_reps, left)
    if len(groups) >= st.min_processes:
        s = summarize_groups(groups)
        if s.mean <= 0 or s.rel_half_width <= st.ci_target:
            return 0
    return min(st.reps_per_process, left)


class PointMeasurer:
    """Measures (or finds stored) points for one model on one runtime and host."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        host: HostInfo,
        model: ModelInfo,
        settings: MeasureSettings,
        *,
        sysroot: Path = Path("/"),
        on_result: Callable[[ThroughputResult], None] | None = None,
        gate: ThermalGate | None = None,
    ) -> None:
        self.store, self.runtime, self.host, self.model = store, runtime, host, model
        self.settings = settings
        self.sysroot = sysroot
        self.gate = gate or ThermalGate(sysroot, settings.gate)
        self.on_result = on_result
        self.prov = Provenance(
            build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256
        )
        self.measured = 0  # fresh measurements this session (not resumed)

    def params(self, point: Point, test: BenchTest) -> dict[str, Any]:
        # The key is the full config and test; rep counts and CI targets are how, not what; but
        # the CI's meaning is part of what a stored row says.
        return {
            "runtime": point.runtime().model_dump(mode="json"),
            "test": {"n_prompt": test.n_prompt, "n_gen": test.n_gen, "depth": test.depth},
            "cpuset": point.cpus.name,
            "ci": "between-process",  # rows whose CI counted repetitions as independent: not reused
        }

    def stored(self, point: Point, test: BenchTest) -> ThroughputResult | None:
        key, _ = result_key(STAGE, self.prov, self.params(point, test))
        row = self.store.get(key)
        if row is None or row.version != VERSION or row.record.get("transient"):
            return None
        return ThroughputResult.model_validate({**row.record, "resumed": True})

    def measure(self, point: Point, test: BenchTest, *, screen_reps: int | None = None) -> ThroughputResult:
        """`screen_reps`: `min_processes` processes of that many repetitions, whatever the CI."""
        cached = self.stored(point, test)
        if cached is not None and not (cached.screened and screen_reps is None):
            if self.on_result:
                self.on_result(cached)
            return cached
        res = self._run(point, test, screen_reps)
        self.store.put(STAGE, self.prov, self.params(point, test), res, status=res.status, version=VERSION)
        self.measured += 1
        if self.on_result:
            self.on_result(res)
        return res

    def process(self, cfg: RuntimeConfig, test: BenchTest, reps: int) -> tuple[BenchOutcome, GateCheck]:
        """One gated llama-bench process: wait until the host is cool, then run `reps` repetitions."""
        gate = self.gate.wait(cfg.cpus)
        w = window(cfg.cpus)
        out = run_bench(
            self.runtime,
            self.model.path,
            cfg,
            test.model_copy(update={"reps": reps}),
            timeout_s=self.settings.timeout_s,
            rss_limit_mib=self.settings.rss_limit_mib,
        )
        others = others_cores(w, out.cpu_s) if out.cpu_s > 0 else None  # unreaped: not known
        ncpu = len(cfg.cpus) if cfg.cpus is not None else os.cpu_count() or 1
        busy = {"others_cores": round(others, 2) if others is not None else None,
                "contended": contended(others, cfg.threads, ncpu)}  # fmt: skip
        return out, gate.model_copy(update=busy)

    def _run(self, point: Point, test: BenchTest, screen_reps: int | None = None) -> ThroughputResult:
        cfg = point.runtime()
        st = self.settings
        before = thermal_snapshot(self.sysroot)
        t0 = time.monotonic()
        groups: list[list[float]] = []  # one list of t/s per llama-bench process
        rows: list[BenchRun] = []
        gates: list[GateCheck] = []
        status, cause, peak, processes = ExitCause.OK.value, "ok", 0.0, 0
        reps = _next_reps(groups, st, screen_reps)
        while reps > 0:
            out, gate = self.process(cfg, test, reps)
            gates.append(gate)
            processes += 1
            peak = max(peak, out.peak_rss_mib)
            if out.status is not ExitCause.OK:
                status, cause = out.status.value, out.detail
                if out.status in TRANSIENT:
                    break  # not llama.cpp's doing: no -v diagnosis, and the next run retries
                if "failed to create context" in out.detail or out.status is ExitCause.FAILED:
                    why = diagnose_failure(  # one -v re-run, within the user's timeout too
                        self.runtime, self.model.path, cfg, test, timeout_s=min(120.0, st.timeout_s)
                    )
                    if why:
                        status, cause = "unsupported", why
                break
            rows.extend(out.runs)
            groups.append(list(out.runs[0].samples_ts))
            reps = _next_reps(groups, st, screen_reps)
        after = thermal_snapshot(self.sysroot)
        res = self._record(
            point,
            cfg,
            test,
            groups,
            rows,
            status,
            cause,
            peak,
            processes,
            time.monotonic() - t0,
            before,
            after,
            gates,
        )
        return res.model_copy(update={"screened": screen_reps is not None})

    def _record(
        self,
        point: Point,
        cfg: RuntimeConfig,
        test: BenchTest,
        groups: list[list[float]],
        rows: list[BenchRun],
        status: str,
        cause: str,
        peak: float,
        processes: int,
        wall: float,
        before: ThermalSnap,
        after: ThermalSnap,
        gates: list[GateCheck],
    ) -> ThroughputResult:
        kind = "tg" if test.n_gen else "pp"
        samples = [x for g in groups for x in g]
        s = summarize_groups(groups) if samples else None
        bpt = eff = None
        bw = self.host.bandwidth_gbs
        if kind == "tg":
            bpt = decode_bytes_per_token(
                self.model, cfg.cache_type_k, cfg.cache_type_v, test.depth, test.n_gen
            )
            if s is not None and bw:
                eff = decode_efficiency(s.mean, bpt, bw)
        bench_row = None
        if rows and s is not None:
            bench_row = dict(rows[0].raw)
            # One row over every process's repetitions, so export keeps llama-bench's own shape.
            ns = [int(1e9 * (test.n_prompt + test.n_gen) / x) for x in samples if x > 0]
            bench_row.update(
                samples_ts=samples,
                avg_ts=s.mean,
                stddev_ts=s.sd,
                samples_ns=ns,
                avg_ns=int(sum(ns) / len(ns)) if ns else 0,
            )
        finite = s is not None and len(groups) > 1
        return ThroughputResult(
            model=self.model.name,
            model_sha256=self.model.sha256,
            point=point,
            config=cfg,
            test=test.name,
            kind=kind,
            n_prompt=test.n_prompt,
            n_gen=test.n_gen,
            depth=test.depth,
            status=status,
            cause=f"{cause} ({TRANSIENT_NOTE})" if status in TRANSIENT else cause,
            samples_ts=samples,
            process_means=[round(sum(g) / len(g), 3) for g in groups if g],
            n=len(samples),
            mean_ts=s.mean if s else None,
            sd_ts=s.sd if s else None,
            ci_low=s.ci_low if s and finite else None,
            ci_high=s.ci_high if s and finite else None,
            rel_ci=s.rel_half_width if s and finite else None,
            processes=processes,
            peak_rss_mib=round(peak, 1),
            wall_s=round(wall, 2),
            bytes_per_token=bpt,
            bandwidth_gbs=bw,
            efficiency=eff,
            thermal_before=before,
            thermal_after=after,
            drift=kind == "tg" and monotonic_drift(samples),
            gates=gates,
            throttled=any(g.throttled for g in gates),
            contended=any(g.contended for g in gates),
            transient=status in TRANSIENT,
            bench_row=bench_row,
            build_id=self.runtime.build_id,
            host_fingerprint=self.host.fingerprint,
            measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
