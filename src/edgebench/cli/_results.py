"""`edgebench results export|import`: pooled results across boards (edgebench.pool)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from edgebench.cli._common import console, emit_json, state
from edgebench.pool import export_bundle, import_bundle

__all__ = ["app"]

app = typer.Typer(help="Pool results across boards: export this store's rows, import other boards' bundles.",
                  no_args_is_help=True)  # fmt: skip


@app.command("export")
def export_cmd(
    out: Path = typer.Option(Path("edgebench-results.jsonl"), "--out", "-o", help="Bundle file to write."),
    stage: str | None = typer.Option(None, "--stage", help="Only this stage's rows."),
) -> None:
    """Write every stored row with its provenance (host and llama.cpp build records) as a bundle."""
    n = export_bundle(state.store, out, stage=stage)
    console.print(f"exported {n} rows to {escape(str(out))}")


@app.command("import")
def import_cmd(
    bundles: list[Path] = typer.Argument(..., help="Bundle files (from `edgebench results export`)."),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Merge bundles into this store: a row already here is kept once; the same row key with other
    content is reported as a conflict and never overwritten."""
    out = []
    for b in bundles:
        s = import_bundle(state.store, b)
        out.append({"bundle": str(b), "added": s.added, "same": s.same, "conflicts": s.conflicts,
                    "hosts_added": s.hosts_added, "runtimes_added": s.runtimes_added})  # fmt: skip
        if not json_:
            console.print(
                f"{escape(str(b))}: {s.added} rows added, {s.same} already here, "
                f"{len(s.conflicts)} conflicts, {s.hosts_added} new hosts"
            )
            for k in s.conflicts:
                console.print(f"  conflict: row {k} is stored here with other content (kept as it was)")
    if json_:
        emit_json(out)
