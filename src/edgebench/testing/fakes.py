"""Named fakes behind the one-method seams, for in-process tests of the runner and the pipeline.

`FakeBackend` answers chat requests from a function or a table, with no server: the real-server
tests stay; these make the quality runner's bookkeeping (resume, transient failures, scoring)
testable without llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable

from edgebench.backends.base import Backend, ChatRequest, ChatResponse

__all__ = ["FakeBackend"]


class FakeBackend(Backend):
    """Answers with `answer(request)`, or from `table` (last user message → content), else `default`."""

    def __init__(
        self,
        answer: Callable[[ChatRequest], ChatResponse] | None = None,
        *,
        table: dict[str, str] | None = None,
        default: str = "",
        name: str = "fake",
    ) -> None:
        self.name = name
        self._answer, self._table, self._default = answer, table or {}, default
        self.requests: list[ChatRequest] = []

    def chat(self, req: ChatRequest) -> ChatResponse:
        self.requests.append(req)
        if self._answer is not None:
            return self._answer(req)
        last = req.prompt or next((m["content"] for m in reversed(req.messages) if m["role"] == "user"), "")
        return ChatResponse(content=self._table.get(last, self._default), finish_reason="stop")
