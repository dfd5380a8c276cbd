"""llama-server processes for the gateway: started on demand, admitted against a memory budget.

All state lives in one event loop (one owner, no races between starts and evictions); the blocking
parts (ServerProcess.start/stop) run in threads. Rules:
- one process per model, started under that model's lock (8 first requests start it once);
- a start is admitted only when the models already loaded plus this one's charge fit the budget;
  idle models (no request running or queued) are evicted least-recently-used to make room, a busy
  one never: when nothing idle can make room the request gets `NoRoom` (503 + Retry-After);
- a model's charge is its measured peak RSS from the context probe, else the planner's prediction,
  replaced by the RSS measured after its first load;
- requests run in at most `slots` (llama-server's -np) at once per model; waiting ones are ordered
  by arrival + predicted time (short requests first, none starves), and past `queue_depth` get
  `QueueFull` (429 + Retry-After);
- a process found dead is restarted on the next request; one idle past its tier's ttl is stopped.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import ExitCause
from edgebench.runtime.server import ServerFailed, ServerProcess
from edgebench.serve.predict import Speed
from edgebench.serve.table import Memory, Served

__all__ = ["Lease", "ModelState", "NoRoom", "Pool", "QueueFull", "StartFailed"]

log = logging.getLogger("edgebench.serve")


class ModelState(StrEnum):
    STOPPED = "stopped"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class _Refusal(EdgebenchError):
    def __init__(self, msg: str, retry_after_s: float) -> None:
        super().__init__(msg)
        self.retry_after_s = retry_after_s


class NoRoom(_Refusal):
    """No idle model can be evicted to make room in the memory budget."""


class QueueFull(_Refusal):
    """The model's queue is full."""


class StartFailed(EdgebenchError):
    """The model's llama-server would not start (the cause classified by runtime.server)."""


@dataclass
class _Slot:
    served: Served
    speed: Speed
    cfg: RuntimeConfig | None  # the runtime it is started with (spec + core pinning, or a load's own)
    ttl_s: float
    preset: RuntimeConfig | None = None  # the measured serving config: what `cfg` returns to
    state: ModelState = ModelState.STOPPED
    server: ServerProcess | None = None
    charge: Memory | None = None  # current charge against the budget
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # requests running or queued on this model: it is busy, never evicted
    active: int = 0
    waiting: list[tuple[float, int, asyncio.Future[None]]] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)
    starts: int = 0
    restarts: int = 0
    error: str | None = None
    loading_since: float | None = None  # monotonic time the current start began

    @property
    def slots(self) -> int:
        return self.cfg.parallel if self.cfg is not None else 4

    @property
    def resident(self) -> bool:
        return self.state in (ModelState.LOADING, ModelState.READY)


@dataclass
class Lease:
    """One admitted request on one model: `base_url` to send it to."""

    name: str
    base_url: str
    cold: bool  # this request waited for a start
    speed: Speed


class Pool:
    def __init__(
        self,
        models: dict[str, Served],
        runtime: Runtime | None,
        log_dir: Path,
        *,
        budget_mib: float | None,
        ready_timeout_s: float,
        queue_depth: int,
        ttl_s: Callable[[str], float],
        runtime_for: Callable[[Served], RuntimeConfig | None],
        on_evict: Callable[[str], None] = lambda name: None,
    ) -> None:
        self._runtime = runtime
        self._log_dir = log_dir
        self.budget_mib = budget_mib
        self.ready_timeout_s = ready_timeout_s
        self.queue_depth = queue_depth
        self._on_evict = on_evict
        self._admit = asyncio.Lock()  # one admission decision at a time
        self._seq = itertools.count()
        self.slots: dict[str, _Slot] = {}
        for name, s in models.items():
            spec = s.spec
            speed = Speed(spec.pp_ts, spec.tg_ts, spec.load_s) if spec else Speed(None, None, None)
            cfg = runtime_for(s)
            slot = _Slot(served=s, speed=speed, cfg=cfg, ttl_s=ttl_s(name), charge=s.memory, preset=cfg)
            if s.remote is not None:  # always up: we do not start it; it holds its declared memory
                slot.state = ModelState.READY
            self.slots[name] = slot

    # ------------------------------------------------------------------ budget

    def used_mib(self, exclude: str | None = None) -> float:
        return sum(
            s.charge.mib
            for n, s in self.slots.items()
            if n != exclude and s.resident and s.charge is not None
        )

    async def _make_room(self, slot: _Slot) -> None:
        """Evict idle models, least recently used first, until `slot` fits; else NoRoom."""
        if self.budget_mib is None or slot.charge is None:
            return
        need = slot.charge.mib
        name = slot.served.name
        if need > self.budget_mib:
            raise NoRoom(
                f"model {name}: needs {need:.0f} MiB ({slot.charge.source}), over the whole budget "
                f"of {self.budget_mib:.0f} MiB",
                retry_after_s=3600,
            )
        free = self.budget_mib - self.used_mib(exclude=name)
        if free >= need:
            return
        idle = sorted(
            (
                s
                for n, s in self.slots.items()
                if n != name and s.state == ModelState.READY and s.users == 0 and s.served.spec is not None
            ),
            key=lambda s: s.last_used,
        )
        room, chosen = free, []
        for s in idle:
            if room >= need:
                break
            chosen.append(s)
            room += s.charge.mib if s.charge else 0.0
        if room < need:
            busy = [
                f"{n} {s.charge.mib:.0f} MiB"
                for n, s in self.slots.items()
                if n != name and s.resident and s.charge is not None and s not in chosen
            ]
            raise NoRoom(
                f"model {name}: needs {need:.0f} MiB ({slot.charge.source}), {free:.0f} of "
                f"{self.budget_mib:.0f} MiB free; busy: {', '.join(busy) or 'none'}",
                retry_after_s=self._retry_after(),
            )
        # all marked stopped before the first await: a request arriving meanwhile starts them anew
        servers = []
        for s in chosen:
            log.info("evict %s (idle, least recently used) to make room for %s", s.served.name, name)
            servers.append(s.server)
            s.server, s.state = None, ModelState.STOPPED
            self._on_evict(s.served.name)
        for srv in servers:
            if srv is not None:
                await asyncio.to_thread(srv.stop)

    def _retry_after(self) -> float:
        return 5.0

    # ------------------------------------------------------------------ lifecycle

    async def _ensure_ready(self, slot: _Slot) -> bool:
        """Start the model if needed; True when this call waited for a start (a cold request)."""
        if slot.served.spec is None:
            return False
        async with slot.lock:
            if slot.state == ModelState.READY and slot.server is not None:
                if slot.server.alive():
                    return False
                log.warning(
                    "model %s: llama-server died (pid %s); restarting", slot.served.name, slot.server.pid
                )
                slot.restarts += 1
                await self._stop(slot)
            async with self._admit:
                await self._make_room(slot)
                slot.state = ModelState.LOADING  # counted in the budget from here on
            try:
                await self._start(slot)
            except ServerFailed as exc:
                slot.state, slot.error = ModelState.FAILED, str(exc)
                slot.charge = slot.served.memory
                raise StartFailed(f"model {slot.served.name}: {exc}") from exc
            return True

    async def _start(self, slot: _Slot) -> None:
        spec = slot.served.spec
        assert spec is not None and slot.cfg is not None
        if self._runtime is None:
            raise _no_runtime(slot.served.name)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        srv = ServerProcess(
            self._runtime,
            spec.model_path,
            slot.cfg,
            self.log_file(spec.model),
            ready_timeout_s=self.ready_timeout_s,
        )
        slot.starts += 1
        t0 = slot.loading_since = time.monotonic()
        try:
            await asyncio.to_thread(srv.start)
        finally:
            slot.loading_since = None
        srv.watch_slowly()
        slot.server, slot.state, slot.error = srv, ModelState.READY, None
        if slot.speed.load_s is None:
            slot.speed.load_s = time.monotonic() - t0
        if slot.charge is None or slot.charge.source != "measured":
            # the prediction is replaced by what this process holds once loaded
            slot.charge = Memory(mib=srv.peak_rss_mib, source="measured at load")
        log.info("model %s ready on %s in %.1f s", spec.model, srv.base_url, time.monotonic() - t0)

    async def _stop(self, slot: _Slot, grace_s: float = 10) -> None:
        srv, slot.server = slot.server, None
        slot.state = ModelState.STOPPED
        if srv is not None:
            await asyncio.to_thread(srv.stop, grace_s)

    async def unload(self, name: str, *, force: bool = False) -> bool:
        """Stop a model; a busy one only with `force` (admin)."""
        slot = self.slots[name]
        if slot.served.spec is None or not slot.resident:
            return False
        if slot.users and not force:
            raise NoRoom(f"model {name}: {slot.users} request(s) running or queued", self._retry_after())
        async with slot.lock:
            await self._stop(slot)
        return True

    def log_file(self, name: str) -> Path:
        return self._log_dir / f"{name}.log"

    async def load(self, name: str, cfg: RuntimeConfig | None = None, charge: Memory | None = None) -> bool:
        """Start `name` (True: this call started it). With `cfg` (a workbench load's own runtime): a
        server running another config is stopped first, and until it runs again the budget counts
        `charge` (the planner's prediction for that config) instead of the preset's measured memory."""
        slot = self.slots[name]
        if cfg is not None and slot.served.spec is not None and cfg != slot.cfg:
            if slot.users:
                raise NoRoom(f"model {name}: {slot.users} request(s) running or queued", self._retry_after())
            async with slot.lock:
                if slot.resident:
                    log.info("model %s: restarting with another runtime config", name)
                    await self._stop(slot)
                slot.cfg = cfg
                spec = slot.served.spec
                if cfg == slot.preset:
                    slot.charge = slot.served.memory
                    slot.speed = Speed(spec.pp_ts, spec.tg_ts, spec.load_s)
                else:  # the preset's measured speed and memory are not this config's
                    slot.charge = charge
                    slot.speed = Speed(None, None, None)
        return await self._ensure_ready(slot)

    async def restart_after_stall(self, name: str) -> None:
        """The server stopped producing tokens: kill it; the next request starts a new one."""
        slot = self.slots[name]
        if slot.served.spec is None or slot.server is None:
            return
        slot.restarts += 1
        srv, slot.server, slot.state = slot.server, None, ModelState.STOPPED
        await asyncio.to_thread(srv.stop, 1)

    async def reap_idle(self) -> list[str]:
        now, stopped = time.monotonic(), []
        for name, slot in self.slots.items():
            if (
                slot.served.spec is not None
                and slot.state == ModelState.READY
                and slot.users == 0
                and now - slot.last_used > slot.ttl_s
                and not slot.lock.locked()
            ):
                async with slot.lock:
                    if slot.users == 0 and slot.state == ModelState.READY:
                        log.info("model %s idle for %.0f s (ttl): unloading", name, now - slot.last_used)
                        await self._stop(slot)
                        stopped.append(name)
        return stopped

    async def close(self) -> None:
        for slot in self.slots.values():
            if slot.server is not None:
                await self._stop(slot)

    # ------------------------------------------------------------------ requests

    def queued(self, name: str) -> int:
        """Requests waiting for a slot or for the model's start."""
        s = self.slots[name]
        return s.users - s.active

    @asynccontextmanager
    async def lease(self, name: str, priority_s: float = 0.0) -> AsyncIterator[Lease]:
        """Admit one request on `name`: start it if needed, wait for a free slot, release after."""
        slot = self.slots[name]
        if slot.users >= slot.slots + self.queue_depth:  # running + queued (waiting for a slot or its start)
            raise QueueFull(
                f"model {name}: {self.queued(name)} requests already queued (limit {self.queue_depth})",
                retry_after_s=max(1.0, priority_s),
            )
        slot.users += 1
        acquired = False
        try:
            cold = await self._ensure_ready(slot)
            await self._acquire(slot, priority_s)
            acquired = True
            if slot.served.spec is not None and (slot.server is None or slot.state != ModelState.READY):
                # stopped while this request waited (a stall restart): start it again
                cold = await self._ensure_ready(slot) or cold
            url = slot.server.base_url if slot.server is not None else self._remote_url(slot)
            yield Lease(name=name, base_url=url, cold=cold, speed=slot.speed)
        finally:
            if acquired:
                self._release(slot)
            slot.users -= 1
            slot.last_used = time.monotonic()

    def _remote_url(self, slot: _Slot) -> str:
        assert slot.served.remote is not None
        return slot.served.remote.url

    async def _acquire(self, slot: _Slot, priority_s: float) -> None:
        if slot.active < slot.slots and not slot.waiting:
            slot.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # arrival time + predicted seconds: short requests first, yet a long one is passed only by
        # requests that arrived less than its predicted time after it (it never starves)
        entry = (time.monotonic() + priority_s, next(self._seq), fut)
        heapq.heappush(slot.waiting, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(slot)  # it was handed a slot just as the client left: pass it on
            else:
                slot.waiting.remove(entry)
                heapq.heapify(slot.waiting)
            raise

    def _release(self, slot: _Slot) -> None:
        while slot.waiting:
            _, _, fut = heapq.heappop(slot.waiting)
            if not fut.done():
                fut.set_result(None)  # the slot passes straight to it: active stays the same
                return
        slot.active -= 1


def _no_runtime(name: str) -> ServerFailed:
    return ServerFailed(ExitCause.ENVIRONMENT, f"no llama.cpp build to start {name} with", "")
