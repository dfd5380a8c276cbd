"""A simulated scheme applied the way a quantized cache is filled: token by token.

Quantizing the captured f16 cache once (apply_plan) leaves out what a quantized cache does while
the prompt is read: every later token's K/V, in every deeper layer, is computed from attention
over the already-quantized earlier cells, so the error compounds. Measured on gemma-3-270m, the
one-pass q4_0 KLD was 2.6× lower than llama.cpp's own q4_0 cache gives. Here the f16 server reads
the text one token at a time: the slot holds cells 0..t-1 as the scheme left them, token t is
evaluated (its K/V computed from that history), saved, put through the scheme, and written back
before token t+1. KIVI's key groups are quantized when their 32 tokens are complete (until then
they are KIVI's full-precision residual), as KIVI does."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import numpy as np

from edgebench.kvlab.inject import LayerRef
from edgebench.kvlab.schemes import GROUP, Scheme, roundtrip
from edgebench.kvlab.score import ScoreError, restore
from edgebench.kvlab.state import SeqState, parse_seq_state, truncated, write_seq_state
from edgebench.runtime.server import ServerProcess

__all__ = ["fill_sequentially"]


def _put(state: SeqState, ref: LayerRef, role: str, lo: int, values: np.ndarray) -> None:
    lk = state.caches[ref.cache].layers[ref.index]
    rows = lk.k if role == "k" else lk.v
    rows[lo : lo + len(values)] = values.astype(np.float16).view(np.uint8).reshape(len(values), -1)


def _fresh(state: SeqState, ref: LayerRef, role: str) -> np.ndarray:
    lk = state.caches[ref.cache].layers[ref.index]
    return (lk.k if role == "k" else lk.v).view(np.float16).astype(np.float32)


def fill_sequentially(
    srv: ServerProcess,
    slot_dir: Path,
    state: SeqState,
    refs: list[LayerRef],
    plan: dict[int, tuple[Scheme, Scheme]],
    tokens: list[int],
    *,
    seed: int = 0,
    step: int = 1,
) -> SeqState:
    """The cache `plan` leaves after reading `tokens` (the f16 capture `state`'s) in the f16
    server `srv`, token by token (see the module doc). `step` > 1 reads that many tokens per
    round: faster, but tokens of one round see each other's K/V unquantized."""
    work = copy.deepcopy(state)
    # every layer's new cell changes (deeper layers see the quantized history), planned or not
    fresh = {(r.layer, role): _fresh(state, r, role) for r in refs for role in "kv"}

    def settle(t: int) -> None:
        """Put cell t (and a completed KIVI key group) through the plan."""
        for r in refs:
            if r.layer not in plan:
                for role in "kv":
                    _put(work, r, role, t, fresh[(r.layer, role)][t : t + 1])
                continue
            for role, s in zip("kv", plan[r.layer], strict=True):
                hd = r.head_dim_k if role == "k" else r.head_dim_v
                lo = t
                if s.kind == "kivi" and role == "k":
                    if (t + 1) % GROUP:
                        _put(work, r, role, t, fresh[(r.layer, role)][t : t + 1])  # residual: f16
                        continue
                    lo = t + 1 - GROUP
                x = fresh[(r.layer, role)][lo : t + 1]
                rt = roundtrip(x, s, "k" if role == "k" else "v", head_dim=hd, seed=seed + r.layer)
                _put(work, r, role, lo, rt.values)

    settle(0)
    t = 1
    while t < len(tokens):
        end = min(t + step, len(tokens))  # tokens t..end-1 read together
        # the slot holds exactly the t cells read so far: the server reads tokens t..end-1
        (slot_dir / "seq.bin").write_bytes(write_seq_state(truncated(work, t)))
        restore(srv, "seq.bin")
        body = {"prompt": tokens[:end], "n_predict": 1, "cache_prompt": True, "id_slot": 0}
        try:
            r = srv.client.post("/completion", json=body).raise_for_status()
            srv.client.post(
                "/slots/0", params={"action": "save"}, json={"filename": "seq.bin"}
            ).raise_for_status()
        except httpx.HTTPError as exc:
            raise ScoreError(f"llama-server at token {t} of the sequential fill: {exc}") from exc
        if r.json().get("timings", {}).get("prompt_n") != end - t:
            raise ScoreError(f"llama-server re-read the prompt at token {t}: the filled cache was not used")
        saved = parse_seq_state((slot_dir / "seq.bin").read_bytes())
        for ref in refs:
            for role in "kv":
                fresh[(ref.layer, role)][t:end] = _fresh(saved, ref, role)[t:end]
        for i in range(t, end):
            settle(i)
        t = end
    return work
