"""The gateway without llama.cpp: routing decisions, security limits, core pinning, predictions."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from edgebench.config import load_config
from edgebench.errors import ConfigError
from edgebench.host.probe import probe_host
from edgebench.serve.predict import Speed
from edgebench.serve.route import RouteError, classify, resolve
from edgebench.serve.setup import api_key, check_bind, pinned
from edgebench.serve.table import Tier
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import CHATML, gateway, spec, table

FIXTURES = Path(__file__).parent / "fixtures" / "sysfs"
KEY = "k" * 32


def _tiers() -> dict[str, Tier]:
    return {
        "fast_chat": Tier(name="fast_chat", primary="a", backup="b", why="composite"),
        "tool_calling": Tier(name="tool_calling", primary="b", backup=None, why="tool_call"),
        "code": Tier(name="code", primary=None, backup=None, why="none qualifies", closest="b"),
        "deep_analysis": Tier(name="deep_analysis", primary="b", backup="a", why="weighted"),
    }


def _table(tmp_path: Path, **kw: object):  # type: ignore[no-untyped-def]
    p = tmp_path / "m.gguf"
    p.write_bytes(b"x")
    return table(spec(p, "a"), spec(p, "b"), tiers=_tiers(), **kw)  # type: ignore[arg-type]


def _never(chars: int, max_tokens: int | None) -> float | None:
    return None


def test_auto_classifier_says_why() -> None:
    uc, why = classify(
        {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]}, 30, _never
    )
    assert (uc, why) == ("tool_calling", "1 tool(s) given")
    uc, why = classify({"messages": [{"role": "user", "content": "fix this python bug"}]}, 30, _never)
    assert uc == "code" and "python" in why
    uc, _ = classify({"messages": [{"role": "user", "content": "Why is the sky blue?"}]}, 30, _never)
    assert uc == "reasoning"
    uc, _ = classify({"messages": [{"role": "user", "content": "Who wrote Hamlet?"}]}, 30, _never)
    assert uc == "factual"
    uc, why = classify({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}, 30, _never)
    assert uc == "fast_chat" and "max_tokens 50" in why
    # the latency budget: predicted 45 s on the interactive tier > 30 s → batch
    uc, why = classify({"prompt": "hello", "max_tokens": 900}, 30, lambda c, m: 45.0)
    assert uc == "deep_analysis" and "45.0 s" in why


def test_resolve_tiers_auto_closest_and_benchmark(tmp_path: Path) -> None:
    t = _table(tmp_path)
    d = resolve({"model": "interactive"}, {}, t, _never)
    assert (d.model, d.backup, d.route) == ("a", "b", "tier:fast_chat")
    d = resolve(
        {"model": "auto", "messages": [{"role": "user", "content": "write python code"}]}, {}, t, _never
    )
    assert d.model == "b" and d.route == "auto:code" and "closest" in d.reason
    d = resolve({"model": "a", "edgebench_benchmark": True}, {}, t, _never)
    assert d.benchmark and d.backup is None and d.route == "benchmark"
    d = resolve({"model": "b"}, {"x-edgebench-benchmark": "1"}, t, _never)
    assert d.benchmark
    with pytest.raises(RouteError, match="a served model is needed"):
        resolve({"model": "interactive"}, {"x-edgebench-benchmark": "1"}, t, _never)
    with pytest.raises(RouteError, match="not served here") as e:
        resolve({"model": "nope"}, {}, t, _never)
    assert e.value.status == 404
    with pytest.raises(RouteError, match="'model' is required"):
        resolve({}, {}, t, _never)


def test_non_loopback_bind_needs_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEBENCH_API_KEY", raising=False)
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ConfigError, match="no API key"):
            check_bind(host, None)
    check_bind("0.0.0.0", KEY)
    with pytest.raises(ConfigError, match="shorter than 16"):
        check_bind("0.0.0.0", "short")
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    assert api_key(None, f) == KEY
    monkeypatch.setenv("EDGEBENCH_API_KEY", "e" * 20)
    assert api_key(None, f) == "e" * 20
    assert api_key("c" * 20, f) == "c" * 20
    (tmp_path / "empty").write_text("\n")
    monkeypatch.delenv("EDGEBENCH_API_KEY")
    with pytest.raises(ConfigError, match="empty"):
        api_key(None, tmp_path / "empty")


def test_serve_command_refuses_public_bind_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_inproc import run

    monkeypatch.delenv("EDGEBENCH_API_KEY", raising=False)
    line = run(monkeypatch, "serve", "--host", "0.0.0.0", "--port", "0").error_line()
    assert line.startswith("edgebench: error: serve --host 0.0.0.0: not a loopback address and no API key")


def test_keys_body_limit_and_no_cors(tmp_path: Path) -> None:
    with (
        gateway(_table(tmp_path), None, tmp_path, api_key=KEY, max_body_bytes=2048) as (url, _),
        httpx.Client(base_url=url) as c,
    ):
        assert c.get("/health").status_code == 200  # liveness needs no key
        assert c.get("/v1/models").status_code == 401
        for bad in ("Bearer " + "k" * 31, "Bearer " + "k" * 33, "Bearer " + KEY.upper(), KEY, "Basic " + KEY):
            r = c.get("/v1/models", headers={"Authorization": bad})
            assert r.status_code == 401, bad
            assert r.json()["error"]["type"] == "unauthorized"
        ok = {"Authorization": f"Bearer {KEY}"}
        r = c.get("/v1/models", headers={**ok, "Origin": "http://evil.example"})
        assert r.status_code == 200
        assert "access-control-allow-origin" not in r.headers  # no CORS unless configured
        ids = {m["id"]: m for m in r.json()["data"]}
        assert ids["a"]["state"] == "stopped" and ids["fast_chat"]["kind"] == "tier" and "auto" in ids
        big = b'{"model": "a", "prompt": "' + b"x" * 4000 + b'"}'
        r = c.post("/v1/completions", content=big, headers=ok)
        assert r.status_code == 413
        # no Content-Length (chunked): counted as it arrives
        r = c.post("/v1/completions", content=iter([big[:1500], big[1500:]]), headers=ok)
        assert r.status_code == 413
        r = c.post("/v1/completions", content=b"{not json", headers=ok)
        assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"model": "zzz", "prompt": "x"}, headers=ok)
        assert r.status_code == 404 and "not served here" in r.json()["error"]["message"]
        assert c.get("/metrics", headers=ok).status_code == 200


def test_cors_only_when_configured(tmp_path: Path) -> None:
    with (
        gateway(_table(tmp_path), None, tmp_path, cors_origins=("http://ui.local",)) as (url, _),
        httpx.Client(base_url=url) as c,
    ):
        r = c.get("/v1/models", headers={"Origin": "http://ui.local"})
        assert r.headers["access-control-allow-origin"] == "http://ui.local"
        r = c.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_core_pinning_per_tier_on_rk3588(tmp_path: Path) -> None:
    host = probe_host(FIXTURES / "rk3588")
    assert host.little_cpus and host.big_cpus
    cfg = load_config()
    p = write_tiny_llama(tmp_path / "t.gguf", chat_template=CHATML)
    s = table(spec(p, "t")).models["t"]
    inter = pinned(s, ["fast_chat"], host, cfg)
    back = pinned(s, ["background"], host, cfg)
    assert inter is not None and back is not None
    assert inter.cpus == tuple(host.big_cpus) and back.cpus == tuple(host.little_cpus)
    # a CPU set the sweep measured on is kept
    measured = s.model_copy(
        update={
            "spec": s.spec.model_copy(update={"runtime": s.spec.runtime.model_copy(update={"cpus": (0, 1)})})
        }
    )  # type: ignore[union-attr]
    assert pinned(measured, ["background"], host, cfg).cpus == (0, 1)  # type: ignore[union-attr]


def test_prediction_refits_from_served_timings() -> None:
    sp = Speed(pp_ts=100.0, tg_ts=10.0, load_s=2.0)
    p = sp.predict(400, 20, cold=True)
    assert p is not None and p.seconds == pytest.approx(100 / 100 + 20 / 10 + 2.0)
    assert sp.predict(400, 20, cold=False).seconds == pytest.approx(3.0)  # type: ignore[union-attr]
    for _ in range(20):  # the board got 2x slower at decoding
        sp.refit(
            {"prompt_per_second": 100.0, "prompt_n": 64, "predicted_per_second": 5.0, "predicted_n": 20},
            400,
            100,
        )
    assert sp.tg_ts == pytest.approx(5.0, rel=0.01) and sp.source == "refit"
    assert Speed(None, None, None).predict(10, 10, cold=False) is None


def test_serve_config_section(tmp_path: Path) -> None:
    (tmp_path / "edgebench.toml").write_text(
        '[serve]\nhost = "0.0.0.0"\napi_key_file = "key.txt"\nbudget_mib = 3000\n'
        '[serve.tiers.interactive]\nttl_s = 60\ncpus = "big"\n'
        '[[backends]]\nname = "npu"\nurl = "http://127.0.0.1:8081"\nmax_ctx = 4096\nmemory_mib = 1500\n'
    )
    cfg = load_config(tmp_path / "edgebench.toml")
    assert cfg.serve.api_key_file == tmp_path / "key.txt"
    assert cfg.serve.tiers["interactive"].ttl_s == 60 and cfg.backends[0].memory_mib == 1500
    (tmp_path / "bad.toml").write_text("[serve]\nqueue_depth = 0\n")
    with pytest.raises(ConfigError, match=r"serve\.queue_depth"):
        load_config(tmp_path / "bad.toml")
