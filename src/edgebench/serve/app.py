"""The gateway: an OpenAI-compatible ASGI app (Starlette) over the pool of llama-servers.

Fallback contract: before the first byte reaches the client, a failed start, a connection error, a
5xx, a timeout or an over-long prompt moves the request to its tier's backup; after it, the client
gets an SSE `error` event and `data: [DONE]`, never a silent cut. A stream silent for longer than
max(stall_k × the model's measured inter-token time, stall_floor_s) is cut that way and its
llama-server restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgebench.backends.base import ChatRequest
from edgebench.backends.openai import estimate_tokens
from edgebench.pool import BundleError, merge_bundle
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.serve.metrics import Metrics
from edgebench.serve.pool import Lease, NoRoom, Pool, QueueFull, StartFailed
from edgebench.serve.predict import Prediction, prompt_chars
from edgebench.serve.route import BENCHMARK_FIELD, Decision, RouteError, resolve
from edgebench.serve.table import Memory, Served, ServeTable
from edgebench.serve.upstream import Upstream, UpstreamError, UpstreamTimeout
from edgebench.serve.workbench import ControlError, Results, Workbench, runtime_with
from edgebench.textsafe import one_line

__all__ = ["Gateway", "GatewaySettings", "build_app"]

log = logging.getLogger("edgebench.serve")
access = logging.getLogger("edgebench.serve.access")

OPEN_PATHS = frozenset({"/health", "/"})  # liveness, and the workbench page's shell (its calls send the key)
OPEN_PREFIXES = ("/static/workbench/",)


@dataclass(frozen=True)
class GatewaySettings:
    log_dir: Path
    api_key: str | None = None
    budget_mib: float | None = None
    ready_timeout_s: float = 300
    queue_depth: int = 16
    max_body_bytes: int = 4 * 2**20
    stall_k: float = 20
    stall_floor_s: float = 10
    cors_origins: tuple[str, ...] = ()
    ttl_s: float = 600
    tier_ttl_s: dict[str, float] = field(default_factory=dict)
    reap_every_s: float = 1.0


class _HTTPError(Exception):
    def __init__(self, status: int, msg: str, cls: str, retry_after_s: float | None = None) -> None:
        super().__init__(msg)
        self.status, self.msg, self.cls, self.retry_after_s = status, msg, cls, retry_after_s


class _Upstream(Exception):
    """The upstream failed before the first byte reached the client: the backup may take it."""


def _error_body(msg: str, cls: str) -> dict[str, Any]:
    return {"error": {"message": msg, "type": cls, "code": cls}}


def _ascii(s: str) -> str:
    return s.encode("ascii", "replace").decode()[:300]


def sse_error(msg: str, cls: str) -> bytes:
    return b"event: error\ndata: " + json.dumps(_error_body(msg, cls)).encode() + b"\n\ndata: [DONE]\n\n"


class _Guard:
    """Pure ASGI: API key (constant-time) and body size before any handler runs."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app, self._key, self._max = app, api_key.encode() if api_key else None, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        path = scope["path"]
        if self._key is not None and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
            got = headers.get("authorization", b"")
            token = got[7:].strip() if got[:7].lower() == b"bearer " else headers.get("x-api-key", b"")
            if not hmac.compare_digest(token, self._key):
                await JSONResponse(_error_body("invalid or missing API key", "unauthorized"), 401)(
                    scope, receive, send
                )
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max):
            await JSONResponse(_error_body(f"request body over {self._max} bytes", "too_large"), 413)(
                scope, receive, send
            )
            return
        await self.app(scope, self._capped(receive), send)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self._max:  # chunked upload without a length: counted as it arrives
                    raise _TooLarge
            return msg

        return wrapped


class _TooLarge(Exception):
    pass


class _Relay(StreamingResponse):
    """A stream whose clean-up (upstream response, the model's lease) runs however it ends."""

    def __init__(self, body: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(body, media_type="text/event-stream", **kw)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


class Gateway:
    def __init__(
        self,
        table: ServeTable,
        runtime: Runtime | None,
        settings: GatewaySettings,
        *,
        runtime_for: Callable[[Served], RuntimeConfig | None] | None = None,
        results: Results | None = None,
    ) -> None:
        self.table, self.settings = table, settings
        self.pool = Pool(
            table.models,
            runtime,
            settings.log_dir,
            budget_mib=settings.budget_mib,
            ready_timeout_s=settings.ready_timeout_s,
            queue_depth=settings.queue_depth,
            ttl_s=self._ttl,
            runtime_for=runtime_for or (lambda s: s.spec.runtime if s.spec else None),
            on_evict=lambda name: self.metrics.evictions.labels(name).inc(),
        )
        self.metrics = Metrics(self.pool)
        self._http = Upstream()
        self._tasks: set[asyncio.Task[None]] = set()
        self.results = results
        self.workbench = Workbench(self, results)

    # ------------------------------------------------------------------ set-up

    def _tiers_of(self, name: str) -> list[str]:
        return [t.name for t in self.table.tiers.values() if name in (t.primary, t.backup, t.closest)]

    def _ttl(self, name: str) -> float:
        ttls = [self.settings.tier_ttl_s[t] for t in self._tiers_of(name) if t in self.settings.tier_ttl_s]
        return max(ttls) if ttls else self.settings.ttl_s

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self._http.start()
        reaper = asyncio.create_task(self._reap())
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            for t in list(self._tasks):
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await t
            await self._http.close()
            await self.pool.close()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_every_s)
            try:
                await self.pool.reap_idle()
            except Exception:  # a failed stop must not end idle unloading for good
                log.exception("idle unload failed")

    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_page, methods=["GET"]),
            Route("/admin/load", self.admin_load, methods=["POST"]),
            Route("/admin/unload", self.admin_unload, methods=["POST"]),
            Route("/admin/running", self.admin_running, methods=["GET"]),
            Route("/admin/results", self.admin_results, methods=["POST"]),
            *self.workbench.routes(),
        ]
        middleware = [
            Middleware(_Guard, api_key=self.settings.api_key, max_body=self.settings.max_body_bytes)
        ]
        if self.settings.cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware, allow_origins=list(self.settings.cors_origins), allow_headers=["*"]
                )
            )
        return Starlette(routes=routes, middleware=middleware, lifespan=self.lifespan)

    # ------------------------------------------------------------------ info routes

    def model_entry(self, name: str) -> dict[str, Any]:
        s = self.pool.slots[name]
        sv = s.served
        return {
            "id": name,
            "object": "model",
            "owned_by": "edgebench",
            "kind": sv.kind,
            "state": s.state.value,
            "error": s.error,
            "context": sv.max_ctx,
            "pp_ts": s.speed.pp_ts,
            "tg_ts": s.speed.tg_ts,
            "speed_source": s.speed.source if s.speed.tg_ts else None,
            "memory_mib": round(s.charge.mib, 1) if s.charge else None,
            "memory_source": s.charge.source if s.charge else None,
            "tiers": self._tiers_of(name),
            "chat_template": sv.spec.chat_template if sv.spec else None,
        }

    async def models(self, request: Request) -> JSONResponse:
        data = [self.model_entry(n) for n in self.pool.slots]
        for t in self.table.tiers.values():
            target = t.primary or t.closest
            data.append(
                {
                    "id": t.name,
                    "object": "model",
                    "owned_by": "edgebench",
                    "kind": "tier",
                    "primary": t.primary,
                    "backup": t.backup,
                    "closest": t.closest,
                    "state": self.pool.slots[target].state.value if target in self.pool.slots else "unserved",
                    "why": t.why,
                }
            )
        if self.table.tiers:
            data.append({"id": "auto", "object": "model", "owned_by": "edgebench", "kind": "auto"})
        return JSONResponse({"object": "list", "data": data, "source": self.table.source})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse(
            {"status": "ok", "models": {n: s.state.value for n, s in self.pool.slots.items()}}
        )

    async def metrics_page(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def admin_results(self, request: Request) -> JSONResponse:
        """A board pushes its bundle (`edgebench results export`): merged into this store as
        `results import` does. Only on a gateway with an API key, even on loopback: rows in the
        store decide what is served."""
        if self.settings.api_key is None:
            return JSONResponse(
                _error_body("pushing results needs a gateway started with an API key", "forbidden"), 403
            )
        if self.results is None:
            return JSONResponse(_error_body("this gateway has no results store", "unavailable"), 503)
        body = await request.body()
        results = self.results

        def merge() -> dict[str, Any]:
            with results.open() as st:
                s = merge_bundle(st, body.decode("utf-8", errors="replace"), "(pushed)")
            return {"added": s.added, "same": s.same, "conflicts": s.conflicts, "hosts_added": s.hosts_added}

        try:
            return JSONResponse(await asyncio.to_thread(merge))
        except BundleError as e:
            return JSONResponse(_error_body(one_line(str(e), 300), "invalid_request"), 400)

    async def admin_running(self, request: Request) -> JSONResponse:
        running = []
        for n, s in self.pool.slots.items():
            if s.resident and s.served.spec is not None:
                running.append(
                    {
                        **self.model_entry(n),
                        "pid": s.server.pid if s.server else None,
                        "url": s.server.base_url if s.server else None,
                        "in_flight": s.active,
                        "queued": self.pool.queued(n),
                        "idle_s": round(time.monotonic() - s.last_used, 1),
                        "ttl_s": s.ttl_s,
                    }
                )
        return JSONResponse(
            {
                "running": running,
                "budget_mib": self.pool.budget_mib,
                "used_mib": round(self.pool.used_mib(), 1),
            }
        )

    async def _admin_model(self, request: Request) -> str:
        return self._named(await self._json(request))

    def _named(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if not isinstance(name, str) or name not in self.pool.slots:
            raise _HTTPError(404, f"model {name!r}: not served here", "not_found")
        return name

    async def admin_load(self, request: Request) -> Response:
        return await self._guarded(request, self._admin_load)

    async def _admin_load(self, request: Request) -> Response:
        """Start a model; `runtime` (the workbench's controls) starts it with its own config."""
        body = await self._json(request)
        name = self._named(body)
        overrides = body.get("runtime")
        cfg, charge = None, None
        slot = self.pool.slots[name]
        if overrides:
            if not isinstance(overrides, dict):
                raise _HTTPError(400, "runtime: an object of controls is needed", "bad_request")
            if slot.preset is None:
                raise _HTTPError(400, f"model {name}: a remote backend has no runtime to set", "bad_control")
            try:
                cfg = runtime_with(slot.preset, overrides, Workbench.host_cpus())
            except ControlError as exc:
                raise _HTTPError(400, str(exc), "bad_control") from exc
            mem = await asyncio.to_thread(self.workbench.memory_for, name, cfg)
            if "mib" not in mem and self.pool.budget_mib is not None:  # the budget could not hold it
                raise _HTTPError(400, f"runtime: memory not predictable ({mem.get('detail')})", "bad_control")
            charge = Memory(mib=mem["mib"], source="predicted") if "mib" in mem else None
        elif slot.preset is not None and slot.cfg != slot.preset:
            cfg = slot.preset  # a plain load returns to the measured preset
        started = await self._call(name, self.pool.load(name, cfg, charge))
        return JSONResponse({"model": name, "started": started, **self.workbench.entry(name)})

    async def admin_unload(self, request: Request) -> Response:
        return await self._guarded(request, self._admin_unload)

    async def _admin_unload(self, request: Request) -> Response:
        name = await self._admin_model(request)
        stopped = await self._call(name, self.pool.unload(name))
        return JSONResponse({"model": name, "stopped": stopped, **self.model_entry(name)})

    async def _call(self, name: str, aw: Awaitable[bool]) -> bool:
        try:
            return await aw
        except NoRoom as exc:
            raise _HTTPError(503, str(exc), "no_room", exc.retry_after_s) from exc
        except StartFailed as exc:
            raise _HTTPError(502, str(exc), "start_failed") from exc

    # ------------------------------------------------------------------ completions

    async def chat(self, request: Request) -> Response:
        return await self._guarded(request, lambda r: self._proxy(r, "/v1/chat/completions"))

    async def completions(self, request: Request) -> Response:
        return await self._guarded(request, lambda r: self._proxy(r, "/v1/completions"))

    async def _guarded(self, request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.monotonic()
        try:
            resp = await handler(request)
        except _HTTPError as exc:
            headers = {"retry-after": str(math.ceil(exc.retry_after_s))} if exc.retry_after_s else {}
            self.metrics.errors.labels("-", exc.cls).inc()
            resp = JSONResponse(_error_body(exc.msg, exc.cls), exc.status, headers=headers)
        except _TooLarge:
            self.metrics.errors.labels("-", "too_large").inc()
            resp = JSONResponse(
                _error_body(f"request body over {self.settings.max_body_bytes} bytes", "too_large"), 413
            )
        access.info(
            '%s "%s %s" %d model=%s route="%s" %.3fs',
            request.client.host if request.client else "-",
            request.method,
            request.url.path,
            resp.status_code,
            resp.headers.get("x-edgebench-model", "-"),
            resp.headers.get("x-edgebench-route", "-"),
            time.monotonic() - t0,
        )
        return resp

    async def _json(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _HTTPError(400, f"request body: not JSON: {exc}", "bad_request") from exc
        if not isinstance(body, dict):
            raise _HTTPError(400, "request body: a JSON object is needed", "bad_request")
        return body

    def _predict_interactive(self, chars: int, max_tokens: int | None) -> float | None:
        tier = self.table.tier("fast_chat")
        if tier is None or tier.primary not in self.pool.slots:
            return None
        s = self.pool.slots[tier.primary]
        p = s.speed.predict(chars, max_tokens, cold=not s.resident)
        return p.seconds if p else None

    async def _proxy(self, request: Request, path: str) -> Response:
        body = await self._json(request)
        try:
            decision = resolve(body, request.headers, self.table, self._predict_interactive)
        except RouteError as exc:
            raise _HTTPError(exc.status, str(exc), "route") from exc
        body.pop(BENCHMARK_FIELD, None)
        candidates = [decision.model] + ([decision.backup] if decision.backup else [])
        failures: list[str] = []
        last: _HTTPError | None = None
        for i, name in enumerate(candidates):
            if i > 0:
                self.metrics.fallbacks.labels(candidates[0], name).inc()
                log.warning("fallback %s → %s: %s", candidates[0], name, failures[-1])
            try:
                return await self._serve_on(request, path, body, name, decision, failures)
            except _Upstream as exc:
                failures.append(f"{name}: {exc}")
                last = _HTTPError(502, f"model {name}: {exc}", "upstream")
            except _HTTPError as exc:
                if exc.cls not in ("no_room", "start_failed", "over_context") or decision.benchmark:
                    raise
                failures.append(f"{name}: {exc.msg}")
                last = exc
        assert last is not None
        if len(failures) > 1:
            last = _HTTPError(last.status, "; ".join(failures), last.cls, last.retry_after_s)
        raise last

    async def _serve_on(
        self,
        request: Request,
        path: str,
        body: dict[str, Any],
        name: str,
        decision: Decision,
        failures: list[str],
    ) -> Response:
        slot = self.pool.slots[name]
        served = slot.served
        chars = prompt_chars(body)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        max_tokens = max_tokens if isinstance(max_tokens, int) else None
        # a managed model's context is its current runtime's (a workbench load may set its own)
        max_ctx = (slot.cfg.ctx or None) if slot.cfg is not None else served.max_ctx
        if max_ctx is not None:
            need = estimate_tokens(
                ChatRequest(
                    messages=body.get("messages") or [],
                    prompt=body.get("prompt") if isinstance(body.get("prompt"), str) else None,
                    tools=body.get("tools"),
                    max_tokens=max_tokens or 0,
                )
            ) + (max_tokens or 0)
            if need > max_ctx:
                raise _HTTPError(
                    400,
                    f"request needs about {need} tokens, over the context of {max_ctx}",
                    "over_context",
                )
        pred = slot.speed.predict(chars, max_tokens, cold=not slot.resident)
        stream = bool(body.get("stream"))
        route = decision.header()
        if failures:
            route += f"; fallback from {failures[0]}"
        headers = {"x-edgebench-model": _ascii(name), "x-edgebench-route": _ascii(route)}
        if pred is not None:
            headers["x-edgebench-predicted-s"] = f"{pred.seconds:.3f}"
            self.metrics.predicted.labels(name).observe(pred.seconds)
        priority = 0.0 if decision.benchmark or pred is None else pred.seconds
        up_body = dict(body)
        if served.remote is not None and served.remote.model:
            up_body["model"] = served.remote.model
        up_headers = {}
        if served.remote is not None and served.remote.api_key_env:
            key = os.environ.get(served.remote.api_key_env)
            if key:
                up_headers["authorization"] = f"Bearer {key}"
        t0 = time.monotonic()
        stack = AsyncExitStack()
        try:
            try:
                lease = await stack.enter_async_context(self.pool.lease(name, priority))
            except QueueFull as exc:
                raise _HTTPError(429, str(exc), "queue_full", exc.retry_after_s) from exc
            except NoRoom as exc:
                raise _HTTPError(503, str(exc), "no_room", exc.retry_after_s) from exc
            except StartFailed as exc:
                raise _HTTPError(502, str(exc), "start_failed") from exc
            if stream:
                return await self._stream(lease, path, up_body, up_headers, headers, pred, chars, t0, stack)
            return await self._whole(lease, path, up_body, up_headers, headers, pred, chars, t0)
        except BaseException:
            await stack.aclose()
            raise
        finally:
            if not stream:
                await stack.aclose()

    def _timeouts(self, lease: Lease, pred: Prediction | None) -> tuple[float, float]:
        """(first byte, between chunks): k × the measured times, never under the floor."""
        floor, k = self.settings.stall_floor_s, self.settings.stall_k
        itl = lease.speed.inter_token_s()
        stall = max(floor, k * itl) if itl else max(floor, 60.0)
        first = max(stall, 3 * pred.seconds + floor) if pred else max(stall, 600.0)
        return first, stall

    def _record(self, name: str, status: int, route: str, t0: float, pred: Prediction | None) -> None:
        took = time.monotonic() - t0
        self.metrics.requests.labels(name, route.split(";")[0].split(":")[0], f"{status // 100}xx").inc()
        self.metrics.duration.labels(name).observe(took)
        if pred is not None and pred.seconds > 0:
            self.metrics.prediction_ratio.labels(name).observe(took / pred.seconds)

    def _refit(self, lease: Lease, chars: int, doc: dict[str, Any]) -> None:
        timings = doc.get("timings") if isinstance(doc.get("timings"), dict) else None
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else {}
        pt = usage.get("prompt_tokens") if usage else None
        lease.speed.refit(timings, chars, pt if isinstance(pt, int) else None)
        if timings and isinstance(timings.get("predicted_per_second"), int | float):
            self.metrics.tokens_per_s.labels(lease.name).set(timings["predicted_per_second"])

    async def _whole(
        self,
        lease: Lease,
        path: str,
        body: dict[str, Any],
        up_headers: dict[str, str],
        headers: dict[str, str],
        pred: Prediction | None,
        chars: int,
        t0: float,
    ) -> Response:
        first, _ = self._timeouts(lease, pred)
        try:
            r = await self._http.post(lease.base_url + path, body, up_headers, read_timeout_s=first)
            content = await self._http.read(r)
        except UpstreamTimeout as exc:
            await self.pool.restart_after_stall(lease.name)
            raise _Upstream(f"no answer within {first:.0f} s") from exc
        except UpstreamError as exc:
            raise _Upstream(str(exc)) from exc
        if r.status >= 500 or (r.status == 400 and b"context" in content):
            raise _Upstream(f"HTTP {r.status}: {content[:200].decode(errors='replace')}")
        with contextlib.suppress(ValueError):
            doc = json.loads(content)
            if isinstance(doc, dict):
                self._refit(lease, chars, doc)
        self._record(lease.name, r.status, headers["x-edgebench-route"], t0, pred)
        ctype = r.headers.get("content-type", "application/json")
        return Response(content, r.status, headers=headers, media_type=ctype)

    async def _stream(
        self,
        lease: Lease,
        path: str,
        body: dict[str, Any],
        up_headers: dict[str, str],
        headers: dict[str, str],
        pred: Prediction | None,
        chars: int,
        t0: float,
        stack: AsyncExitStack,
    ) -> Response:
        first_s, stall_s = self._timeouts(lease, pred)
        try:  # the head and first chunk arrive before the client has seen a byte: the backup may take it
            async with asyncio.timeout(first_s):
                try:
                    r = await self._http.post(lease.base_url + path, body, up_headers)
                    stack.callback(r.release)
                    if r.status >= 400:
                        text = (await self._http.read(r)).decode(errors="replace")
                except UpstreamError as exc:
                    raise _Upstream(str(exc)) from exc
                if r.status >= 400:
                    if r.status >= 500 or (r.status == 400 and "context" in text):
                        raise _Upstream(f"HTTP {r.status}: {text[:200]}")
                    self._record(lease.name, r.status, headers["x-edgebench-route"], t0, pred)
                    return Response(text, r.status, headers=headers, media_type="application/json")
                try:
                    first = await self._http.chunk(r)
                except UpstreamError as exc:
                    raise _Upstream(f"stream broke before its first byte: {exc}") from exc
        except TimeoutError as exc:
            self._spawn(self.pool.restart_after_stall(lease.name))
            raise _Upstream(f"no first token within {first_s:.0f} s") from exc
        if not first:
            raise _Upstream("stream ended before its first byte")
        self.metrics.ttft.labels(lease.name).observe(time.monotonic() - t0)
        route = headers["x-edgebench-route"]

        async def relay() -> AsyncIterator[bytes]:
            tail = first[-4096:]
            yield first
            while True:
                try:
                    async with asyncio.timeout(stall_s):
                        chunk = await self._http.chunk(r)
                except TimeoutError:
                    self.metrics.errors.labels(lease.name, "stall").inc()
                    self._spawn(self.pool.restart_after_stall(lease.name))
                    self._record(lease.name, 504, route, t0, None)
                    yield sse_error(
                        f"model {lease.name}: stalled, no token for {stall_s:.1f} s; restarting it", "stall"
                    )
                    return
                except UpstreamError as exc:
                    self.metrics.errors.labels(lease.name, "broken_stream").inc()
                    self._record(lease.name, 502, route, t0, None)
                    yield sse_error(f"model {lease.name}: stream broke: {exc}", "upstream")
                    return
                if not chunk:
                    break
                tail = (tail + chunk)[-8192:]
                yield chunk
            if b"[DONE]" not in tail:
                self.metrics.errors.labels(lease.name, "broken_stream").inc()
                self._record(lease.name, 502, route, t0, None)
                yield sse_error(f"model {lease.name}: stream ended without [DONE]", "upstream")
                return
            self._refit_from_tail(lease, chars, tail)
            self._record(lease.name, 200, route, t0, pred)

        return _Relay(
            relay(), stack.aclose, headers={**headers, "x-accel-buffering": "no", "cache-control": "no-cache"}
        )

    def _refit_from_tail(self, lease: Lease, chars: int, tail: bytes) -> None:
        for line in reversed(tail.split(b"\n")):
            if line.startswith(b"data: {") and (b'"timings"' in line or b'"usage"' in line):
                with contextlib.suppress(ValueError):
                    doc = json.loads(line[6:])
                    if isinstance(doc, dict):
                        self._refit(lease, chars, doc)
                return

    def _spawn(self, aw: Awaitable[None]) -> None:
        async def run() -> None:
            await aw

        t = asyncio.create_task(run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)


def build_app(
    table: ServeTable,
    runtime: Runtime | None,
    settings: GatewaySettings,
    *,
    runtime_for: Callable[[Served], RuntimeConfig | None] | None = None,
    results: Results | None = None,
) -> tuple[Starlette, Gateway]:
    gw = Gateway(table, runtime, settings, runtime_for=runtime_for, results=results)
    return gw.app(), gw
