"""Capture a model's real K/V: llama-server with an f16 cache reads a text, then saves its slot."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgebench.kvlab.state import SeqState, parse_seq_state
from edgebench.runtime.flags import FlashAttn, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess

__all__ = ["capture"]


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
) -> tuple[SeqState, bytes]:
    """Process `text` in slot 0 of a fresh llama-server and return its saved state (parsed, raw)."""
    with tempfile.TemporaryDirectory(prefix="edgebench-kv-") as d:
        cfg = RuntimeConfig(
            threads=threads,
            ctx=ctx,
            cache_type_k=cache_type,
            cache_type_v=cache_type,
            flash_attn=flash_attn,
            parallel=1,
            extra=("--slot-save-path", d),
        )
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
    return parse_seq_state(data), data
