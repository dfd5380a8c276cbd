"""Progress as typed events: the pipeline reports, the faces (CLI, gateway, workbench) render.

A stage never prints. It calls `emit(event)`; the CLI turns events into Rich progress bars (or a
plain line every 30 s off a terminal), the gateway will turn them into server-sent events.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Emit",
    "Event",
    "Notice",
    "StageFinished",
    "StageStarted",
    "TaskFinished",
    "TaskProgress",
    "TaskStarted",
    "silent",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class StageStarted(_Event):
    stage: str  # setup, plan, sweep, context, quality, decide+report


class StageFinished(_Event):
    stage: str
    seconds: float


class TaskStarted(_Event):
    """A counted (or open-ended, total None) piece of work inside a stage, e.g. one model's sweep."""

    task: str  # an id unique within the run
    label: str
    total: int | None = None


class TaskProgress(_Event):
    task: str
    advance: float = 1.0
    completed: float | None = None  # absolute progress (e.g. a build's percent) instead of advance
    label: str | None = None


class TaskFinished(_Event):
    task: str


class Notice(_Event):
    """One line for the user: what the pipeline is doing or found (not an error)."""

    text: str


Event = StageStarted | StageFinished | TaskStarted | TaskProgress | TaskFinished | Notice
Emit = Callable[[Event], None]


def silent(_: Event) -> None:
    """The emitter for callers that do not show progress (tests, the gateway's background work)."""
