"""Transient failures (our timeout, a stolen port, a foreign server, a dead backend) are labelled and
retried on the next run; failures of the config itself stay stored results."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgebench.backends.base import Backend, ChatRequest, ChatResponse
from edgebench.errors import EdgebenchError
from edgebench.host.probe import probe_host
from edgebench.measure.context import probe_context
from edgebench.measure.space import CpuSet, Point
from edgebench.measure.throughput import MeasureSettings, PointMeasurer
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.quality.runner import QualitySettings, Target, run_suite
from edgebench.quality.suite import load_suite
from edgebench.runtime import server
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import ExitCause
from edgebench.runtime.server import ServerFailed, ServerProcess
from edgebench.store import Provenance, Store
from edgebench.testing.synth import write_tiny_llama
from fake_llama import bench_row, dumps, fake_bin_dir, fake_runtime
from helpers import FIXTURES

TEST = BenchTest(n_prompt=16, n_gen=0)
POINT = Point(threads=1, kv="f16", fa="off", ubatch=512, cpus=CpuSet(name="all", cpus=None))
HOST = probe_host(FIXTURES / "sysfs" / "rpi5")


def _model(tmp_path: Path) -> ModelInfo:
    return read_model_info(write_tiny_llama(tmp_path / "tiny.gguf"))


def _measurer(tmp_path: Path, store: Store, bench_sh: str, timeout_s: float) -> PointMeasurer:
    rt = fake_runtime(fake_bin_dir(tmp_path / "bin", bench_sh, stdout=dumps([bench_row(16, 0)])))
    return PointMeasurer(
        store, rt, HOST, _model(tmp_path), MeasureSettings(timeout_s=timeout_s, min_processes=3)
    )


def test_our_timeout_is_stored_labelled_and_retried_next_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    slow = _measurer(tmp_path, store, 'sleep 30; cat "$OUT"', timeout_s=1)
    first = slow.measure(POINT, TEST)
    assert first.status == "timeout" and first.transient
    assert "retried on the next run" in first.cause
    assert store.count("throughput") == 1  # the user sees it …

    fine = _measurer(tmp_path, store, 'cat "$OUT"', timeout_s=20)
    again = fine.measure(POINT, TEST)  # … but it is not reused as the config's result
    assert not again.resumed and again.status == "ok" and not again.transient
    assert store.count("throughput") == 1  # replaced, not duplicated
    third = fine.measure(POINT, TEST)
    assert third.resumed and third.status == "ok"


def test_a_config_failure_is_a_result_and_is_reused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    crash = _measurer(tmp_path, store, "kill -SEGV $$", timeout_s=20)
    first = crash.measure(POINT, TEST)
    assert first.status == "crashed" and not first.transient
    fine = _measurer(tmp_path, store, 'cat "$OUT"', timeout_s=20)
    again = fine.measure(POINT, TEST)
    assert again.resumed and again.status == "crashed"


# --- quality: a backend that is not there ------------------------------------------------------


class fake_flaky_backend(Backend):
    """Answers `good` requests, then fails like a dead server (connection refused)."""

    name = "fake-flaky"

    def __init__(self, good: int, error: str = "connection failed: ConnectError: refused") -> None:
        self.good, self.calls, self.error = good, 0, error

    def chat(self, req: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls <= self.good:
            return ChatResponse(content="42", finish_reason="stop")
        return ChatResponse(error=self.error)


def _target() -> Target:
    prov = Provenance(build_id="b1-fake", host_fingerprint="h", model_sha256="0" * 64)
    return Target(label="fake", mode="chat", provenance=prov, backend_id="fake")


def test_dead_backend_stops_the_run_and_stores_no_failures(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    suite = load_suite("seed14")
    settings = QualitySettings(samples=0, variants=False)
    with pytest.raises(EdgebenchError, match=r"fake: 3 requests in a row failed: connection failed"):
        run_suite(store, fake_flaky_backend(good=2), _target(), suite, settings)
    assert store.count("quality") == 2  # what was answered stays; the failures are not results
    results = run_suite(store, fake_flaky_backend(good=10**6), _target(), suite, settings)
    assert sum(r.resumed for r in results) == 2 and len(results) == len(suite.items)


@pytest.mark.parametrize("error", ["HTTP 503: loading model", "HTTP 404: not found", "HTTP 502: bad gateway"])
def test_http_errors_of_the_server_are_not_the_models_answers(tmp_path: Path, error: str) -> None:
    store = Store(tmp_path / "s.sqlite")
    with pytest.raises(EdgebenchError, match="in a row failed"):
        run_suite(
            store,
            fake_flaky_backend(good=0, error=error),
            _target(),
            load_suite("seed14"),
            QualitySettings(samples=0),
        )
    assert store.count("quality") == 0


def test_a_model_error_reply_is_still_a_result(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    suite = load_suite("seed14")
    be = fake_flaky_backend(good=0, error="HTTP 400: the request exceeds the available context size")
    results = run_suite(store, be, _target(), suite, QualitySettings(samples=0, variants=False))
    assert len(results) == len(suite.items) and not any(r.passed for r in results)
    assert store.count("quality") == len(suite.items)


# --- llama-server: a foreign server on our port ------------------------------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status":"ok","model_path":"/elsewhere/other.gguf"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def foreign_server() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


@pytest.mark.llama
def test_foreign_server_on_our_port_is_detected_and_another_port_used(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, foreign_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([foreign_server])
    monkeypatch.setattr(server, "free_port", lambda: next(ports, None) or _free())
    with ServerProcess(runtime, str(tiny_model), RuntimeConfig(ctx=256), tmp_path / "s.log") as srv:
        assert srv.port != foreign_server
        assert server.listening_pid(srv.port) == srv.pid


@pytest.mark.llama
def test_port_never_ours_is_an_environment_failure(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, foreign_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "free_port", lambda: foreign_server)
    srv = ServerProcess(runtime, str(tiny_model), RuntimeConfig(ctx=256), tmp_path / "s.log")
    with pytest.raises(ServerFailed) as err:
        srv.start()
    assert err.value.cause is ExitCause.ENVIRONMENT
    assert f"port {foreign_server}" in err.value.detail
    assert not srv.alive()


@pytest.mark.llama
def test_context_trial_on_a_stolen_port_is_retried_next_run(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, foreign_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "s.sqlite")
    model = read_model_info(tiny_model)
    host = probe_host()
    kw = {"budget_mib": 4096.0, "log_dir": tmp_path / "logs", "ctx_list": [256]}
    monkeypatch.setattr(server, "free_port", lambda: foreign_server)
    first = probe_context(store, runtime, host, model, RuntimeConfig(), **kw)  # type: ignore[arg-type]
    (t,) = first.trials
    assert not t.ok and t.transient and t.failed_step == "load" and "retried" in t.cause
    monkeypatch.setattr(server, "free_port", _free)
    second = probe_context(store, runtime, host, model, RuntimeConfig(), **kw)  # type: ignore[arg-type]
    (t2,) = second.trials
    assert t2.ok and not t2.resumed and not t2.transient
    assert store.count("context") == 1


def _free() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
