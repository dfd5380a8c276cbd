"""A TCP relay that adds a one-way delay in each direction: the latency of a LAN hop where the
kernel has no netem qdisc (this machine's has tbf for rate, not netem for delay). Named as what
it is, a stand-in for the wire's latency; bytes pass unchanged and in order."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType

__all__ = ["DelayProxy"]


class DelayProxy:
    """`with DelayProxy(("10.231.1.2", 50052), delay_ms=1.0) as p:` → connect to p.endpoint."""

    def __init__(self, target: tuple[str, int], *, delay_ms: float) -> None:
        self.target, self.delay = target, delay_ms / 1000.0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()  # closed on exit: no transport left to GC

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(1 << 16):
                await queue.put((time.monotonic() + self.delay, data))
        except ConnectionError:
            pass
        await queue.put((0.0, b""))
        with contextlib.suppress(ConnectionError):
            await sender
        writer.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self._writers.add(cw)
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        self._writers.add(uw)
        for s in (cw, uw):
            sock = s.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the delay is ours, not Nagle's
        await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw), return_exceptions=True)

    def __enter__(self) -> DelayProxy:
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._client, "127.0.0.1", 0), self.loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async def _close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in self._writers:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
