"""Shared CLI state: global options, lazily opened config/store, JSON and table output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from edgebench.config import Config, load_config
from edgebench.store import Store

__all__ = ["State", "app", "console", "counting_progress", "emit_json", "err_console", "state"]

console = Console()
err_console = Console(stderr=True)
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
    state.config_path = config
    state.debug = debug
    state._config = None
    state._store = None


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


def counting_progress() -> Progress:
    """The progress display for counted work (sweep points, quality replies): bar, n/N, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
