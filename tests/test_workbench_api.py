"""The workbench's own routes and checks, without a browser: runtime controls as a hostile page
or a careless user would send them, measured-vs-predicted labels, the page shell and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from edgebench.measure import throughput
from edgebench.runtime.flags import RuntimeConfig
from edgebench.serve.workbench import ControlError, measured_speed, runtime_with
from edgebench.store import Provenance, Store
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import gateway, spec, table
from test_decide import make_throughput

BASE = RuntimeConfig(threads=2, ctx=1024, cache_type_k="f16", cache_type_v="f16", flash_attn="auto")
CPUS = {0, 1}


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"extra": ["--rpc", "10.0.0.1:50052"]}, "unknown control(s) extra"),  # no raw flags
        ({"model_path": "/etc/passwd"}, "unknown control"),
        ({"\x1b[2J" + "x" * 5000: 1}, "unknown control"),  # a hostile key: one short printable line
        ({"cache_type_k": "q3_k"}, "unknown KV cache type"),
        ({"cache_type_v": "Q4_0;rm -rf /"}, "unknown KV cache type"),
        ({"cache_type_k": "q4\n" * 3000}, "unknown KV cache type"),
        ({"threads": 0}, "threads"),
        ({"threads": "two"}, "threads"),
        ({"threads": 10_000}, "threads"),
        ({"ctx": -1}, "ctx"),
        ({"flash_attn": "maybe"}, "flash_attn"),
        ({"cpus": [7]}, "not on this host"),
        ({"cpus": [-1]}, "CPU list"),
        ({"cpus": []}, "CPU list"),
        ({"cpus": [0], "threads": 2}, "2 threads on 1 CPU"),
        ({"cache_type_v": "q4_0", "flash_attn": "off"}, "needs flash attention"),
        ({"reasoning_budget": -5}, "reasoning_budget"),
    ],
)
def test_bad_controls_are_refused_with_their_reason(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(ControlError, match=r"^runtime: ") as exc:
        runtime_with(BASE, overrides, CPUS)
    msg = str(exc.value)
    assert says in msg and len(msg) < 400 and "\x1b" not in msg and "\n" not in msg


def test_good_controls_change_only_what_they_name() -> None:
    cfg = runtime_with(BASE, {"ctx": 2048, "cache_type_v": "q8_0", "flash_attn": "on", "cpus": [1, 0]}, CPUS)
    assert (cfg.ctx, cfg.cache_type_v, cfg.flash_attn, cfg.cpus) == (2048, "q8_0", "on", (0, 1))
    assert cfg.threads == BASE.threads and cfg.cache_type_k == "f16" and cfg.batch == BASE.batch
    assert runtime_with(BASE, {}, CPUS) == BASE


def _put(store: Store, host: str, **kw: Any) -> None:
    t = make_throughput("m", **kw)
    prov = Provenance(build_id="b", host_fingerprint=host, model_sha256="sha-m")
    store.put(throughput.STAGE, prov, {"test": t.test, "cfg": t.config.key(), "host": host}, t)


def test_measured_speed_matches_the_config_on_this_host_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    _put(store, "here", kind="tg", mean=30.0, threads=4, kv="q4_0")
    _put(store, "here", kind="pp", mean=300.0, threads=4, kv="q4_0")
    _put(store, "here", kind="tg", mean=99.0, threads=2, kv="q4_0")  # other threads
    _put(store, "here", kind="tg", mean=88.0, threads=4, kv="q8_0")  # other KV
    _put(store, "here", kind="tg", mean=77.0, threads=4, kv="q4_0", depth=1024)  # not depth 0
    _put(store, "there", kind="tg", mean=66.0, threads=8, kv="f16")  # another board
    _put(store, "here", kind="tg", mean=None, threads=8, kv="f16", status="oom-killed")
    want = make_throughput("m", "tg", 1.0, threads=4, kv="q4_0").config
    got = measured_speed(store, "sha-m", "here", want)
    assert got["tg"]["source"] == "measured" and got["tg"]["ts"] == 30.0
    assert got["tg"]["ci"] == [29.4, 30.6]
    assert got["pp"]["ts"] == 300.0
    other = want.model_copy(update={"threads": 8, "cache_type_k": "f16", "cache_type_v": "f16"})
    assert measured_speed(store, "sha-m", "here", other) == {
        "pp": {"source": "not measured"},
        "tg": {"source": "not measured"},
    }  # the other board's and the OOM-killed rows are never this host's measurement


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("wbapi") / "tiny.gguf", ctx_train=4096)


def test_consequence_labels_memory_predicted_until_measured(tiny: Path, tmp_path: Path) -> None:
    s = spec(tiny, "tiny", ctx=1024, rss=321.0)
    with gateway(table(s), None, tmp_path) as (url, _):
        preset = httpx.post(f"{url}/workbench/api/consequence", json={"model": "tiny"}).json()
        assert preset["memory"] == {"mib": 321.0, "source": "measured", "detail": "context probe"}
        other = httpx.post(
            f"{url}/workbench/api/consequence", json={"model": "tiny", "runtime": {"ctx": 4096}}
        ).json()
        assert other["memory"]["source"] == "predicted" and other["memory"]["mib"] > 0
        assert "planner" in other["memory"]["detail"] and other["runtime"]["ctx"] == 4096
        assert other["speed"]["tg"] == {"source": "not measured"}  # no store attached
        bad = httpx.post(f"{url}/workbench/api/consequence", json={"model": "tiny", "runtime": {"ctx": "x"}})
        assert bad.status_code == 400 and "ctx" in bad.json()["error"]["message"]
        assert httpx.post(f"{url}/workbench/api/consequence", json={"model": "nope"}).status_code == 404
        assert httpx.post(f"{url}/workbench/api/consequence", content=b"{").status_code == 400
        # a load with a control llama.cpp cannot use is refused before anything starts
        r = httpx.post(f"{url}/admin/load", json={"model": "tiny", "runtime": {"cache_type_k": "q3_k"}})
        assert r.status_code == 400 and r.json()["error"]["type"] == "bad_control"
        r = httpx.post(f"{url}/admin/load", json={"model": "tiny", "runtime": ["ctx", 1]})
        assert r.status_code == 400


def test_a_load_the_budget_cannot_check_is_refused(tiny: Path, tmp_path: Path) -> None:
    """A context past the model's trained one has no plan: with a memory budget, no load."""
    with gateway(table(spec(tiny, "tiny")), None, tmp_path, budget_mib=4000.0) as (url, _):
        r = httpx.post(f"{url}/admin/load", json={"model": "tiny", "runtime": {"ctx": 1_000_000}})
        assert r.status_code == 400 and "trained context" in r.json()["error"]["message"]
        c = httpx.post(
            f"{url}/workbench/api/consequence", json={"model": "tiny", "runtime": {"ctx": 1_000_000}}
        )
        assert c.json()["memory"]["source"] == "unknown"


def test_the_page_shell_is_open_but_its_data_needs_the_key(tiny: Path, tmp_path: Path) -> None:
    with gateway(table(spec(tiny, "tiny")), None, tmp_path, api_key="s3cret") as (url, _):
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "edgebench" in page.text and "workbench.js" in page.text
        js = httpx.get(f"{url}/static/workbench/workbench.js")
        assert js.status_code == 200 and "DOMPurify.sanitize" in js.text
        assert httpx.get(f"{url}/static/workbench/vendor/purify.min.js").status_code == 200
        for escape in ("/static/workbench/../app.py", "/static/workbench/%2e%2e/%2e%2e/serve/app.py"):
            r = httpx.get(f"{url}{escape}")  # the open prefix never serves a file outside static/
            assert r.status_code in (401, 404) and "import" not in r.text, escape
        for path in ("/workbench/api/models", "/workbench/results", "/v1/models"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
        auth = {"authorization": "Bearer s3cret"}
        doc = httpx.get(f"{url}/workbench/api/models", headers=auth).json()
        assert doc["models"][0]["id"] == "tiny" and doc["models"][0]["preset"]["ctx"] == 1024
        report = httpx.get(f"{url}/workbench/results", headers=auth)
        assert "script-src" not in report.headers["content-security-policy"]  # default-src 'none': no script
        assert "default-src 'none'" in report.headers["content-security-policy"]


def test_the_live_report_is_drawn_from_this_hosts_store(tiny: Path, tmp_path: Path) -> None:
    from edgebench.config import load_config
    from edgebench.host.probe import probe_host
    from edgebench.serve.app import GatewaySettings, build_app
    from edgebench.serve.workbench import Results
    from serve_helpers import running

    host = probe_host()
    store = Store(tmp_path / "s.sqlite")
    results = Results(cfg=load_config(), store_path=store.path, host=host)
    app, _ = build_app(table(spec(tiny, "tiny")), None, GatewaySettings(log_dir=tmp_path), results=results)
    with running(app) as url:
        first = httpx.get(f"{url}/workbench/results", timeout=120)
        assert first.status_code == 200 and "default-src 'none'" in first.headers["content-security-policy"]
        assert "Thread scaling" in first.text and host.fingerprint in first.text
        assert "<script" not in first.text.lower()
    # drawn once per store state: the same object back while nothing changed, a new one after a row
    from edgebench.serve.workbench import _render_report

    last = _render_report(results, None)
    assert _render_report(results, last) is last
    _put(store, host.fingerprint, kind="tg", mean=30.0)
    assert _render_report(results, last) is not last


@pytest.mark.llama
def test_edgebench_serve_shows_the_page_with_its_store(tiny: Path, runtime: Any, tmp_path: Path) -> None:
    """The command users run: `edgebench serve`, then the URL it prints."""
    import socket
    import subprocess
    import sys
    import time

    cli = [sys.executable, "-m", "edgebench"]
    subprocess.run([*cli, "models", "add", str(tiny)], check=True, capture_output=True, timeout=120)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*cli, "serve", "--port", str(port)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"{url}/")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "edgebench serve did not start"
                time.sleep(0.2)
        assert page.status_code == 200 and "workbench.js" in page.text
        models = httpx.get(f"{url}/workbench/api/models").json()["models"]
        assert len(models) == 1 and models[0]["kind"] == "llama-server" and models[0]["preset"]
        assert httpx.get(f"{url}/workbench/results", timeout=120).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert f"workbench: http://127.0.0.1:{port}/" in err.splitlines()


def test_a_board_pushes_its_bundle_to_the_gateway(tiny: Path, tmp_path: Path) -> None:
    """POST /admin/results merges a bundle into the gateway's store — only with an API key (even on
    loopback); twice adds nothing; a broken bundle is a 400 naming the cause, nothing merged."""
    from edgebench.config import load_config
    from edgebench.host.probe import probe_host
    from edgebench.pool import export_bundle
    from edgebench.serve.app import GatewaySettings, build_app
    from edgebench.serve.workbench import Results
    from serve_helpers import running

    board = Store(tmp_path / "board.sqlite")
    board.migrate()
    _put(board, "board-b", kind="tg", mean=12.0)
    bundle = tmp_path / "b.jsonl"
    export_bundle(board, bundle)
    body = bundle.read_bytes()
    store = Store(tmp_path / "gw.sqlite")
    store.migrate()
    results = Results(cfg=load_config(), store_path=store.path, host=probe_host())
    keyless, _ = build_app(
        table(spec(tiny, "tiny")), None, GatewaySettings(log_dir=tmp_path), results=results
    )
    with running(keyless) as url:
        r = httpx.post(f"{url}/admin/results", content=body)
        assert r.status_code == 403 and "API key" in r.json()["error"]["message"]
    keyed, _ = build_app(
        table(spec(tiny, "tiny")), None, GatewaySettings(log_dir=tmp_path, api_key="k3y"), results=results
    )
    auth = {"authorization": "Bearer k3y"}
    with running(keyed) as url:
        assert httpx.post(f"{url}/admin/results", content=body).status_code == 401
        first = httpx.post(f"{url}/admin/results", content=body, headers=auth, timeout=60)
        assert first.status_code == 200 and first.json()["added"] == 1
        again = httpx.post(f"{url}/admin/results", content=body, headers=auth, timeout=60).json()
        assert again["added"] == 0 and again["same"] == 1
        bad = httpx.post(f"{url}/admin/results", content=body[:-30], headers=auth, timeout=60)
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
        assert "/tmp" not in bad.json()["error"]["message"]  # no server path in the reply
    assert store.count() == 1
