"""Pipeline events → Rich progress (a bar per task on a terminal, a plain line every 30 s elsewhere)."""

from __future__ import annotations

from types import TracebackType

from rich.progress import TaskID

from edgebench.cli._common import counting_progress, err_console
from edgebench.pipeline.events import Event, Notice, TaskFinished, TaskProgress, TaskStarted

__all__ = ["EventProgress"]


class EventProgress:
    """`with EventProgress() as emit: pipeline_function(..., emit=emit)`."""

    def __init__(self) -> None:
        self._bar = counting_progress()
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> EventProgress:
        self._bar.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.__exit__(et, ev, tb)

    def __call__(self, e: Event) -> None:
        if isinstance(e, TaskStarted):
            self._tasks[e.task] = self._bar.add_task(e.label[:70], total=e.total)
        elif isinstance(e, TaskProgress) and e.task in self._tasks:
            label = e.label[:70] if e.label is not None else None
            if e.completed is not None:
                self._bar.update(self._tasks[e.task], completed=e.completed, description=label)
            else:
                self._bar.update(self._tasks[e.task], advance=e.advance, description=label)
        elif isinstance(e, TaskFinished) and e.task in self._tasks:
            self._bar.remove_task(self._tasks.pop(e.task))
        elif isinstance(e, Notice):
            err_console.print(e.text, markup=False, highlight=False)
