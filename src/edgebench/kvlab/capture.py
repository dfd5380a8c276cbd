"""Capture a model's real K/V: llama-server with an f16 cache reads a text, then saves its slot."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgebench.kvlab.state import SeqState, parse_seq_state
from edgebench.runtime.flags import FlashAttn, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess

__all__ = ["Step", "capture", "continue_from", "next_steps"]

Step = tuple[int, list[tuple[int, float]]]  # the token taken, and the top-k (token, logprob) before it


def _config(ctx: int, flash_attn: FlashAttn, cache_type: str, threads: int, slot_dir: str) -> RuntimeConfig:
    return RuntimeConfig(
        threads=threads,
        ctx=ctx,
        cache_type_k=cache_type,
        cache_type_v=cache_type,
        flash_attn=flash_attn,
        parallel=1,
        extra=("--slot-save-path", slot_dir),
    )


def next_steps(srv: ServerProcess, text: str, n: int = 8, k: int = 5) -> list[Step]:
    """`n` tokens after `text` from slot 0 (its cached prefix reused), each with the top-`k`
    log-probabilities it was drawn from; a fixed seed makes the draw repeatable."""
    body = {
        "prompt": text,
        "n_predict": n,
        "cache_prompt": True,
        "id_slot": 0,
        "n_probs": k,
        "temperature": 0,
        "seed": 1,
        "samplers": [],
    }
    doc = srv.client.post("/completion", json=body).raise_for_status().json()
    return [
        (int(t["id"]), [(int(c["id"]), float(c["logprob"])) for c in t["top_logprobs"]])
        for t in doc["completion_probabilities"]
    ]


def continue_from(
    runtime: Runtime,
    model_path: str,
    text: str,
    state: bytes,
    *,
    ctx: int,
    flash_attn: FlashAttn = "on",
    threads: int = 2,
    n: int = 8,
    log_dir: Path,
) -> list[Step]:
    """Restore `state` (a slot file, possibly rewritten) into a fresh f16 llama-server and take the
    next `n` steps after `text` from it: what the model does with that KV cache."""
    with tempfile.TemporaryDirectory(prefix="edgebench-kv-") as d:
        (Path(d) / "kv.bin").write_bytes(state)
        cfg = _config(ctx, flash_attn, "f16", threads, d)
        with ServerProcess(runtime, model_path, cfg, log_dir / f"restore-fa{flash_attn}.log") as srv:
            r = srv.client.post("/slots/0", params={"action": "restore"}, json={"filename": "kv.bin"})
            r.raise_for_status()
            return next_steps(srv, text, n)


def capture(
    runtime: Runtime,
    model_path: str,
    text: str,
    *,
    ctx: int,
    flash_attn: FlashAttn = "on",
    cache_type: str = "f16",
    threads: int = 2,
    log_dir: Path,
    steps: int = 0,
) -> tuple[SeqState, bytes, list[Step]]:
    """Process `text` in slot 0 of a fresh llama-server and return its saved state (parsed, raw),
    then the `steps` next tokens it takes from that state (the baseline a restore is held to)."""
    with tempfile.TemporaryDirectory(prefix="edgebench-kv-") as d:
        cfg = _config(ctx, flash_attn, cache_type, threads, d)
        log_dir.mkdir(parents=True, exist_ok=True)
        with ServerProcess(
            runtime, model_path, cfg, log_dir / f"capture-{cache_type}-fa{flash_attn}.log"
        ) as srv:
            r = srv.client.post(
                "/completion", json={"prompt": text, "n_predict": 1, "cache_prompt": True, "id_slot": 0}
            )
            r.raise_for_status()
            srv.client.post(
                "/slots/0", params={"action": "save"}, json={"filename": "kv.bin"}
            ).raise_for_status()
            data = (Path(d) / "kv.bin").read_bytes()
            baseline = next_steps(srv, text, steps) if steps else []
    return parse_seq_state(data), data, baseline
