"""The workbench: the page `edgebench serve` shows at `/`, and the few read-only routes only it needs
(what a runtime config will cost before it is loaded, the report drawn live from the store). Every
action the page takes (load, unload, chat) goes through the gateway's own API.

Every figure it returns says where it came from: measured on this host (with the stored row's
config), predicted by the memory planner, or not measured."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pydantic import ValidationError
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from edgebench.runtime.flags import RuntimeConfig
from edgebench.serve.pool import ModelState
from edgebench.textsafe import one_line

if TYPE_CHECKING:
    from edgebench.config import Config
    from edgebench.host.probe import HostInfo
    from edgebench.serve.app import Gateway
    from edgebench.store import Store

__all__ = ["CONTROLS", "ControlError", "Results", "Workbench", "runtime_with"]

# the runtime controls a load may set (issue 14); everything else stays the preset's
CONTROLS = (
    "ctx",
    "cache_type_k",
    "cache_type_v",
    "flash_attn",
    "threads",
    "threads_batch",
    "cpus",
    "reasoning_budget",
)
STATIC_PREFIX = "/static/workbench"
# the live report is our own HTML, but it prints model names and metadata read from GGUF files:
# no script may run in it whatever those say
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
_CSP = {"content-security-policy": REPORT_CSP}


class ControlError(ValueError):
    """A runtime control the page sent cannot be used on this host."""


@dataclass
class Results:
    """Where the workbench reads measured results: this host's rows in the store. By path: a
    connection is opened in the worker thread that reads it (sqlite connections are per thread)."""

    cfg: Config
    store_path: Path
    host: HostInfo

    def open(self) -> Store:
        from edgebench.store import Store

        return Store(self.store_path)


def runtime_with(base: RuntimeConfig, overrides: dict[str, Any], host_cpus: set[int]) -> RuntimeConfig:
    """`base` with the page's controls applied, validated as llama-server would need them."""
    unknown = sorted(set(overrides) - set(CONTROLS))
    if unknown:
        named = one_line(", ".join(unknown), 200)  # the page's keys: untrusted text
        raise ControlError(f"runtime: unknown control(s) {named}; allowed: {', '.join(CONTROLS)}")
    try:
        cfg = RuntimeConfig.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "runtime"
        raise ControlError(one_line(f"runtime: {where}: {e['msg']}", 300)) from None
    if cfg.cpus is not None:
        foreign = sorted(set(cfg.cpus) - host_cpus)
        if foreign:
            raise ControlError(f"runtime: cpus {foreign} not on this host (usable: {sorted(host_cpus)})")
        if cfg.threads > len(cfg.cpus):
            raise ControlError(f"runtime: {cfg.threads} threads on {len(cfg.cpus)} CPU(s): one thread a CPU")
    if cfg.cache_type_v not in ("f16", "f32", "bf16") and cfg.flash_attn == "off":
        raise ControlError(f"runtime: a {cfg.cache_type_v} V cache needs flash attention (llama.cpp)")
    return cfg


def controls_of(cfg: RuntimeConfig | None) -> dict[str, Any] | None:
    if cfg is None:
        return None
    d = cfg.model_dump()
    return {k: (list(d[k]) if k == "cpus" and d[k] is not None else d[k]) for k in CONTROLS}


def _same_runtime(a: RuntimeConfig, b: RuntimeConfig, kind: str) -> bool:
    threads = (a.threads_batch or a.threads, b.threads_batch or b.threads) if kind == "pp" else None
    return (
        ((threads is None and a.threads == b.threads) or (threads is not None and threads[0] == threads[1]))
        and a.cache_type_k == b.cache_type_k
        and a.cache_type_v == b.cache_type_v
        and a.flash_attn == b.flash_attn
        and (a.cpus or None) == (b.cpus or None)
    )


def measured_speed(store: Store, sha256: str, host_fp: str, cfg: RuntimeConfig) -> dict[str, Any]:
    """Prefill and decode t/s stored for this config on this host (depth 0, newest row), else
    "not measured". A row matches on threads (prefill: threads_batch), KV types, flash attention
    and CPU set: the settings that change speed."""
    from edgebench.measure import throughput
    from edgebench.measure.throughput import ThroughputResult

    out: dict[str, Any] = {}
    found: dict[str, ThroughputResult] = {}
    for row in store.rows(throughput.STAGE, sha256):
        if row.provenance.host_fingerprint != host_fp:
            continue
        try:
            t = ThroughputResult.model_validate(row.record)
        except ValidationError:
            continue  # a row of an older record version
        if t.status == "ok" and t.depth == 0 and t.mean_ts and _same_runtime(t.config, cfg, t.kind):
            found[t.kind] = t  # rows come oldest first: the newest wins
    for kind in ("pp", "tg"):
        if kind not in found:
            out[kind] = {"source": "not measured"}
            continue
        t = found[kind]
        out[kind] = {
            "source": "measured",
            "ts": round(t.mean_ts or 0.0, 2),
            "ci": [round(t.ci_low, 2), round(t.ci_high, 2)] if t.ci_low is not None and t.ci_high else None,
            "test": t.test,
            "config": t.config.label(),
        }
    return out


class Workbench:
    def __init__(self, gateway: Gateway, results: Results | None) -> None:
        self.gw, self.results = gateway, results
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("edgebench.serve", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._report: tuple[tuple[int, str], str] | None = None  # (store state, html)
        self._report_lock = asyncio.Lock()

    @staticmethod
    def host_cpus() -> set[int]:
        try:
            return set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return set(range(os.cpu_count() or 1))

    def routes(self) -> list[BaseRoute]:
        # gzip for the page's own files only (110 KB → 36 KB): never around the SSE streams
        static = GZipMiddleware(StaticFiles(packages=[("edgebench.serve", "static")]), minimum_size=1000)
        return [
            Route("/", self.page, methods=["GET"]),
            Mount(STATIC_PREFIX, app=static, name="workbench-static"),
            Route("/workbench/api/models", self.models, methods=["GET"]),
            Route("/workbench/api/consequence", self.consequence, methods=["POST"]),
            Route("/workbench/results", self.report, methods=["GET"]),
        ]

    async def page(self, request: Request) -> Response:
        html = self._env.get_template("workbench.html.j2").render(
            static=STATIC_PREFIX, source=self.gw.table.source, has_results=self.results is not None
        )
        return HTMLResponse(html, headers={"cache-control": "no-cache"})

    # -------------------------------------------------------------------- models and presets

    def entry(self, name: str) -> dict[str, Any]:
        slot = self.gw.pool.slots[name]
        spec = slot.served.spec
        e = self.gw.model_entry(name)
        e["preset"] = controls_of(slot.preset)
        e["config"] = controls_of(slot.cfg)
        e["sources"] = list(spec.sources) if spec else []
        e["measured"] = (
            {"pp_ts": spec.pp_ts, "tg_ts": spec.tg_ts, "peak_rss_mib": spec.peak_rss_mib} if spec else None
        )
        if slot.loading_since is not None:
            e["loading_s"] = round(time.monotonic() - slot.loading_since, 1)
            e["log_tail"] = _last_line(self.gw.pool.log_file(name))
        return e

    async def models(self, request: Request) -> Response:
        pool = self.gw.pool
        tiers = [
            {"name": t.name, "primary": t.primary, "backup": t.backup, "closest": t.closest, "why": t.why}
            for t in self.gw.table.tiers.values()
        ]
        return JSONResponse(
            {
                "models": [self.entry(n) for n in pool.slots],
                "tiers": tiers,
                "budget_mib": pool.budget_mib,
                "used_mib": round(pool.used_mib(), 1),
                "cpus": sorted(self.host_cpus()),
                "source": self.gw.table.source,
            }
        )

    async def consequence(self, request: Request) -> Response:
        """What loading `model` with these controls will cost, before the button is pressed."""
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body: not JSON", "bad_request")
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or name not in self.gw.pool.slots:
            return _error(404, f"model {name!r}: not served here", "not_found")
        slot = self.gw.pool.slots[name]
        if slot.served.spec is None or slot.preset is None:
            return JSONResponse({"model": name, "memory": {"source": "remote"}, "speed": {}})
        overrides = body.get("runtime") or {}
        if not isinstance(overrides, dict):
            return _error(400, "runtime: an object of controls is needed", "bad_request")
        try:
            cfg = runtime_with(slot.preset, overrides, self.host_cpus())
        except ControlError as exc:
            return _error(400, str(exc), "bad_control")
        memory = await asyncio.to_thread(self.memory_for, name, cfg)
        speed: dict[str, Any] = {"pp": {"source": "not measured"}, "tg": {"source": "not measured"}}
        if self.results is not None:
            speed = await asyncio.to_thread(self._speed, slot.served.spec.model_sha256, cfg)
        pool = self.gw.pool
        free = None if pool.budget_mib is None else round(pool.budget_mib - pool.used_mib(exclude=name), 1)
        return JSONResponse(
            {"model": name, "runtime": controls_of(cfg), "memory": memory, "speed": speed, "free_mib": free}
        )

    def _speed(self, sha256: str, cfg: RuntimeConfig) -> dict[str, Any]:
        assert self.results is not None
        with self.results.open() as store:
            return measured_speed(store, sha256, self.results.host.fingerprint, cfg)

    def memory_for(self, name: str, cfg: RuntimeConfig) -> dict[str, Any]:
        """Measured when this exact config was measured (the preset's context probe, or the server
        running it now); otherwise the planner's prediction, labelled so."""
        slot = self.gw.pool.slots[name]
        spec = slot.served.spec
        assert spec is not None
        if cfg == slot.cfg and slot.server is not None and slot.state == ModelState.READY:
            return {"mib": round(slot.server.peak_rss_mib, 1), "source": "measured", "detail": "running now"}
        if cfg == slot.preset and spec.peak_rss_mib:
            return {"mib": round(spec.peak_rss_mib, 1), "source": "measured", "detail": "context probe"}
        from edgebench.models.gguf import read_model_info
        from edgebench.models.memory import plan_memory

        host = self.results.host if self.results else None
        try:
            plan = plan_memory(
                read_model_info(Path(spec.model_path)),
                cfg,
                host_arch=host.arch if host else "x86_64",
                cpu_flags=host.cpu_flags if host and host.cpu_flags else None,
            )
        except Exception as exc:  # an unplannable model or config: said, not guessed
            return {"source": "unknown", "detail": f"planner: {type(exc).__name__}: {exc}"[:300]}
        return {
            "mib": round(plan.host_total_mib, 1),
            "source": "predicted",
            "detail": f"planner: weights {plan.model_mib + plan.repack_mib:.0f} MiB, "
            f"KV {plan.kv_mib:.0f} MiB, compute {plan.compute_mib + plan.work_mib:.0f} MiB "
            f"at context {plan.n_ctx}",
        }

    # -------------------------------------------------------------------- the report, live

    async def report(self, request: Request) -> Response:
        if self.results is None:
            return HTMLResponse(
                "<p>No results store: the page was started without one.</p>",
                headers=_CSP,
            )
        async with self._report_lock:  # drawn once per store state: matplotlib takes seconds
            self._report = await asyncio.to_thread(_render_report, self.results, self._report)
            html = self._report[1]
        return HTMLResponse(html, headers={**_CSP, "cache-control": "no-cache"})


def _render_report(r: Results, last: tuple[tuple[int, str], str] | None) -> tuple[tuple[int, str], str]:
    """The report `edgebench report` writes for this host's rows (the pipeline's decide, into a
    scratch directory); `last` again while the store has not changed."""
    from edgebench.pipeline.decide import decide

    with r.open() as store:
        state = (store.count(), r.host.fingerprint)
        if last is not None and last[0] == state:
            return last
        with tempfile.TemporaryDirectory(prefix="edgebench-wb-") as d:
            made = decide(r.cfg, store, r.host, None, out_dir=Path(d))
            assert made.html is not None
            return state, made.html.read_text(encoding="utf-8")


def _last_line(path: Path) -> str | None:
    """The last line llama-server logged (load progress), printable ASCII only."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 2048))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return "".join(c for c in lines[-1] if c.isprintable())[:200] if lines else None


def _error(status: int, msg: str, cls: str) -> JSONResponse:
    return JSONResponse({"error": {"message": msg, "type": cls, "code": cls}}, status)
