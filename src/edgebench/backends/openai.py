"""The OpenAI-compatible client every backend goes through (httpx, streaming, injectable transport).

Streams `/v1/chat/completions` (or `/v1/completions` in completion mode) and measures TTFT and
wall time itself; reads llama-server's `timings` when the server sends them. The read timeout is
the *stall* timeout (longest silence between streamed chunks); the per-request budget is checked
between chunks. A backend's declared context limit is enforced before sending (the RK3588 NPU
server crashes on an over-long prompt, seed 001).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import httpx

from edgebench.backends.base import Backend, ChatRequest, ChatResponse, RequestRefused, ToolCall

__all__ = ["OpenAICompatible", "estimate_tokens"]


def estimate_tokens(req: ChatRequest) -> int:
    """A deliberately high estimate (3 characters a token) for the pre-send context check."""
    text = req.prompt if req.prompt is not None else json.dumps(req.messages)
    if req.tools:
        text += json.dumps(req.tools)
    return math.ceil(len(text) / 3)


class OpenAICompatible(Backend):
    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        max_ctx: int | None = None,
        timeout_s: float = 300.0,
        stall_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.max_ctx = max_ctx
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(stall_s, connect=10.0),
        )

    def close(self) -> None:
        self._http.close()

    def check_fits(self, req: ChatRequest) -> None:
        if self.max_ctx is None:
            return
        need = estimate_tokens(req) + req.max_tokens
        if need > self.max_ctx:
            raise RequestRefused(
                f"backend {self.name}: request needs about {need} tokens (prompt ≈ {need - req.max_tokens} "
                f"+ max_tokens {req.max_tokens}), over its max context {self.max_ctx}; not sent"
            )

    def _body(self, req: ChatRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "stream": True,
            "temperature": req.temperature,
            "seed": req.seed,
            "max_tokens": req.max_tokens,
            "stream_options": {"include_usage": True},
            "cache_prompt": False,
        }  # llama-server: measure prompt processing every time
        if self.model:
            body["model"] = self.model
        if req.stop:
            body["stop"] = req.stop
        body.update(req.extra)
        if req.prompt is not None:
            return "/v1/completions", {**body, "prompt": req.prompt}
        body["messages"] = req.messages
        if req.tools:
            body["tools"] = req.tools
        return "/v1/chat/completions", body

    def chat(self, req: ChatRequest) -> ChatResponse:
        self.check_fits(req)
        path, body = self._body(req)
        t0 = time.monotonic()
        acc = _Accumulator()
        try:
            with self._http.stream("POST", path, json=body) as r:
                if r.status_code >= 400:
                    text = r.read().decode(errors="replace")[:300]
                    return acc.result(t0, error=f"HTTP {r.status_code}: {text}")
                for line in r.iter_lines():
                    if time.monotonic() - t0 > self.timeout_s:
                        return acc.result(
                            t0, error=f"no answer within {self.timeout_s:.0f} s", timed_out=True
                        )
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        acc.feed(json.loads(data), t0)
                    except json.JSONDecodeError:
                        return acc.result(t0, error=f"unparseable stream chunk: {data[:120]}")
        except httpx.TimeoutException:
            return acc.result(t0, error="stalled: no streamed data within the stall timeout", timed_out=True)
        except httpx.TransportError as exc:
            return acc.result(t0, error=f"connection failed: {type(exc).__name__}: {exc}"[:300])
        return acc.result(t0)


class _Accumulator:
    """Folds streamed chunks (content, reasoning, tool-call deltas by index) into one response."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: str | None = None
        self.ttft: float | None = None
        self.usage: dict[str, Any] = {}
        self.timings: dict[str, float] | None = None

    def feed(self, chunk: dict[str, Any], t0: float) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = {k: float(v) for k, v in chunk["timings"].items() if isinstance(v, int | float)}
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            got = False
            if text:
                self.content.append(text)
                got = True
            if delta.get("reasoning_content"):
                self.reasoning.append(delta["reasoning_content"])
                got = True
            for tc in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(int(tc.get("index", len(self.calls))), {"name": "", "args": ""})
                fn = tc.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["args"] += fn.get("arguments") or ""
                got = True
            if got and self.ttft is None:
                self.ttft = time.monotonic() - t0
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]

    def result(self, t0: float, *, error: str | None = None, timed_out: bool = False) -> ChatResponse:
        calls = []
        for _, c in sorted(self.calls.items()):
            try:
                args: dict[str, Any] | str = json.loads(c["args"]) if c["args"].strip() else {}
                if not isinstance(args, dict):
                    args = c["args"]
            except json.JSONDecodeError:
                args = c["args"]
            calls.append(ToolCall(name=c["name"], arguments=args))
        return ChatResponse(
            content="".join(self.content),
            reasoning_content="".join(self.reasoning) or None,
            tool_calls=calls,
            finish_reason=self.finish,
            ttft_s=self.ttft,
            wall_s=time.monotonic() - t0,
            prompt_tokens=self.usage.get("prompt_tokens"),
            completion_tokens=self.usage.get("completion_tokens"),
            timings=self.timings,
            error=error,
            timed_out=timed_out,
        )
