"""The routing decision as typed records: model map, routing table, do-not-use list, use cases.

`decide.route` fills them by rule; `decide.export` writes them as routing.json/.toml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgebench.measure.serving import ServingSpec

__all__ = [
    "SCHEMA_VERSION",
    "USE_CASES",
    "Budgets",
    "Cause",
    "Choice",
    "Closest",
    "DoNotUse",
    "Flag",
    "MapLine",
    "NotMeasured",
    "Route",
    "Routing",
    "Settle",
    "UseCase",
]

SCHEMA_VERSION = 2  # 2: serving specs per model, closest candidate per unfilled use case

Role = Literal["fastest", "default", "quality", "not_practical"]
CauseRule = Literal[
    "tool_refusal", "thinking_loops", "template_missing", "context_failure", "bigger_not_better"
]
Metric = Literal["composite", "weighted", "category", "latency"]
Settle = Literal["latency", "quality"]  # what settles a tie on the metric


class Budgets(BaseModel):
    """The thresholds the rules used, copied into the routing file so it explains itself."""

    model_config = ConfigDict(frozen=True)

    latency_s: float
    quality_latency_s: float
    ram_reserve_mib: int
    ram_total_mib: int | None = None
    tool_call_floor: float
    context_floor: int
    tool_refusal_max: float
    loop_rate_max: float

    @property
    def usable_mib(self) -> int | None:
        """Host RAM − reserve; None when the host's RAM is unknown."""
        return None if self.ram_total_mib is None else self.ram_total_mib - self.ram_reserve_mib


class MapLine(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    model: str | None = None  # None: no model qualifies (the because says why)
    because: str
    numbers: dict[str, int | float | str]


class Flag(BaseModel):
    model_config = ConfigDict(frozen=True)

    bigger: str
    smaller: str  # the best-scoring smaller, faster model that meets the rule
    also: list[str]  # other smaller, faster models that meet it too
    because: str


class Choice(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    backend: str
    score: float  # the use case's metric (category pass rate, weighted quality, composite or latency)
    score_low: float
    score_high: float
    latency_s: float


class Closest(BaseModel):
    """When no model qualifies: the nearest one and exactly what it misses, so a person on weak
    hardware (and the gateway, labelled) can still use it knowingly."""

    model_config = ConfigDict(frozen=True)

    model: str
    backend: str
    score: float | None = None  # the use case's metric, when measured
    misses: list[str]  # "tool_call 0.12 < floor 0.50", "latency 14.2 s > 10 s budget", …


class Route(BaseModel):
    model_config = ConfigDict(frozen=True)

    use_case: str
    metric: str
    primary: Choice | None = None
    backup: Choice | None = None
    why: str
    closest: Closest | None = None  # only when no model qualifies


class Cause(BaseModel):
    model_config = ConfigDict(frozen=True)

    rule: CauseRule
    detail: str


class DoNotUse(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    causes: list[Cause]


class NotMeasured(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    missing: list[str]  # "throughput" | "context" | "quality" | "memory"


class Routing(BaseModel):
    model_config = ConfigDict(frozen=True)

    suite: str | None = None
    budgets: Budgets
    model_map: list[MapLine]
    bigger_not_better: list[Flag]
    routes: list[Route]
    do_not_use: list[DoNotUse]
    not_measured: list[NotMeasured]
    # How to start each managed model (measure.serving): the gateway serves the file alone.
    serving: dict[str, ServingSpec] = {}


class UseCase(BaseModel):
    """One routing-table row's rule: which metric picks the model, under which latency budget."""

    model_config = ConfigDict(frozen=True)

    name: str
    metric: Metric
    category: str | None = None  # for metric == "category"
    budget: Literal["latency_s", "quality_latency_s"] | None = None
    needs_tools: bool = False  # tool_call ≥ tool_call_floor
    settle: Settle = "latency"  # the other side of the trade-off decides a tie
    rule: str


USE_CASES: tuple[UseCase, ...] = (
    UseCase(
        name="fast_chat",
        metric="composite",
        budget="latency_s",
        rule="highest composite (quality × speed) within the interactive latency budget",
    ),
    UseCase(
        name="reasoning",
        metric="category",
        category="reasoning",
        budget="quality_latency_s",
        rule="highest reasoning score within the quality latency budget",
    ),
    UseCase(
        name="code",
        metric="category",
        category="code",
        budget="latency_s",
        rule="highest code score within the interactive budget (ties: the fastest)",
    ),
    UseCase(
        name="tool_calling",
        metric="category",
        category="tool_call",
        budget="latency_s",
        needs_tools=True,
        rule="highest tool_call score, at or above the tool-call floor, within the interactive budget",
    ),
    UseCase(
        name="factual",
        metric="category",
        category="factual",
        budget="latency_s",
        rule="highest factual score within the interactive budget",
    ),
    UseCase(
        name="deep_analysis",
        metric="weighted",
        rule="highest weighted quality at any latency (batch work)",
    ),
    UseCase(
        name="background",
        metric="latency",
        budget="latency_s",
        needs_tools=True,
        settle="quality",
        rule="lowest mean latency among models at or above the tool-call floor (routing, dispatch)",
    ),
)
