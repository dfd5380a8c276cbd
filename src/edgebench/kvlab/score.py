"""Score a KV cache end to end: the model's next-token distributions at positions of the text,
read from a llama-server whose slot holds that cache, against the same positions read from the
unmodified f16 cache.

Protocol (one slot, positions taken in descending order): the slot holds cells 0..N-1; asking for
the prompt tokens[0..p] keeps cells 0..p-1 (the common prefix, minus the one token llama-server
always evaluates), evaluates token p and returns the distribution of token p+1. Each request only
removes cells, so one restore serves every position. A response that evaluated more than one
token means the server did not reuse the cache (e.g. an SWA model past its window): the numbers
would be the f16 model's, so that is an error, never a result.

llama-server returns the top `n_probs` log-probabilities (softmax over the whole vocabulary). The
KLD is computed on the base's top tokens plus one bucket for the rest: a lower bound of the full
KLD (merging outcomes never raises it), tight when the top tokens hold nearly all the mass (the
mass they hold is recorded)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime.server import ServerProcess

__all__ = ["Dist", "Divergence", "ScoreError", "compare", "read_positions", "restore"]

N_PROBS = 256


class ScoreError(EdgebenchError):
    """The server could not be scored as the protocol requires (cause in one line)."""


@dataclass(frozen=True)
class Dist:
    """Top log-probabilities of the token after position `pos` (token id → log p)."""

    pos: int
    logprobs: dict[int, float]

    @property
    def top(self) -> int:
        return max(self.logprobs, key=self.logprobs.__getitem__)


@dataclass(frozen=True)
class Divergence:
    mean_kld: float
    kld_se: float  # standard error over positions
    same_top_pct: float
    same_top_se: float
    positions: int
    min_mass: float  # smallest base mass the compared top tokens held (the bound's tightness)
    kld: tuple[float, ...]  # per position, for paired comparisons


def restore(srv: ServerProcess, filename: str) -> None:
    """Load a slot file (in the server's --slot-save-path) into slot 0."""
    try:
        r = srv.client.post("/slots/0", params={"action": "restore"}, json={"filename": filename})
    except httpx.HTTPError as exc:
        raise ScoreError(f"llama-server restore of {filename}: {exc}") from exc
    if r.status_code != 200:
        raise ScoreError(f"llama-server refused the slot file {filename}: {r.text[:200]}")


def _plain_token(srv: ServerProcess) -> int | None:
    """A token whose text is plain ASCII (" the")."""
    try:
        ids = srv.client.post("/tokenize", json={"content": " the", "add_special": False}).json()["tokens"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return int(ids[0]) if ids else None


def read_positions(srv: ServerProcess, tokens: list[int], positions: list[int]) -> list[Dist]:
    """The distribution after each position, taken in descending order (see the module doc).

    The reported probabilities are the model's (softmax of its logits, before any sampler); the
    token *drawn* is forced to a plain-ASCII one by a logit bias, because llama-server drops the
    probabilities of a token that ends in an incomplete UTF-8 sequence (a byte-fallback token)."""
    plain = _plain_token(srv)
    out = []
    for p in sorted(positions, reverse=True):
        body = {
            "prompt": tokens[: p + 1],
            "n_predict": 1,
            "cache_prompt": True,
            "id_slot": 0,
            "n_probs": N_PROBS,
            "temperature": 0,
            "samplers": [],
        }
        if plain is not None:
            body["logit_bias"] = [[plain, 1e6]]
        try:
            r = srv.client.post("/completion", json=body)
        except httpx.HTTPError as exc:
            raise ScoreError(f"llama-server at position {p}: {exc}") from exc
        if r.status_code != 200:
            raise ScoreError(f"llama-server at position {p}: HTTP {r.status_code} {r.text[:200]}")
        doc = r.json()
        evaluated = doc.get("timings", {}).get("prompt_n")
        if evaluated != 1:
            raise ScoreError(
                f"llama-server evaluated {evaluated} tokens at position {p}, not 1: it did not reuse "
                "the slot's cache (a sliding-window model past its window?), so it cannot score it"
            )
        probs = doc.get("completion_probabilities") or []
        if not probs:
            raise ScoreError(f"llama-server returned no probabilities at position {p}")
        top = probs[0]["top_logprobs"]
        out.append(Dist(p, {int(t["id"]): float(t["logprob"]) for t in top}))
    return out


def _kld(base: Dist, test: Dist) -> tuple[float, float]:
    """KL(base || test) over base's top tokens plus the rest as one bucket; a token the test did
    not list gets the test's smallest listed probability (an upper bound on it: the KLD stays a
    lower bound). Returns (kld, base mass in the top tokens)."""
    floor = min(test.logprobs.values())
    p = np.exp(np.fromiter(base.logprobs.values(), float))
    q = np.exp(np.array([test.logprobs.get(t, floor) for t in base.logprobs]))
    mass_p, mass_q = float(p.sum()), float(min(q.sum(), 1.0))
    kld = float(np.sum(p * (np.log(p) - np.log(q))))
    rest_p, rest_q = max(1.0 - mass_p, 0.0), max(1.0 - mass_q, 1e-12)
    if rest_p > 0:
        kld += rest_p * (math.log(rest_p) - math.log(rest_q))
    return max(kld, 0.0), mass_p


def compare(base: list[Dist], test: list[Dist]) -> Divergence:
    if [d.pos for d in base] != [d.pos for d in test]:
        raise ScoreError("scored positions differ between the base and the test cache")
    pairs = [_kld(b, t) for b, t in zip(base, test, strict=True)]
    kld = np.array([k for k, _ in pairs])
    same = np.array([b.top == t.top for b, t in zip(base, test, strict=True)], float)
    n = len(kld)

    def se(a: np.ndarray) -> float:
        return float(a.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    return Divergence(
        mean_kld=float(kld.mean()),
        kld_se=se(kld),
        same_top_pct=100 * float(same.mean()),
        same_top_se=100 * se(same),
        positions=n,
        min_mass=min(m for _, m in pairs),
        kld=tuple(float(x) for x in kld),
    )
