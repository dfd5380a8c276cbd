"""`edgebench serve`: the OpenAI-compatible gateway over the routing table (edgebench.serve)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from edgebench.cli._common import err_console, state
from edgebench.host.probe import probe_host
from edgebench.setup import locate_quietly

__all__ = ["register"]


def serve(
    host: str | None = typer.Option(None, "--host", help="Address to bind ([serve] host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port ([serve] port, 8080).", min=0, max=65535),
    routing: Path | None = typer.Option(
        None, "--routing", help="routing.json to serve (default: <data dir>/report/routing.json if present)."
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        help="Key clients must send (or $EDGEBENCH_API_KEY, [serve] api_key_file).",
    ),
) -> None:
    """Serve the routing table: /v1/chat/completions, /v1/completions, /v1/models, /metrics."""
    import uvicorn  # only this command needs the server stack

    from edgebench.serve.setup import make_app, plan_gateway

    cfg, store = state.config, state.store
    host_info = probe_host()
    plan = plan_gateway(cfg, store, host_info, routing=routing, host=host, port=port, cli_key=api_key)
    runtime = locate_quietly(cfg)
    if runtime is None and any(s.spec is not None for s in plan.table.models.values()):
        from edgebench.errors import RuntimeNotFound

        raise RuntimeNotFound(
            "serve: no llama.cpp build found; `edgebench runtime build` or [llama_cpp] bin_dir"
        )
    app, _ = make_app(plan, runtime, host_info, cfg, store)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _say(f"serving {len(plan.table.models)} model(s), {len(plan.table.tiers)} tier(s): {plan.table.source}")
    budget = plan.settings.budget_mib
    _say(f"memory budget: {budget:.0f} MiB" if budget else "memory budget: none")
    key = "required" if plan.settings.api_key else "off: loopback only"
    _say(f"http://{plan.host}:{plan.port}/v1 (API key {key})")
    _say(f"workbench: http://{plan.host}:{plan.port}/")
    uvicorn.run(app, host=plan.host, port=plan.port, log_level="warning", access_log=False)


def _say(msg: str) -> None:
    err_console.print(msg, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
