"""Predicted latency from measured speeds: prompt tokens / pp + max_tokens / tg (+ load time cold).

The figures start as the serving spec's measurements (sweep, context probe) and are refitted from
llama-server's own `timings` on every request served, so a board that throttles gets slower
predictions. Prompt tokens are estimated from characters with a per-model ratio that is refitted
from the `usage` the server reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_MAX_TOKENS", "Prediction", "Speed", "prompt_chars"]

ALPHA = 0.3  # weight of the newest request in the refit (about the last 5 count)
DEFAULT_MAX_TOKENS = 256  # for a request that gives no max_tokens (llama-server would run to EOS)
MIN_PROMPT_TOKENS_FOR_PP = 16  # shorter prompts time the request overhead, not prefill


def prompt_chars(body: dict[str, Any]) -> int:
    """Characters the server will tokenize: the messages' text (or the prompt) and the tools."""
    n = 0
    if isinstance(body.get("prompt"), str):
        n += len(body["prompt"])
    for m in body.get("messages") or []:
        c = m.get("content") if isinstance(m, dict) else None
        n += len(c) if isinstance(c, str) else len(json.dumps(c)) if c is not None else 0
    if body.get("tools"):
        n += len(json.dumps(body["tools"]))
    return n


@dataclass(frozen=True)
class Prediction:
    seconds: float
    prompt_tokens: int
    max_tokens: int
    cold: bool
    source: str  # "measured", "refit" (from served requests) or "unknown"


@dataclass
class Speed:
    pp_ts: float | None
    tg_ts: float | None
    load_s: float | None
    source: str = "measured"
    chars_per_token: float = 4.0
    refits: int = 0

    def predict(self, chars: int, max_tokens: int | None, cold: bool) -> Prediction | None:
        if not self.pp_ts or not self.tg_ts:
            return None
        n_prompt = max(1, round(chars / self.chars_per_token))
        n_gen = max_tokens if max_tokens and max_tokens > 0 else DEFAULT_MAX_TOKENS
        s = n_prompt / self.pp_ts + n_gen / self.tg_ts + (self.load_s or 0.0 if cold else 0.0)
        return Prediction(s, n_prompt, n_gen, cold, self.source)

    def inter_token_s(self) -> float | None:
        return 1.0 / self.tg_ts if self.tg_ts else None

    def refit(self, timings: dict[str, Any] | None, chars: int, prompt_tokens: int | None) -> None:
        """Fold one served request's llama-server timings into the figures."""
        if prompt_tokens and prompt_tokens > 0 and chars > 0:
            self.chars_per_token = _ewma(self.chars_per_token, chars / prompt_tokens)
        if not timings:
            return
        pp, tg = timings.get("prompt_per_second"), timings.get("predicted_per_second")
        n_pp, n_tg = timings.get("prompt_n") or 0, timings.get("predicted_n") or 0
        changed = False
        if isinstance(pp, int | float) and pp > 0 and n_pp >= MIN_PROMPT_TOKENS_FOR_PP:
            self.pp_ts, changed = _ewma(self.pp_ts, float(pp)), True
        if isinstance(tg, int | float) and tg > 0 and n_tg >= 2:
            self.tg_ts, changed = _ewma(self.tg_ts, float(tg)), True
        if changed:
            self.refits += 1
            self.source = "refit"


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - ALPHA) * old + ALPHA * new
