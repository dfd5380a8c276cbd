"""A fake OpenAI-compatible upstream for bench/gateway_cpu (clearly not a model): answers any POST
with a chunked SSE stream of N llama-server-sized chunks, one write each, `gap` seconds apart.
Usage: python bench/_fake_sse.py N GAP_S; prints its port."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

CHUNK = (
    "data: "
    + json.dumps(
        {
            "choices": [{"text": " word", "index": 0, "logprobs": None, "finish_reason": None}],
            "created": 1764633600,
            "id": "cmpl-0123456789abcdef0123456789abcdef",
            "model": "fake",
            "system_fingerprint": "b0000-00000000",
            "object": "text_completion",
        }
    )
    + "\n\n"
).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int, gap: float) -> None:
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client closed its keep-alive connection
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Keep-Alive: timeout=5, max=100000\r\n\r\n"
        )
        for i in range(n + 1):
            body = CHUNK if i < n else b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(body), body))
            await writer.drain()
            await asyncio.sleep(gap)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def main() -> None:
    n, gap = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(lambda r, w: handle(r, w, n, gap), sock=sock)
    print(sock.getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
