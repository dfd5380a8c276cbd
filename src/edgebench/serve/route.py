"""Which model serves a request, and why: a concrete model, a tier alias, or `auto`.

`auto` is a cheap classifier a person can read back from the `x-edgebench-route` header: tools
present → tool_calling; a predicted latency on the interactive tier over the budget, a very long
prompt or a large max_tokens → deep_analysis (batch); code markers → code; reasoning words →
reasoning; a short wh-question → factual; else fast_chat. A use case with no qualifying model
falls back to its closest candidate (said so), then to fast_chat.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgebench.errors import EdgebenchError
from edgebench.serve.predict import prompt_chars
from edgebench.serve.table import ALIASES, ServeTable

__all__ = ["BENCHMARK_FIELD", "BENCHMARK_HEADER", "Decision", "RouteError", "classify", "resolve"]

BENCHMARK_HEADER = "x-edgebench-benchmark"
BENCHMARK_FIELD = "edgebench_benchmark"
LONG_PROMPT_CHARS = 12000
LARGE_MAX_TOKENS = 2048

_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+|\bfunction\b"
    r"|\b(?:python|javascript|typescript|rust|golang|bash|sql|regex)\b"
    r"|\b(?:code|compile|bug|stack ?trace|refactor|unit test)\b",
    re.IGNORECASE,
)
_REASONING = re.compile(
    r"\b(?:why|prove|proof|step by step|reason(?:ing)?|derive|calculate|solve|how many|how much|"
    r"compare|trade-?offs?|analy[sz]e)\b",
    re.IGNORECASE,
)
_FACTUAL = re.compile(r"^\s*(?:who|what|when|where|which)\b[^\n]{0,200}\?\s*$", re.IGNORECASE)


class RouteError(EdgebenchError):
    def __init__(self, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.status = status


@dataclass(frozen=True)
class Decision:
    model: str
    backup: str | None
    route: str  # "model", "tier:<use case>", "auto:<use case>", "benchmark"
    reason: str
    benchmark: bool = False

    def header(self) -> str:
        return f"{self.route}; {self.reason}" if self.reason else self.route


def _last_user_text(body: Mapping[str, Any]) -> str:
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
    return ""


def classify(
    body: Mapping[str, Any], latency_s: float, predict_interactive: Callable[[int, int | None], float | None]
) -> tuple[str, str]:
    """(use case, reason) for an `auto` request; `predict_interactive(chars, max_tokens)` is the
    predicted latency on the interactive tier's model (None when its speed is unknown)."""
    if body.get("tools"):
        return "tool_calling", f"{len(body['tools'])} tool(s) given"
    chars = prompt_chars(dict(body))
    mt = body.get("max_tokens") or body.get("max_completion_tokens")
    max_tokens = mt if isinstance(mt, int) else None
    predicted = predict_interactive(chars, max_tokens)
    if predicted is not None and predicted > latency_s:
        return (
            "deep_analysis",
            f"predicted {predicted:.1f} s on the interactive tier > budget {latency_s:g} s",
        )
    if chars > LONG_PROMPT_CHARS:
        return "deep_analysis", f"prompt of {chars} characters > {LONG_PROMPT_CHARS}"
    if max_tokens is not None and max_tokens > LARGE_MAX_TOKENS:
        return "deep_analysis", f"max_tokens {max_tokens} > {LARGE_MAX_TOKENS}"
    text = _last_user_text(body)
    if m := _CODE.search(text):
        return "code", f"code marker {m.group(0).strip()!r}"
    if m := _REASONING.search(text):
        return "reasoning", f"reasoning word {m.group(0)!r}"
    if _FACTUAL.match(text):
        return "factual", "a short wh-question"
    return "fast_chat", f"short chat ({chars} characters, max_tokens {max_tokens or 'unset'})"


def _benchmark(body: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    h = headers.get(BENCHMARK_HEADER, "").strip().lower()
    return h in ("1", "true", "yes", "on") or body.get(BENCHMARK_FIELD) is True


def _tier_target(table: ServeTable, use_case: str) -> tuple[str, str | None, str] | None:
    tier = table.tier(use_case)
    if tier is None:
        return None
    if tier.primary and tier.primary in table.models:
        backup = tier.backup if tier.backup in table.models else None
        return tier.primary, backup, ""
    if tier.backup and tier.backup in table.models:
        return tier.backup, None, f"primary {tier.primary} not served, its backup"
    if tier.closest and tier.closest in table.models:
        return tier.closest, None, "no model qualifies: the closest candidate (see the routing file)"
    return None


def resolve(
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    table: ServeTable,
    predict_interactive: Callable[[int, int | None], float | None],
) -> Decision:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise RouteError("request: 'model' is required (a model, a tier or 'auto'; see GET /v1/models)")
    bench = _benchmark(body, headers)
    if bench:
        if name not in table.models:
            raise RouteError(f"benchmark mode: model {name!r}: a served model is needed, not a tier", 400)
        return Decision(name, None, "benchmark", "pinned, no classification, no fallback", benchmark=True)
    if name in table.models:
        return Decision(name, None, "model", "")
    if name == "auto":
        if not table.tiers:
            only = next(iter(table.models))
            return Decision(only, None, "auto:none", "no routing file: the first served model")
        use_case, why = classify(body, table.latency_s, predict_interactive)
        for uc in (use_case, "fast_chat"):
            target = _tier_target(table, uc)
            if target is not None:
                model, backup, note = target
                reason = why if uc == use_case else f"{why}; {use_case} has no model, fast_chat instead"
                return Decision(model, backup, f"auto:{uc}", f"{reason}; {note}" if note else reason)
        raise RouteError(f"auto: no tier has a model to serve ({why})", 503)
    if table.tier(name) is not None:
        uc = ALIASES.get(name, name)
        target = _tier_target(table, uc)
        if target is None:
            tier = table.tier(name)
            raise RouteError(f"tier {name}: no model serves it ({tier.why if tier else ''})", 503)
        model, backup, note = target
        return Decision(model, backup, f"tier:{uc}", note)
    known = sorted([*table.models, *table.tiers, *(a for a, uc in ALIASES.items() if uc in table.tiers)])
    raise RouteError(f"model {name!r}: not served here (served: {', '.join(known)}, auto)", 404)
