"""Run a suite against a backend: a greedy pass plus k seeded samples, one stored row per reply.

Every reply is kept raw, sanitised, validated and stored at once (resumable, like the sweep).
Base models (no chat template) are never sent chat messages through a template they do not
have: they run in an explicit *completion* mode with a few-shot prompt, and every row says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from edgebench.backends.base import Backend, ChatRequest, ChatResponse, RequestRefused
from edgebench.errors import EdgebenchError
from edgebench.quality.records import FailureClass, ModelOutput, ToolCallOut, Verdict
from edgebench.quality.sanitize import sanitize
from edgebench.quality.suite import Item, Message, Suite
from edgebench.quality.validators import validate
from edgebench.store import Provenance, Store, result_key

__all__ = ["STAGE", "QualityResult", "QualitySettings", "Target", "build_request", "run_suite"]

STAGE = "quality"
VERSION = 2  # 2: verdicts from the graders with answer extraction and the sandbox boundary
MAX_TRANSIENT_IN_A_ROW = 3  # a backend that fails this often in a row is down, not answering

# Failures of the serving path, not answers of the model: the connection (a server that is gone
# or never was), and HTTP statuses that say "not now" or "not here". Never stored as a result.
_TRANSIENT = re.compile(r"^(connection failed|HTTP (404|408|429|502|503|504)\b)")


class BackendDown(EdgebenchError):
    """Several requests in a row failed before any model answered: stop instead of storing them."""


def is_transient(resp: ChatResponse) -> bool:
    return bool(resp.error and not resp.timed_out and not resp.content and _TRANSIENT.match(resp.error))


Mode = Literal["chat", "completion"]

# A neutral few-shot frame for base models: it shows the answer format, not the answers.
_FEW_SHOT = (
    "Below are questions, each followed by a short, correct answer.\n\n"
    "Question: What is 12 + 30?\nAnswer: 42\n\n"
    "Question: Name the capital of Italy.\nAnswer: Rome\n\n"
)
_TOOLS_PROMPT = (
    "You can call these functions (JSON schema):\n{tools}\n"
    'To call one, reply with only a JSON object {{"name": ..., "arguments": {{...}}}}, or a JSON list of '
    "such objects for several calls. If a required value is missing, ask for it instead. If no function "
    "fits, answer normally.\n\n"
)


class QualitySettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    samples: int = 3  # seeded samples at the deployment temperature, after the greedy pass
    temperature: float = 0.7
    seed: int = 1234
    max_tokens: int = 384
    variants: bool = True  # False: canonical prompts only (a quick pass, e.g. inside `edgebench run`)


class Target(BaseModel):
    """What is being evaluated: a model behind a backend, with its provenance."""

    model_config = ConfigDict(frozen=True)

    label: str
    mode: Mode
    provenance: Provenance
    backend_id: str  # runtime config key for a managed server, name+url for a remote one


class QualityResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    target: str
    backend_id: str
    suite: str
    suite_digest: str
    item: str
    category: str
    weight: float
    variant: int
    sample: int  # 0 = greedy
    temperature: float
    seed: int
    mode: Mode
    tool_mode: str | None
    raw_output: str
    reasoning: str | None
    tool_calls: list[dict[str, Any]]
    sanitized: str
    stripped: list[str]
    passed: bool
    failure: FailureClass
    detail: str
    latency_s: float
    ttft_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    timings: dict[str, float] | None
    error: str | None
    measured_at: str
    resumed: bool = False


def _text(messages: list[Message]) -> str:
    return "\n".join(m.content for m in messages if m.role in ("system", "user"))


def build_request(
    item: Item, messages: list[Message], mode: Mode, *, temperature: float, seed: int, max_tokens: int
) -> tuple[ChatRequest, str | None]:
    """The request for one prompt of an item, and how tools were offered (native / prompt / None)."""
    limit = item.max_tokens or max_tokens
    if mode == "completion":
        head = _TOOLS_PROMPT.format(tools=json.dumps(item.tools)) if item.tools else ""
        prompt = f"{_FEW_SHOT}{head}Question: {_text(messages)}\nAnswer:"
        # A base model does not stop by itself: end at the next question or a run of blank lines.
        req = ChatRequest(
            prompt=prompt,
            temperature=temperature,
            seed=seed,
            max_tokens=min(limit, 256),
            stop=["\nQuestion:", "\n\n\n"],
        )
        return req, "prompt" if item.tools else None
    msgs = [m.model_dump() for m in messages]
    if item.tools and item.tool_mode_hint == "prompt":
        msgs.insert(0, {"role": "system", "content": _TOOLS_PROMPT.format(tools=json.dumps(item.tools))})
        return ChatRequest(messages=msgs, temperature=temperature, seed=seed, max_tokens=limit), "prompt"
    return (
        ChatRequest(messages=msgs, tools=item.tools, temperature=temperature, seed=seed, max_tokens=limit),
        "native" if item.tools else None,
    )


def _runs(suite: Suite, settings: QualitySettings) -> list[tuple[Item, int, int]]:
    """(item, variant, sample) in the order they run: the whole greedy pass first."""
    out = []
    for sample in range(settings.samples + 1):
        for item in suite.items:
            for variant in range(len(item.prompts()) if settings.variants else 1):
                out.append((item, variant, sample))
    return out


def run_suite(
    store: Store,
    backend: Backend,
    target: Target,
    suite: Suite,
    settings: QualitySettings,
    *,
    on_result: Callable[[QualityResult], None] | None = None,
) -> list[QualityResult]:
    results = []
    in_a_row = 0
    for item, variant, sample in _runs(suite, settings):
        temp = 0.0 if sample == 0 else settings.temperature
        seed = settings.seed + sample
        params = {
            "suite": suite.name,
            "suite_digest": suite.digest,
            "item": item.id,
            "variant": variant,
            "sample": sample,
            "temperature": temp,
            "seed": seed,
            "mode": target.mode,
            "backend": target.backend_id,
            "max_tokens": settings.max_tokens,
        }
        key, _ = result_key(STAGE, target.provenance, params)
        row = store.get(key)
        # A reply whose code was not run (no sandbox then) is asked again, not reused as a verdict.
        reusable = row is not None and row.version == VERSION
        if reusable and row is not None and row.record.get("failure") != FailureClass.UNSANDBOXED.value:
            res = QualityResult.model_validate({**row.record, "resumed": True})
        else:
            res, resp = _ask(backend, target, suite, item, variant, sample, temp, seed, settings)
            if is_transient(resp):  # not the model's answer: not stored, asked again next run
                in_a_row += 1
                if in_a_row >= MAX_TRANSIENT_IN_A_ROW:
                    raise BackendDown(
                        f"{target.label}: {in_a_row} requests in a row failed: {resp.error} "
                        f"(replies stored so far are kept; re-run to resume)"
                    )
                continue
            in_a_row = 0
            store.put(STAGE, target.provenance, params, res, status=res.failure.value, version=VERSION)
        results.append(res)
        if on_result:
            on_result(res)
    return results


def _ask(
    backend: Backend,
    target: Target,
    suite: Suite,
    item: Item,
    variant: int,
    sample: int,
    temp: float,
    seed: int,
    settings: QualitySettings,
) -> tuple[QualityResult, ChatResponse]:
    req, tool_mode = build_request(
        item,
        item.prompts()[variant],
        target.mode,
        temperature=temp,
        seed=seed,
        max_tokens=settings.max_tokens,
    )
    try:
        resp = backend.chat(req)
    except RequestRefused as exc:
        resp = ChatResponse(error=str(exc))
    out = ModelOutput(
        content=resp.content,
        reasoning_content=resp.reasoning_content,
        tool_calls=[ToolCallOut(name=t.name, arguments=t.arguments) for t in resp.tool_calls],
        finish_reason=resp.finish_reason,
        error=resp.error,
        timed_out=resp.timed_out,
    )
    verdict = validate(out, item.validator)
    if resp.error and not resp.timed_out and not verdict.passed and not resp.content:
        # The request itself failed (server died, refused before sending): say that, not "wrong".
        verdict = Verdict.fail(FailureClass.EMPTY, f"request failed: {resp.error}")
    clean = sanitize(resp.content, resp.reasoning_content)
    result = QualityResult(
        target=target.label,
        backend_id=target.backend_id,
        suite=suite.name,
        suite_digest=suite.digest,
        item=item.id,
        category=item.category,
        weight=item.weight,
        variant=variant,
        sample=sample,
        temperature=temp,
        seed=seed,
        mode=target.mode,
        tool_mode=tool_mode,
        raw_output=resp.content,
        reasoning=resp.reasoning_content,
        tool_calls=[t.model_dump() for t in resp.tool_calls],
        sanitized=clean.text,
        stripped=list(clean.stripped),
        passed=verdict.passed,
        failure=verdict.failure,
        detail=verdict.detail,
        latency_s=round(resp.wall_s, 3),
        ttft_s=resp.ttft_s,
        prompt_tokens=resp.prompt_tokens,
        completion_tokens=resp.completion_tokens,
        timings=resp.timings,
        error=resp.error,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return result, resp
