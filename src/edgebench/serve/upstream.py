"""The gateway's HTTP client to its backends (llama-servers, remote OpenAI-compatible servers).

aiohttp, for its C HTTP parser: on this 2-core host httpx (httpcore over anyio, h11) spent 140-180 µs
of CPU per relayed SSE chunk against 63-79 µs for aiohttp (same fake upstream, 300 chunks 2 ms
apart, interleaved) — and on a board every µs the gateway spends is taken from llama.cpp's decode
threads. Errors leave this module as `UpstreamError`, so the gateway never sees aiohttp's types.
"""

from __future__ import annotations

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


class Upstream:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, url: str, body: dict[str, Any], headers: dict[str, str], read_timeout_s: float | None = None
    ) -> aiohttp.ClientResponse:
        """POST and wait for the response's head; the body is the caller's to read and `release()`.

        Sent once more when a pooled connection turned out closed before any byte of an answer
        (the server dropped it idle as the request went out). Only the head is retried: a body
        cut later is a broken reply, never sent twice. `read_timeout_s` bounds each wait for bytes."""
        assert self._session is not None, "Upstream.start() first"
        data = json.dumps(body).encode()
        hdrs = {"content-type": "application/json", **headers}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_S, sock_read=read_timeout_s)
        for attempt in (1, 2):
            try:
                return await self._session.post(url, data=data, headers=hdrs, timeout=timeout)
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise UpstreamError(f"connection failed: {_cause(exc)}") from exc
            except aiohttp.ConnectionTimeoutError as exc:
                raise UpstreamError(f"connection failed: no connection within {CONNECT_S:.0f} s") from exc
            except TimeoutError as exc:
                raise UpstreamTimeout(f"no answer within {read_timeout_s:.0f} s") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(f"connection failed: {_cause(exc)}") from exc
        raise AssertionError("unreachable")

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
