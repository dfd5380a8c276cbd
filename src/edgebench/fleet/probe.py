"""A worker tells the head what it is: its host probe, served read-only over HTTP next to
rpc-server (GET /host on port+1, the same address), and read by `plan --rpc` and the split rows."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import httpx

from edgebench.errors import ConfigError
from edgebench.hostaddr import parse_endpoint

__all__ = ["ProbeServer", "fetch_probe", "probe_endpoint"]


def probe_endpoint(rpc_endpoint: str) -> str:
    host, port = parse_endpoint(rpc_endpoint)
    return f"http://{f'[{host}]' if ':' in host else host}:{port + 1}/host"


class ProbeServer:
    """`with ProbeServer(host, port, info):` serves `info` (JSON) at GET /host, nothing else."""

    def __init__(self, host: str, port: int, info: dict[str, Any]) -> None:
        body = json.dumps(info).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/host":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # no access log on the worker's terminal

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:  # bound here, before rpc-server starts: nothing to undo
            raise ConfigError(
                f"host probe {host}:{port}: cannot listen ({exc.strerror or exc}); the worker needs its "
                "port and the next one: choose another --port"
            ) from None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ProbeServer:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def fetch_probe(rpc_endpoint: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """The worker's host record (fingerprint, RAM, usable MiB), or one line saying why not."""
    url = probe_endpoint(rpc_endpoint)
    try:
        r = httpx.get(url, timeout=timeout_s)
        r.raise_for_status()
        data = r.json()
    except (httpx.HTTPError, ValueError) as e:
        raise ConfigError(
            f"worker {rpc_endpoint}: no host probe at {url} ({type(e).__name__}); give --rpc-mem for it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("usable_mib"), int | float):
        raise ConfigError(f"worker {rpc_endpoint}: {url} is not an edgebench worker's probe")
    return data
