"""`edgebench runtime build|show`: the llama.cpp binaries edgebench drives."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edgebench.cli._common import console, emit_json, err_console, state
from edgebench.cli._render import render_runtime
from edgebench.errors import ConfigError
from edgebench.runtime.build import build
from edgebench.runtime.locate import locate, probe_runtime
from edgebench.runtime.presets import PRESETS, host_arch, resolve_preset

__all__ = ["app"]

app = typer.Typer(help="Build, locate and describe llama.cpp.", no_args_is_help=True)


@app.command("build")
def runtime_build(
    preset: str | None = typer.Option(
        None, "--preset", "-p", help=f"auto, {', '.join(PRESETS)} (default: config, else auto)."
    ),
    source: Path | None = typer.Option(
        None,
        "--source",
        help="A llama.cpp source tree of your own "
        "(e.g. ik_llama.cpp, rk-llama.cpp) instead of the pinned one.",
    ),
    cmake_arg: list[str] = typer.Option([], "--cmake-arg", help="Extra -D flag; repeatable."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Parallel compile jobs."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the cache has this build."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Build llama.cpp from source into the cache (reused when source, preset and flags match)."""
    cfg = state.config
    p = resolve_preset(preset or cfg.llama_cpp.preset)
    src = source or cfg.llama_cpp.source
    if src is not None and not src.is_dir():
        raise ConfigError(f"--source {src}: not a directory")
    extra = [*cfg.llama_cpp.cmake_args, *cmake_arg]
    bad = [a for a in extra if not a.startswith("-D")]
    if bad:
        raise ConfigError(f"--cmake-arg {bad[0]!r}: must be a -DNAME=VALUE cache entry")
    with Progress(
        TextColumn("[bold]llama.cpp[/bold] " + p.name),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err_console,
        transient=json_,
    ) as bar:
        task = bar.add_task("", total=100)
        info = build(
            builds_dir=cfg.builds_dir,
            cache_dir=cfg.cache_dir,
            preset=p,
            source=src,
            extra_args=extra,
            jobs=jobs or cfg.llama_cpp.jobs,
            force=force,
            on_progress=lambda pct, what: bar.update(task, completed=pct, description=what[-60:]),
        )
        bar.update(task, completed=100, description="done")
    runtime = probe_runtime(Path(info.bin_dir), "cache", info) if info.arch == host_arch() else None
    if json_:
        emit_json({"build": info, "runtime": runtime})
        return
    console.print(f"built {info.key} in {info.build_s:.0f} s → {info.bin_dir}", highlight=False)
    if runtime is not None:
        render_runtime(console, runtime)
    else:
        console.print(f"({info.arch} binaries: run them on the board, or under qemu-{info.arch})")


@app.command("show")
def runtime_show(json_: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Which llama.cpp edgebench will use (config bin dir → PATH → build cache) and what it is."""
    cfg = state.config
    rt = locate(bin_dir=cfg.llama_cpp.bin_dir, builds_dir=cfg.builds_dir)
    if json_:
        emit_json(rt)
        return
    render_runtime(console, rt)
