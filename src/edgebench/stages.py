"""The registry of stages: name → record type + record schema version.

Every stored row names its stage and the version of that stage's record it was written with
(`results.record_version`); a stage reuses only rows of its current version, so a record whose
meaning changed is measured again rather than mixed with new ones. Readers (decide, the gateway,
pooled results from other boards) look a stage's record type up here.
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic import BaseModel

from edgebench.fleet import measure as fleet_measure
from edgebench.measure import context, crosscheck, race, throughput
from edgebench.pipeline import plancheck
from edgebench.pipeline import quality as quality_stage
from edgebench.quality import runner
from edgebench.quant import verify as quant_verify

__all__ = ["STAGES", "Stage", "stage"]


class Stage(NamedTuple):
    name: str
    record: type[BaseModel]
    version: int
    what: str


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            throughput.STAGE,
            throughput.ThroughputResult,
            throughput.VERSION,
            "llama-bench, one config × test",
        ),
        Stage(
            race.ROUND_STAGE,
            race.RaceRound,
            race.ROUND_VERSION,
            "one round of a finalists' race: each once, back to back",
        ),
        Stage(race.DECISION_STAGE, race.RaceOutcome, race.DECISION_VERSION, "a race's decision + evidence"),
        Stage(
            crosscheck.STAGE, crosscheck.ServerCheck, crosscheck.VERSION, "the winner through llama-server"
        ),
        Stage(context.STAGE, context.ContextTrial, context.VERSION, "one context size, loaded and filled"),
        Stage(runner.STAGE, runner.QualityResult, runner.VERSION, "one reply to one suite item, graded"),
        Stage(
            quality_stage.START_STAGE,
            quality_stage.StartFailure,
            quality_stage.START_VERSION,
            "a llama-server that would not start for quality",
        ),
        Stage(plancheck.STAGE, plancheck.PlanCheckRow, plancheck.VERSION, "planner vs measured buffers"),
        Stage(
            fleet_measure.STAGE,
            fleet_measure.RpcBenchRow,
            fleet_measure.VERSION,
            "llama-bench, split over RPC",
        ),
        Stage(quant_verify.STAGE, quant_verify.QuantRow, quant_verify.VERSION, "a recipe applied, measured"),
    )
}


def stage(name: str) -> Stage:
    return STAGES[name]
