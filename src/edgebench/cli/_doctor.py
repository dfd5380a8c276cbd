"""`edgebench doctor`: what this machine is and whether edgebench can measure on it."""

from __future__ import annotations

from pathlib import Path

import typer

from edgebench.cli._common import console, emit_json, state
from edgebench.cli._render import render_host, render_models, render_runtime
from edgebench.host.probe import check_root
from edgebench.setup import doctor_report

__all__ = ["register"]


def doctor(
    sysroot: Path = typer.Option(
        Path("/"),
        "--sysroot",
        help="Probe a recorded filesystem root (sys/, proc/, dev/) instead of this host.",
    ),
    no_bandwidth: bool = typer.Option(False, "--no-bandwidth", help="Skip the memory bandwidth test."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Probe the host (CPU clusters, RAM, swap, thermals, NPU/GPU, bandwidth) and the llama.cpp build."""
    check_root(sysroot, "--sysroot")
    report = doctor_report(state.config, state.store, sysroot=sysroot, bandwidth=not no_bandwidth)
    if json_:
        emit_json(report)
        return
    render_host(console, report.host)
    render_runtime(console, report.runtime, report.runtime_problem)
    render_models(console, report.models)
    console.print(
        f"data dir {report.data_dir} · cache {report.cache_dir} · "
        f"config {report.config_file or '(defaults, no file)'}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
