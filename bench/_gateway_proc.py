"""The gateway as its own process, as `edgebench serve` runs it (no GIL shared with the bench's
clients). Usage: python bench/_gateway_proc.py (SPEC_JSON | --remote URL) LOG_DIR; prints its port,
serves until killed."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import uvicorn

from edgebench.config import BackendConfig, load_config
from edgebench.measure.serving import ServingSpec
from edgebench.serve.app import GatewaySettings, build_app
from edgebench.serve.table import Memory, Served, ServeTable
from edgebench.setup import ensure_runtime


def main() -> None:
    if sys.argv[1] == "--remote":  # a fake upstream (bench/gateway_cpu): no llama.cpp needed
        b = BackendConfig(name="fake", url=sys.argv[2], model="fake")
        served = Served(name="fake", remote=b, memory=Memory(mib=0, source="unknown"))
        runtime, log_dir = None, Path(sys.argv[3])
    else:
        spec = ServingSpec.model_validate_json(Path(sys.argv[1]).read_text())
        served = Served(name=spec.model, spec=spec, memory=Memory(mib=0, source="unknown"))
        runtime, log_dir = ensure_runtime(load_config()), Path(sys.argv[2])
    tbl = ServeTable(models={served.name: served}, tiers={}, source="bench")
    app, _ = build_app(tbl, runtime, GatewaySettings(log_dir=log_dir))
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on accepted sockets (see _serve_common)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # a client may connect as soon as the port is printed
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


if __name__ == "__main__":
    main()
