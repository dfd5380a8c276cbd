"""`edgebench models add|list|show`: GGUF files and what their metadata says."""

from __future__ import annotations

from pathlib import Path

import typer

from edgebench.cli._common import console, emit_json, state
from edgebench.cli._render import render_model, render_models
from edgebench.errors import ConfigError
from edgebench.models.default import DEFAULT_MODEL_NAME, assemble_default_model
from edgebench.models.registry import add_model, check_name, list_models, resolve_model

__all__ = ["app"]

app = typer.Typer(help="Register GGUF models and read their metadata.", no_args_is_help=True)


@app.command("add")
def models_add(
    paths: list[Path] = typer.Argument(None, help="GGUF files."),
    name: str | None = typer.Option(None, "--name", help="Name to register (one path only)."),
    default: bool = typer.Option(False, "--default", help="Add the embedded gemma-3-270m model."),
    replace: bool = typer.Option(
        False, "--replace", help="Give --name to this file even if another registered file has it."
    ),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Read GGUF metadata (sha256 computed once) and register the models."""
    paths = list(paths or [])
    if name is not None and len(paths) != 1:
        raise ConfigError("--name: give exactly one path with it")
    if replace and name is None:
        raise ConfigError("--replace: give --name with it (the name to move to this file)")
    if name is not None:
        check_name(name, "--name")
    if not paths and not default:
        raise ConfigError("models add: give GGUF paths, or --default for the embedded model")
    added = [add_model(state.store, p, name, replace=replace) for p in paths]
    if default:
        added.append(
            add_model(state.store, assemble_default_model(state.config.models_dir), DEFAULT_MODEL_NAME)
        )
    if json_:
        emit_json(added)
        return
    render_models(console, added)


@app.command("list")
def models_list(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Registered models."""
    models = list_models(state.store)
    if json_:
        emit_json(models)
        return
    render_models(console, models)


@app.command("show")
def models_show(
    ref: str = typer.Argument(..., help="Registered name, path, or sha256 prefix."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Everything edgebench knows about one model (per-layer KV heads, SWA, template...)."""
    m = resolve_model(state.store, ref)
    if json_:
        emit_json(m)
        return
    render_model(console, m)
