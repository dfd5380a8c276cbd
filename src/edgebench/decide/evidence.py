"""Everything the decide stage reads about one model (or remote backend), gathered from the store.

Decide never measures: it reads what the sweep, context probe and quality stages stored and
turns it into rankings by explicit rules. Missing evidence stays `None` and the rules say so.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from edgebench.measure.crosscheck import ServerCheck
from edgebench.measure.throughput import ThroughputResult
from edgebench.quality.score import SuiteScore

__all__ = ["ContextEvidence", "MemoryEstimate", "ModelEvidence"]


class ContextEvidence(BaseModel):
    """Stable-context probe summary (filled by the context stage; None until it has run)."""

    model_config = ConfigDict(frozen=True)

    stable_ctx: int | None  # largest context that loaded, filled, decoded, kept swap and RAM in budget
    tried: dict[int, bool]  # context → ok?
    host_total_mib: float | None  # measured peak RSS at stable_ctx
    anon_mib: float | None = None  # its anonymous part: what only swap can take back (not mmap-ed weights)
    model_mib: float | None
    kv_mib: float | None
    compute_mib: float | None
    load_s: float | None


class MemoryEstimate(BaseModel):
    """The memory planner's prediction at one context: used (and labelled) only where nothing was measured."""

    model_config = ConfigDict(frozen=True)

    ctx: int
    host_total_mib: float
    model_mib: float
    kv_mib: float
    compute_mib: float


class ModelEvidence(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    backend: str  # "cpu" (managed llama.cpp), "rpc" (its layers on RPC workers) or a remote backend's name
    file_size: int | None
    params: int | None
    quant: str | None
    requantized: bool = False  # made by edgebench with llama-quantize --allow-requantize
    chat_template: bool = True
    best_pp: ThroughputResult | None = None
    best_tg: ThroughputResult | None = None
    throughput: list[ThroughputResult] = []
    server_check: ServerCheck | None = None
    context: ContextEvidence | None = None
    quality: SuiteScore | None = None
    predicted_memory: MemoryEstimate | None = None  # planner figures, shown as "predicted"
    # backend "rpc": the model this candidate splits and the workers holding its offloaded layers;
    # its quality is that model's (the same weights, the same greedy tokens), its speed, context
    # and memory (the head's own) are the split measurements'
    split_of: str | None = None
    rpc: tuple[str, ...] = ()
    latency_note: str | None = None  # set when the quality latency is a prediction, and how
