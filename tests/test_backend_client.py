"""The OpenAI-compatible client: SSE folding, refusals before sending, stalls, a server killed mid-stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from edgebench.backends.base import ChatRequest, RequestRefused
from edgebench.backends.managed import ManagedLlamaServer
from edgebench.backends.openai import OpenAICompatible
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime


def _sse(*chunks: dict[str, object]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n"


def _client(
    body: bytes, status: int = 200, seen: list[httpx.Request] | None = None, **kw: object
) -> OpenAICompatible:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, content=body, headers={"content-type": "text/event-stream"})

    return OpenAICompatible("fake", "http://fake", transport=httpx.MockTransport(handler), **kw)  # type: ignore[arg-type]


def test_content_reasoning_and_timings_are_folded() -> None:
    seen: list[httpx.Request] = []
    c = _client(
        _sse(
            {"choices": [{"delta": {"reasoning_content": "think "}}]},
            {"choices": [{"delta": {"content": "The answer"}}]},
            {
                "choices": [{"delta": {"content": " is 5."}, "finish_reason": "stop"}],
                "timings": {"prompt_per_second": 120.5, "predicted_per_second": 30.25, "predicted_n": 4},
            },
            {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 4}},
        ),
        seen=seen,
    )
    r = c.chat(ChatRequest(messages=[{"role": "user", "content": "2+3?"}]))
    assert r.content == "The answer is 5." and r.reasoning_content == "think "
    assert r.finish_reason == "stop" and r.error is None
    assert r.timings == {"prompt_per_second": 120.5, "predicted_per_second": 30.25, "predicted_n": 4.0}
    assert (r.prompt_tokens, r.completion_tokens) == (12, 4)
    assert r.ttft_s is not None and r.ttft_s <= r.wall_s
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["cache_prompt"] is False and body["temperature"] == 0.0
    assert seen[0].url.path == "/v1/chat/completions"


def _tc(index: int, name: str | None = None, args: str = "", finish: str | None = None) -> dict[str, object]:
    fn: dict[str, str] = {"arguments": args}
    if name is not None:
        fn["name"] = name
    choice: dict[str, object] = {"delta": {"tool_calls": [{"index": index, "function": fn}]}}
    if finish:
        choice["finish_reason"] = finish
    return {"choices": [choice]}


def test_tool_call_deltas_by_index() -> None:
    c = _client(
        _sse(
            _tc(0, "get_weather"),
            _tc(0, args='{"city": "Pa'),
            _tc(1, "get_time", "{}"),
            _tc(0, args='ris"}', finish="tool_calls"),
        )
    )
    r = c.chat(ChatRequest(messages=[{"role": "user", "content": "weather and time in Paris"}]))
    calls = [(t.name, t.arguments) for t in r.tool_calls]
    assert calls == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    assert r.finish_reason == "tool_calls"


def test_non_json_arguments_are_kept_as_text() -> None:
    c = _client(_sse(_tc(0, "calc", "{expr: 2+2")))
    (call,) = c.chat(ChatRequest(messages=[])).tool_calls
    assert call.arguments == "{expr: 2+2"


def test_http_error_is_a_result_not_an_exception() -> None:
    r = _client(b'{"error": "model not loaded"}', status=503).chat(ChatRequest(messages=[]))
    assert r.error is not None and r.error.startswith("HTTP 503") and "model not loaded" in r.error


def test_over_limit_request_is_refused_before_sending() -> None:
    seen: list[httpx.Request] = []
    c = _client(_sse(), seen=seen, max_ctx=4096)
    long = ChatRequest(messages=[{"role": "user", "content": "word " * 4000}], max_tokens=512)
    with pytest.raises(RequestRefused, match=r"backend fake: .* over its max context 4096; not sent"):
        c.chat(long)
    assert seen == []
    c.chat(ChatRequest(messages=[{"role": "user", "content": "short"}], max_tokens=512))
    assert len(seen) == 1


def test_stall_between_chunks_is_a_timeout() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        conn.sendall(head)
        first = b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
        conn.sendall(f"{len(first):x}\r\n".encode() + first + b"\r\n")
        time.sleep(3)  # then silence
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    c = OpenAICompatible("stall", f"http://127.0.0.1:{srv.getsockname()[1]}", stall_s=0.5)
    r = c.chat(ChatRequest(messages=[]))
    srv.close()
    assert r.timed_out and r.content == "Hel" and r.error is not None and "stalled" in r.error


@pytest.mark.llama
def test_managed_server_completion_and_kill_mid_stream(
    runtime: Runtime, tiny_model: Path, gemma_path: Path, tmp_path: Path
) -> None:
    info = read_model_info(tiny_model)
    with ManagedLlamaServer(runtime, info, RuntimeConfig(threads=1, ctx=512), tmp_path) as backend:
        r = backend.chat(ChatRequest(prompt="hello world", max_tokens=8))
        assert r.error is None and r.completion_tokens == 8
        assert r.timings is not None and r.timings["predicted_per_second"] > 0
    # kill the server while it streams a long answer: the client records it, it does not crash
    gemma = read_model_info(gemma_path)
    mgr = ManagedLlamaServer(runtime, gemma, RuntimeConfig(threads=1, ctx=4096), tmp_path)
    backend = mgr.__enter__()
    try:
        threading.Timer(1.5, mgr.server.stop).start()
        r = backend.chat(ChatRequest(prompt="Once upon a time", max_tokens=3000, extra={"ignore_eos": True}))
        assert r.error is not None
        assert r.content  # what streamed before the kill is kept
        assert r.finish_reason is None
    finally:
        mgr.__exit__(None, None, None)
