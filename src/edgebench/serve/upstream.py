"""The gateway's HTTP client to its backends (llama-servers, remote OpenAI-compatible servers).

aiohttp, for its C HTTP parser: on this 2-core host httpx (httpcore over anyio, h11) spent 140-180 µs
of CPU per relayed SSE chunk against 63-79 µs for aiohttp (same fake upstream, 300 chunks 2 ms
apart, interleaved) — and on a board every µs the gateway spends is taken from llama.cpp's decode
threads. Errors leave this module as `UpstreamError`, so the gateway never sees aiohttp's types.
"""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp

__all__ = ["Upstream", "UpstreamError", "UpstreamTimeout"]

# cpp-httplib (llama-server) closes an idle keep-alive connection after 5 s: keep ours for less,
# so a request rarely meets a connection the server is closing
KEEPALIVE_S = 4.0
CONNECT_S = 10.0


class UpstreamError(Exception):
    """The backend could not be reached or broke the exchange; the message names the cause."""


class UpstreamTimeout(UpstreamError):
    """The backend accepted the request and then sent nothing for the allowed time."""


def _cause(exc: BaseException) -> str:
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _unanswered(exc: BaseException) -> bool:
    """The exchange broke on a made connection before any byte of an answer: the server closed
    or reset it as the request went out (CI met "Can not write request body", errno None: a
    pooled connection whose close arrived while the body was being written). A refused or
    timed-out connect is not this: nothing was reached, and the pool's fallback handles it."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientConnectionResetError | aiohttp.ClientOSError
    )


def _error(exc: BaseException, read_timeout_s: float | None) -> UpstreamError:
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamError(f"connection failed: no connection within {CONNECT_S:.0f} s")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"no answer within {read_timeout_s:.0f} s")
    return UpstreamError(f"connection failed: {_cause(exc)}")


class Upstream:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # the re-send's: never a pooled connection

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S)
        pooled = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(connector=pooled, timeout=timeout)
        fresh = aiohttp.TCPConnector(limit=0, force_close=True)
        self._fresh = aiohttp.ClientSession(connector=fresh, timeout=timeout)

    async def close(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()

    async def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], read_timeout_s: float | None = None
    ) -> aiohttp.ClientResponse:
        """POST and wait for the response's head; the body is the caller's to read and `release()`.

        Sent once more, on a new connection, when the exchange broke before any byte of an answer
        (the server dropped a pooled connection as the request went out, or reset it while the
        body was being written). A chat request has no side effect but its compute, so a second
        try costs at most one wasted prefill. Only the head is retried: a body cut later is a
        broken reply, never sent twice. `read_timeout_s` bounds each wait for bytes."""
        assert self._session is not None and self._fresh is not None, "Upstream.start() first"
        # a file-like body: aiohttp writes it in chunks (raw bytes over 1 MiB would block the loop
        # while they are copied, and aiohttp warns); a new one each attempt, as a send consumes it
        data = json.dumps(body).encode()
        hdrs = {"content-type": "application/json", **headers}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S, sock_read=read_timeout_s)
        try:
            return await self._session.post(url, data=io.BytesIO(data), headers=hdrs, timeout=timeout)
        except (aiohttp.ClientError, OSError) as exc:
            if not _unanswered(exc):
                raise _error(exc, read_timeout_s) from exc
        try:
            return await self._fresh.post(url, data=io.BytesIO(data), headers=hdrs, timeout=timeout)
        except (aiohttp.ClientError, OSError) as exc:
            raise _error(exc, read_timeout_s) from exc

    @staticmethod
    async def read(resp: aiohttp.ClientResponse) -> bytes:
        """The whole body, then the connection back to the pool (or closed when it broke)."""
        try:
            return await resp.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("the answer stopped arriving") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"the answer broke: {_cause(exc)}") from exc
        finally:
            resp.release()

    @staticmethod
    async def chunk(resp: aiohttp.ClientResponse) -> bytes:
        """The next bytes of a streamed body as they arrive; b"" at its end."""
        try:
            return await resp.content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(_cause(exc)) from exc
