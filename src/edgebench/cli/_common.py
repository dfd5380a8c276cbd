"""Shared CLI state: global options, lazily opened config/store, JSON and table output."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from edgebench.config import Config, load_config
from edgebench.hostlock import measuring
from edgebench.store import Store

__all__ = [
    "NO_WAIT",
    "State",
    "app",
    "console",
    "counting_progress",
    "emit_json",
    "err_console",
    "hold_host",
    "state",
]


def _console(stderr: bool = False) -> Console:
    # Off a terminal (a log, a pipe, CI) Rich wraps at 80 columns, which folds every table cell
    # into stubs; a wide fixed width keeps table rows on one line. $COLUMNS still wins.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else 160
    return Console(stderr=stderr, width=width)


console = _console()
err_console = _console(stderr=True)
app = typer.Typer(
    name="edgebench",
    help="Which model, quantization and llama.cpp settings work on THIS machine: measured, ranked, served.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class State:
    config_path: Path | None = None
    debug: bool = False
    _config: Config | None = None
    _store: Store | None = field(default=None, repr=False)
    held: ExitStack = field(default_factory=ExitStack, repr=False)  # the host lock, while measuring

    def release(self) -> None:
        self.held.close()

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.config.store_path)
        return self._store


state = State()


@app.callback()
def _global(
    config: Path | None = typer.Option(None, "--config", "-c", help="edgebench.toml to use."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    state.release()
    state.config_path = config
    state.debug = debug
    state._config = None
    state._store = None


NO_WAIT_HELP = "Refuse at once when another measurement holds the host, instead of waiting."
NO_WAIT = typer.Option(False, "--no-wait", help=NO_WAIT_HELP)


def hold_host(no_wait: bool) -> None:
    """Take the host-wide measurement lock for the rest of this command (released when the
    command ends, by any path: cli.main releases it). Call it after the arguments are validated,
    before measuring."""
    say = lambda msg: err_console.print(msg, markup=False, highlight=False)  # noqa: E731
    state.held.enter_context(measuring(wait=not no_wait, say=say))


def emit_json(obj: BaseModel | dict[str, Any] | list[Any]) -> None:
    """--json output: one JSON document on stdout, nothing else there."""
    if isinstance(obj, BaseModel):
        data: Any = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        data = [o.model_dump(mode="json") if isinstance(o, BaseModel) else o for o in obj]
    else:
        data = obj
    sys.stdout.write(json.dumps(data, indent=2, default=_encode) + "\n")


def _encode(o: object) -> Any:
    return o.model_dump(mode="json") if isinstance(o, BaseModel) else str(o)


class CountingProgress(Progress):
    """Rich's bar on a terminal. Elsewhere (CI, nohup, a pipe) Rich draws nothing, so a long run
    prints one plain `description: n/N, ETA` line at most every `every_s` seconds instead."""

    def __init__(self, out: Console, every_s: float) -> None:
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=out,
            transient=True,
        )
        self._plain = not out.is_terminal
        self._every_s = every_s
        self._last = time.monotonic()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        now = time.monotonic()
        if not self._plain or now - self._last < self._every_s:
            return
        self._last = now
        task = self._tasks[task_id]
        line = f"{task.description}: {task.completed:g}/{task.total or 0:g}"
        if task.time_remaining is not None:
            line += f", ETA {int(task.time_remaining) // 60}:{int(task.time_remaining) % 60:02d}"
        self.console.print(line, highlight=False, markup=False)


def counting_progress(out: Console | None = None, every_s: float = 30.0) -> CountingProgress:
    """The progress display for counted work (sweep points, quality replies): bar, n/N, ETA."""
    return CountingProgress(out or err_console, every_s)
