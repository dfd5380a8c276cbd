"""The gateway against the real llama.cpp build: tiny synthetic models (chat template) and gemma.

Each test starts its own gateway on an ephemeral loopback port; the gateway stops its llama-servers
when it shuts down. Timing goals are in bench/gateway.py, not here.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from edgebench.runtime.locate import Runtime
from edgebench.serve.table import Tier
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import CHATML, gateway, spec, table

pytestmark = pytest.mark.llama

LONG = {"max_tokens": 3000, "ignore_eos": True}  # a stream that runs for seconds on the tiny model


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(
        tmp_path_factory.mktemp("serve") / "tiny-chat.gguf", chat_template=CHATML, ctx_train=4096
    )


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("serve") / "broken.gguf"
    p.write_bytes(b"GGUF" + b"\0" * 64)  # a header llama-server refuses: its start fails
    return p


def _msgs(text: str = "hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _running(url: str) -> dict[str, dict[str, object]]:
    r = httpx.get(f"{url}/admin/running")
    return {m["id"]: m for m in r.json()["running"]}


def _states(url: str) -> dict[str, str]:
    return dict(httpx.get(f"{url}/health").json()["models"])


@pytest.fixture
def client_for() -> Iterator[list[openai.OpenAI]]:
    made: list[openai.OpenAI] = []
    yield made
    for c in made:
        c.close()


def _client(url: str, made: list[openai.OpenAI], key: str = "none") -> openai.OpenAI:
    c = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    made.append(c)
    return c


def _sse_stream(url: str, body: dict[str, object], *, on_chunk: object = None) -> tuple[int, str]:
    """POST a streaming request; returns (status, the whole body)."""
    out = []
    with (
        httpx.Client(timeout=120) as c,
        c.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r,
    ):
        for i, chunk in enumerate(r.iter_text()):
            out.append(chunk)
            if callable(on_chunk):
                on_chunk(i)
        return r.status_code, "".join(out)


def test_openai_client_chat_completions_tools_and_state(
    runtime: Runtime, chat_model: Path, gemma_path: Path, tmp_path: Path, client_for: list[openai.OpenAI]
) -> None:
    t = table(spec(chat_model, "tiny", pp=500.0, tg=200.0), spec(gemma_path, "gemma", chat=False))
    with gateway(t, runtime, tmp_path) as (url, _):
        c = _client(url, client_for)
        assert {m.id for m in c.models.list().data} == {"tiny", "gemma"}
        assert _states(url) == {"tiny": "stopped", "gemma": "stopped"}

        raw = c.chat.completions.with_raw_response.create(model="tiny", messages=_msgs(), max_tokens=8)
        r = raw.parse()
        assert raw.headers["x-edgebench-model"] == "tiny" and raw.headers["x-edgebench-route"] == "model"
        assert float(raw.headers["x-edgebench-predicted-s"]) > 0
        assert r.choices[0].message.content is not None and r.usage and r.usage.completion_tokens > 0

        parts = list(c.chat.completions.create(model="tiny", messages=_msgs(), max_tokens=8, stream=True))
        assert parts[-1].choices == [] or parts[-1].choices[0].finish_reason is not None
        assert "".join((p.choices[0].delta.content or "") for p in parts if p.choices)

        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ]
        r = c.chat.completions.create(
            model="tiny", messages=_msgs("weather in Oslo?"), tools=tools, max_tokens=16
        )  # type: ignore[arg-type]
        assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")

        # a base model: completions, whole and streamed
        cr = c.completions.create(model="gemma", prompt="The capital of France is", max_tokens=6)
        assert cr.choices[0].text
        streamed = "".join(
            ch.choices[0].text
            for ch in c.completions.create(model="gemma", prompt="1, 2, 3,", max_tokens=6, stream=True)
            if ch.choices
        )
        assert streamed

        models = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
        assert models["tiny"]["state"] == "ready" and models["tiny"]["context"] == 1024
        assert models["gemma"]["memory_source"] in ("predicted", "measured at load")
        metrics = httpx.get(f"{url}/metrics").text
        assert 'edgebench_requests_total{model="tiny",route="model",status="2xx"}' in metrics
        assert 'edgebench_model_state{model="gemma",state="ready"} 1.0' in metrics

        # admin: unload, then load again
        assert httpx.post(f"{url}/admin/unload", json={"model": "gemma"}).json()["stopped"] is True
        assert _states(url)["gemma"] == "stopped"
        assert httpx.post(f"{url}/admin/load", json={"model": "gemma"}).json()["state"] == "ready"
        assert "gemma" in _running(url)
        assert httpx.post(f"{url}/admin/load", json={"model": "nope"}).status_code == 404


def test_eight_streams_fifty_requests_each(
    runtime: Runtime, chat_model: Path, tmp_path: Path, client_for: list[openai.OpenAI]
) -> None:
    t = table(spec(chat_model, "tiny"))
    errors: list[str] = []
    done, chars = [0], [0]
    lock = threading.Lock()
    with gateway(t, runtime, tmp_path, queue_depth=16) as (url, _):
        c = _client(url, client_for)

        def worker(k: int) -> None:
            for i in range(50):
                try:
                    parts = list(
                        c.chat.completions.create(
                            model="tiny",
                            messages=_msgs(f"stream {k} request {i}"),
                            max_tokens=6,
                            stream=True,
                            extra_body={"ignore_eos": True},
                        )
                    )
                    finish = [
                        p.choices[0].finish_reason for p in parts if p.choices and p.choices[0].finish_reason
                    ]
                    text = "".join((p.choices[0].delta.content or "") for p in parts if p.choices)
                    # the finish reason comes in the last chunk: a cut stream has none. The text of
                    # 6 sampled tokens of a random tiny model may be empty (llama-server holds back
                    # incomplete UTF-8), so only the whole run's text is required to be non-empty.
                    if finish != ["length"]:
                        errors.append(f"{k}/{i}: truncated: finish {finish}, text {text!r}")
                    with lock:
                        done[0] += 1
                        chars[0] += len(text)
                except Exception as exc:
                    errors.append(f"{k}/{i}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert errors == []
    assert done[0] == 400 and chars[0] > 400


def test_sigkill_mid_stream_error_event_then_restart(
    runtime: Runtime, chat_model: Path, tmp_path: Path
) -> None:
    t = table(spec(chat_model, "tiny", ctx=4096))
    with gateway(t, runtime, tmp_path) as (url, gw):
        pid = [0]

        def kill_at(i: int) -> None:
            if i == 3:
                pid[0] = int(_running(url)["tiny"]["pid"])  # type: ignore[call-overload]
                os.kill(pid[0], signal.SIGKILL)

        status, text = _sse_stream(url, {"model": "tiny", "messages": _msgs(), **LONG}, on_chunk=kill_at)
        assert status == 200 and pid[0] > 0
        assert "event: error" in text and text.rstrip().endswith("data: [DONE]")
        err = json.loads(text.split("event: error\ndata: ")[1].split("\n")[0])
        assert err["error"]["type"] == "upstream"
        # the next request is served by a new process
        r = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "tiny", "messages": _msgs(), "max_tokens": 4}
        )
        assert r.status_code == 200
        assert gw.pool.slots["tiny"].starts == 2 and gw.pool.slots["tiny"].restarts == 1
        assert _running(url)["tiny"]["pid"] != pid[0]


def test_memory_budget_evicts_idle_never_busy(runtime: Runtime, chat_model: Path, tmp_path: Path) -> None:
    a, b = spec(chat_model, "a", rss=100, ctx=4096), spec(chat_model, "b", rss=100, ctx=4096)
    body = {"messages": _msgs(), "max_tokens": 4}
    with gateway(table(a, b), runtime, tmp_path, budget_mib=150) as (url, gw), httpx.Client(timeout=120) as c:
        assert c.post(f"{url}/v1/chat/completions", json={"model": "a", **body}).status_code == 200
        assert _states(url) == {"a": "ready", "b": "stopped"}
        # b does not fit beside a: the idle a is evicted
        assert c.post(f"{url}/v1/chat/completions", json={"model": "b", **body}).status_code == 200
        assert _states(url) == {"a": "stopped", "b": "ready"}
        assert 'edgebench_evictions_total{model="a"} 1.0' in c.get(f"{url}/metrics").text

        # b busy with a long stream: a cannot make room, and b's stream is not cut
        result: dict[str, object] = {}
        started = threading.Event()

        def long_b() -> None:
            result["b"] = _sse_stream(
                url, {"model": "b", "messages": _msgs(), **LONG}, on_chunk=lambda i: started.set()
            )

        th = threading.Thread(target=long_b)
        th.start()
        assert started.wait(60)
        r = c.post(f"{url}/v1/chat/completions", json={"model": "a", **body})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert "busy: b 100 MiB" in r.json()["error"]["message"]
        assert _states(url)["b"] == "ready"
        th.join()
        status, text = result["b"]  # type: ignore[misc]
        assert status == 200 and "event: error" not in text and text.rstrip().endswith("data: [DONE]")
        assert gw.pool.slots["b"].starts == 1


def test_start_lock_one_process_for_eight_first_requests(
    runtime: Runtime, chat_model: Path, tmp_path: Path
) -> None:
    with gateway(table(spec(chat_model, "tiny")), runtime, tmp_path) as (url, gw):
        codes: list[int] = []

        def first() -> None:
            with httpx.Client(timeout=120) as c:
                r = c.post(
                    f"{url}/v1/chat/completions", json={"model": "tiny", "messages": _msgs(), "max_tokens": 4}
                )
                codes.append(r.status_code)

        threads = [threading.Thread(target=first) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert codes == [200] * 8
        assert gw.pool.slots["tiny"].starts == 1


def test_idle_unload_after_ttl(runtime: Runtime, chat_model: Path, tmp_path: Path) -> None:
    tiers = {"fast_chat": Tier(name="fast_chat", primary="tiny", backup=None, why="test")}
    t = table(spec(chat_model, "tiny"), tiers=tiers)
    with gateway(t, runtime, tmp_path, tier_ttl_s={"fast_chat": 1.0}, reap_every_s=0.2) as (url, _):
        r = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "interactive", "messages": _msgs(), "max_tokens": 4}
        )
        assert r.status_code == 200 and r.headers["x-edgebench-route"] == "tier:fast_chat"
        assert _states(url)["tiny"] == "ready"
        deadline = time.monotonic() + 15
        while _states(url)["tiny"] != "stopped":
            assert time.monotonic() < deadline, "not unloaded after its ttl"
            time.sleep(0.2)


def test_auto_fallback_and_benchmark_mode(
    runtime: Runtime, chat_model: Path, broken_model: Path, tmp_path: Path
) -> None:
    tiers = {
        "fast_chat": Tier(name="fast_chat", primary="tiny", backup=None, why="test"),
        "tool_calling": Tier(name="tool_calling", primary="broken", backup="tiny", why="test"),
    }
    t = table(spec(chat_model, "tiny"), spec(broken_model, "broken"), tiers=tiers)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with gateway(t, runtime, tmp_path, ready_timeout_s=60) as (url, _), httpx.Client(timeout=120) as c:
        r = c.post(
            f"{url}/v1/chat/completions",
            json={"model": "auto", "messages": _msgs(), "tools": tools, "max_tokens": 8},
        )
        assert r.status_code == 200
        assert r.headers["x-edgebench-model"] == "tiny"
        route = r.headers["x-edgebench-route"]
        assert route.startswith("auto:tool_calling; 1 tool(s) given; fallback from broken: ")
        assert _states(url)["broken"] == "failed"
        assert (
            'edgebench_fallbacks_total{from_model="broken",to_model="tiny"} 1.0'
            in c.get(f"{url}/metrics").text
        )

        r = c.post(
            f"{url}/v1/chat/completions", json={"model": "auto", "messages": _msgs("hi"), "max_tokens": 4}
        )
        assert r.headers["x-edgebench-route"].startswith("auto:fast_chat; short chat")

        # benchmark mode: pinned, never moved to a backup (a failure is the measurement)
        r = c.post(
            f"{url}/v1/chat/completions",
            json={"model": "broken", "messages": _msgs(), "max_tokens": 4},
            headers={"x-edgebench-benchmark": "1"},
        )
        assert r.status_code == 502 and r.json()["error"]["type"] == "start_failed"
        r = c.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": _msgs(), "max_tokens": 4, "edgebench_benchmark": True},
        )
        assert r.status_code == 200 and r.headers["x-edgebench-route"].startswith("benchmark")
        r = c.post(
            f"{url}/v1/chat/completions",
            json={"model": "auto", "messages": _msgs(), "edgebench_benchmark": True},
        )
        assert r.status_code == 400


def test_stall_cut_then_restart(runtime: Runtime, chat_model: Path, tmp_path: Path) -> None:
    t = table(spec(chat_model, "tiny", ctx=4096, pp=500.0, tg=1000.0))  # 1 ms a token: stall = the floor
    with gateway(t, runtime, tmp_path, stall_floor_s=1.5, stall_k=5) as (url, gw):
        stopped = [0]

        def freeze_at(i: int) -> None:
            if i == 3:
                stopped[0] = int(_running(url)["tiny"]["pid"])  # type: ignore[call-overload]
                os.kill(stopped[0], signal.SIGSTOP)

        t0 = time.monotonic()
        status, text = _sse_stream(url, {"model": "tiny", "messages": _msgs(), **LONG}, on_chunk=freeze_at)
        took = time.monotonic() - t0
        assert status == 200 and stopped[0] > 0
        assert "event: error" in text and '"stall"' in text and text.rstrip().endswith("data: [DONE]")
        assert took < 30
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": _msgs(), "max_tokens": 4},
            timeout=120,
        )
        assert r.status_code == 200
        assert gw.pool.slots["tiny"].restarts == 1 and gw.pool.slots["tiny"].starts == 2


def test_queue_full_gets_429(runtime: Runtime, chat_model: Path, tmp_path: Path) -> None:
    t = table(spec(chat_model, "tiny", ctx=4096))
    with gateway(t, runtime, tmp_path, queue_depth=1) as (url, _), httpx.Client(timeout=120) as c:
        c.post(f"{url}/admin/load", json={"model": "tiny"})
        started = threading.Event()
        out: list[tuple[int, str]] = []
        threads = [
            threading.Thread(
                target=lambda: out.append(
                    _sse_stream(
                        url, {"model": "tiny", "messages": _msgs(), **LONG}, on_chunk=lambda i: started.set()
                    )
                )
            )
        ]
        threads[0].start()
        assert started.wait(60)
        queued = threading.Thread(
            target=lambda: out.append(
                _sse_stream(url, {"model": "tiny", "messages": _msgs(), "max_tokens": 4})
            )
        )
        queued.start()
        deadline = time.monotonic() + 10
        while _running(url)["tiny"]["queued"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = c.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": _msgs(), "max_tokens": 4})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        threads[0].join()
        queued.join()
        assert [s for s, _ in out] == [200, 200]
