"""A model across boards with llama.cpp RPC, on this machine: two real rpc-servers in network
namespaces joined by veth pairs (rate shaped by tc; latency by tc netem where the kernel has it,
else by a named userspace delay relay), the head in this namespace.

- split over head + 2 workers, llama-server gives the same greedy tokens as one host;
- llama-bench local vs split at two links, measured and stored with the link and the workers;
- a worker killed mid-run is a stored failure with its cause, and the head process ends;
- a worker will not bind a non-loopback address without --expose.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli_inproc import run as cli
from edgebench.config import load_config
from edgebench.errors import ConfigError
from edgebench.fleet.measure import STAGE, bench_split
from edgebench.fleet.worker import RpcWorker
from edgebench.host.probe import probe_host
from edgebench.measure.serving import stored_results
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess
from edgebench.serve.table import load_routing, table_from_routing
from edgebench.store import Store
from edgebench.testing.linkproxy import DelayProxy
from edgebench.testing.netns import Link, NetnsLab, netns_available
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import gateway

WHY = netns_available()
needs_netns = pytest.mark.skipif(WHY is not None, reason=f"RPC-over-namespaces tests: {WHY}")
FAST, SLOW = Link("fast", "1gbit", 0.1), Link("slow", "50mbit", 2.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("rpc") / "tiny4.gguf", n_layer=4, ftype="f16")


@contextlib.contextmanager
def _fleet(runtime: Runtime, tmp: Path, link: Link) -> Iterator[tuple[list[RpcWorker], list[str], str]]:
    """Two workers in namespaces; yields (workers, endpoints the head uses, how the link is made)."""
    with NetnsLab(2) as lab:
        how = lab.shape(link)
        workers = [
            RpcWorker(
                runtime,
                lab.addr(i),
                50052,
                threads=1,
                expose=True,
                prefix=lab.prefix(i),
                log_file=tmp / f"w{i}.log",
            )
            for i in range(2)
        ]
        with contextlib.ExitStack() as stack:
            for w in workers:
                stack.enter_context(w)
            if how == "netem" or link.delay_ms < 0.5:
                # netem did both; or the delay is below what a Python relay adds by itself (the
                # veth's own, ~0.05 ms, stands in for a switch)
                yield workers, [w.endpoint for w in workers], how
            else:  # the kernel has no netem: the latency comes from a relay in front of each worker
                proxies = [
                    stack.enter_context(DelayProxy((w.host, w.port), delay_ms=link.delay_ms)) for w in workers
                ]
                yield workers, [p.endpoint for p in proxies], "tbf + delay relay"


def _greedy(runtime: Runtime, model: Path, cfg: RuntimeConfig, log: Path) -> list[int]:
    with ServerProcess(runtime, str(model), cfg, log, verbose=True) as srv:
        body = {"prompt": "the time of the world", "n_predict": 24, "temperature": 0, "cache_prompt": False,
                "return_tokens": True}  # fmt: skip
        r = srv.client.post("/completion", json=body)
        r.raise_for_status()
        return [int(t) for t in r.json()["tokens"]]


@needs_netns
def test_split_generates_what_one_host_does(runtime: Runtime, model: Path, tmp_path: Path) -> None:
    local = _greedy(runtime, model, RuntimeConfig(threads=2, ctx=256), tmp_path / "local.log")
    with _fleet(runtime, tmp_path, FAST) as (_w, eps, _how):
        split_cfg = RuntimeConfig(threads=2, ctx=256, ngl=3, rpc=tuple(eps), tensor_split=(1, 1))
        split = _greedy(runtime, model, split_cfg, tmp_path / "split.log")
        log = (tmp_path / "split.log").read_text()
    assert len(local) == 24 and split == local
    # llama-server really put layers on both RPC devices (its buffer lines name them)
    assert all(f"RPC0[{e}]" in log or f"RPC1[{e}]" in log or e in log for e in eps), log[-2000:]
    assert "model buffer size" in log and "RPC" in log


@needs_netns
def test_local_vs_split_at_two_links_is_measured_and_stored(
    runtime: Runtime, model: Path, tmp_path: Path
) -> None:
    st = Store(tmp_path / "db.sqlite")
    st.migrate()
    host = probe_host()
    info = read_model_info(model)
    test = BenchTest(n_prompt=0, n_gen=32, reps=3)
    local = bench_split(st, runtime, host, info, RuntimeConfig(threads=2), test, link="none")
    speeds = {}
    for link in (FAST, SLOW):
        with _fleet(runtime, tmp_path, link) as (_w, eps, how):
            cfg = RuntimeConfig(threads=2, ngl=99, rpc=tuple(eps), tensor_split=(1, 1))
            row = bench_split(st, runtime, host, info, cfg, test, link=f"{link.label()} [{how}]",
                              workers=[f"{e}@{host.fingerprint}" for e in eps])  # fmt: skip
            assert row.ok, row.cause
            speeds[link.name] = row.avg_ts
    assert local.ok and local.avg_ts
    assert speeds["slow"] < speeds["fast"]  # 2 ms each way per call costs more than 0.1 ms
    rows = list(st.rows(STAGE))
    assert len(rows) == 3 and {r.record["mode"] for r in rows} == {"local", "split"}
    assert all(r.provenance.host_fingerprint == host.fingerprint for r in rows)
    links = sorted(r.params["link"] for r in rows if r.record["mode"] == "split")
    assert len(links) == 2 and links[0].startswith("fast (1gbit") and links[1].startswith("slow (50mbit")
    assert all(r.record["workers"] for r in rows if r.record["mode"] == "split")


def test_a_worker_dying_mid_run_is_a_stored_failure(runtime: Runtime, model: Path, tmp_path: Path) -> None:
    """Killed on loopback, the worker's socket closes and llama-bench dies at once (SIGPIPE, or its
    RPC assert); the stored cause names the worker that went away."""
    st = Store(tmp_path / "db.sqlite")
    st.migrate()
    host, info = probe_host(), read_model_info(model)
    with (
        RpcWorker(runtime, "127.0.0.1", 23301, threads=1) as a,
        RpcWorker(runtime, "127.0.0.1", 23302, threads=1) as b,
    ):
        cfg = RuntimeConfig(threads=2, ngl=99, rpc=(a.endpoint, b.endpoint), tensor_split=(1, 1))
        killer = threading.Timer(3.0, b.kill)
        killer.start()
        t0 = time.monotonic()
        long_run = BenchTest(n_prompt=0, n_gen=4000, reps=50)
        row = bench_split(st, runtime, host, info, cfg, long_run, link="loopback", timeout_s=300)
        killer.join()
    assert not row.ok and f"RPC worker {b.endpoint} unreachable" in row.cause and "crashed" in row.cause
    assert time.monotonic() - t0 < 60  # the head ended by itself, long before our timeout
    stored = list(st.rows(STAGE))
    assert len(stored) == 1 and stored[0].status == "failed" and stored[0].record["cause"] == row.cause


@needs_netns
def test_a_worker_gone_silent_ends_at_our_timeout(runtime: Runtime, model: Path, tmp_path: Path) -> None:
    """Killed inside its namespace, the worker left llama-bench blocked (measured here: no abort in
    60 s), as a board losing power would: our timeout ends the head and the failure is stored."""
    st = Store(tmp_path / "db.sqlite")
    st.migrate()
    host, info = probe_host(), read_model_info(model)
    with _fleet(runtime, tmp_path, FAST) as (workers, eps, _how):
        cfg = RuntimeConfig(threads=2, ngl=99, rpc=tuple(eps), tensor_split=(1, 1))
        killer = threading.Timer(3.0, workers[1].kill)
        killer.start()
        t0 = time.monotonic()
        long_run = BenchTest(n_prompt=0, n_gen=4000, reps=50)
        row = bench_split(st, runtime, host, info, cfg, long_run, link="fast", timeout_s=20)
        killer.join()
    assert not row.ok and f"RPC worker {eps[1]} unreachable" in row.cause
    assert time.monotonic() - t0 < 60  # ended: by llama.cpp's abort or by our timeout, never a hang
    stored = list(st.rows(STAGE))
    assert len(stored) == 1 and stored[0].status == "failed" and stored[0].record["cause"] == row.cause


def test_a_worker_refuses_a_non_loopback_bind_without_consent(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="no authentication"):
        RpcWorker(runtime, "10.231.9.2", 50052)
    r = cli(monkeypatch, "worker", "--host", "192.168.1.50")
    assert "no authentication" in r.error_line()
    r = cli(monkeypatch, "worker", "--host", "0.0.0.0")
    assert "no authentication" in r.error_line()


def test_sweep_splits_over_workers_and_stores_them(
    runtime: Runtime, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sweep --rpc`: every point runs with its layers on the workers; the rows say which."""
    with (
        RpcWorker(runtime, "127.0.0.1", 23291, threads=1) as a,
        RpcWorker(runtime, "127.0.0.1", 23292, threads=1) as b,
    ):
        eps = f"{a.endpoint},{b.endpoint}"
        args = ["--threads", "1", "--kv", "f16", "--fa", "off", "--search", "grid", "--no-server-check"]
        args += ["-p", "16", "-n", "4", "--rpc", eps, "--tensor-split", "1,1", "--json"]
        r = cli(monkeypatch, "sweep", str(model), *args)
    assert r.code == 0, r.stderr
    with Store(load_config().store_path) as st:
        rows = list(st.rows("throughput"))
    assert rows and all(row.params["runtime"]["rpc"] == [a.endpoint, b.endpoint] for row in rows)
    assert all(
        row.params["runtime"]["ngl"] == -1 and row.params["runtime"]["tensor_split"] == [1, 1] for row in rows
    )
    assert all(row.status == "ok" for row in rows), [row.record.get("cause") for row in rows]
    # a split measurement is another candidate, never this host's own speed in its decisions
    sha = rows[0].provenance.model_sha256
    with Store(load_config().store_path) as st:
        assert stored_results(st, sha) == [] and len(stored_results(st, sha, split=True)) == len(rows)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tensor-split", "1,1"], "only with --rpc"),
        (["--rpc", "10.0.0.2"], "host:port"),
        (["--rpc", "10.0.0.2:99999"], "host:port"),
        (["--rpc", "10.0.0.2:50052,10.0.0.3:50052", "--tensor-split", "1"], "one per --rpc worker"),
        (["--rpc", "10.0.0.2:50052", "--tensor-split", "nan"], "finite"),
    ],
)
def test_sweep_rpc_options_are_checked_first(
    model: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    r = cli(monkeypatch, "sweep", str(model), "--no-wait", *args)
    assert needle in r.error_line()


def test_context_probe_runs_split_over_workers(
    runtime: Runtime, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`context --rpc`: the stable-context probe loads and fills llama-server with the layers on the
    workers; the stored trial's config names them."""
    with (
        RpcWorker(runtime, "127.0.0.1", 23331, threads=1) as a,
        RpcWorker(runtime, "127.0.0.1", 23332, threads=1) as b,
    ):
        args = [
            "--ctx",
            "512",
            "--threads",
            "1",
            "--rpc",
            f"{a.endpoint},{b.endpoint}",
            "--tensor-split",
            "1,1",
        ]
        r = cli(monkeypatch, "context", str(model), *args, "--json")
    assert r.code == 0, r.stderr
    with Store(load_config().store_path) as st:
        rows = list(st.rows("context"))
    assert len(rows) == 1 and rows[0].record["ok"], rows[0].record.get("cause") if rows else None
    assert rows[0].params["runtime"]["rpc"] == [a.endpoint, b.endpoint]


def test_a_split_candidate_is_routed_and_served_with_its_workers(
    runtime: Runtime, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sweep --rpc → route: the split is its own candidate with a serving spec naming its workers;
    the gateway starts llama-server with them and serves a completion under the split's name."""
    with (
        RpcWorker(runtime, "127.0.0.1", 23341, threads=1, log_file=tmp_path / "w0.log") as a,
        RpcWorker(runtime, "127.0.0.1", 23342, threads=1, log_file=tmp_path / "w1.log") as b,
    ):
        eps = (a.endpoint, b.endpoint)
        args = ["--threads", "1", "--kv", "f16", "--fa", "off", "--search", "grid", "--no-server-check"]
        args += ["-p", "16", "-n", "4", "--rpc", ",".join(eps), "--tensor-split", "1,1"]
        assert cli(monkeypatch, "sweep", str(model), *args).code == 0
        r = cli(monkeypatch, "route", "--out", str(tmp_path / "routing"), "--json")
        assert r.code == 0, r.stderr
        routing = load_routing(tmp_path / "routing" / "routing.json")
        name = next(n for n in routing.serving if "@" in n)
        assert name.endswith("@" + "+".join(eps))
        spec = routing.serving[name]
        assert spec.runtime.rpc == eps and spec.runtime.tensor_split == (1, 1) and spec.tg_ts
        with Store(load_config().store_path) as st:
            tbl = table_from_routing(routing, tmp_path / "routing.json", load_config(), st, probe_host())
        before = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
        with gateway(tbl, runtime, tmp_path) as (url, _gw):
            body = {"model": name, "prompt": "the time of the world", "max_tokens": 8, "temperature": 0}
            resp = httpx.post(f"{url}/v1/completions", json=body, timeout=120)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-edgebench-model"] == name and resp.json()["choices"][0]["text"]
            # llama-server holds its workers' connections while it runs: both are open now
            during = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    for old, now in zip(before, during, strict=True):
        new = now[len(old) :]
        assert new.count("Accepted client connection") > new.count("Client connection closed"), new
