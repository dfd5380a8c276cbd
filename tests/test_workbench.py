"""The workbench page in a real browser (Debian's chromium driven by Playwright) against a real
gateway: a tiny synthetic model run by the real llama.cpp build, and a clearly named fake upstream
("hostile", a remote backend) whose replies carry script and event-handler payloads, or are cut.

Screenshots go to test-artifacts/ (or $EDGEBENCH_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api  # a dev dependency: missing is an error, never a skip

from edgebench.config import BackendConfig
from edgebench.runtime.locate import Runtime
from edgebench.serve.table import Memory, Served, ServeTable, Tier
from edgebench.testing.synth import write_tiny_llama
from serve_helpers import CHATML, gateway, served, spec

pytestmark = pytest.mark.llama

ARTIFACTS = Path(os.environ.get("EDGEBENCH_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
HOSTILE = (
    "<think>the plan: be sneaky</think>Hello **bold** reply.\n\n"
    '<img src=x onerror="window.__pwned = 1">\n\n'
    "<script>window.__pwned = 2</script>\n\n"
    '[a link](javascript:window.__pwned=3) and <a href="javascript:window.__pwned=4">another</a>\n\n'
    '<svg><animate onbegin="window.__pwned=5" attributeName="x"/></svg>\n\n'
    "```python\nprint('code')\n```\n\n| col a | col b |\n|---|---|\n| 1 | 2 |\n"
)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # make test installs it: a missing browser is a failure, never a skip
        pytest.fail("chromium not found: `make test` installs Debian's chromium (apt-get install chromium)")
    return path


class _Hostile(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible upstream: streams HOSTILE, or cuts the stream when asked to."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            doc = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "model": "hostile"}
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        pieces = [HOSTILE[i : i + 40] for i in range(0, len(HOSTILE), 40)]
        if "cut" in prompt:  # two pieces, then the connection drops: no [DONE], no last chunk
            for p in pieces[:2]:
                self._chunk(event({"content": p}))
            self.close_connection = True
            return
        for p in pieces:
            self._chunk(event({"content": p}))
        self._chunk(event({}, "stop"))
        self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(
        tmp_path_factory.mktemp("wb") / "tiny-chat.gguf", chat_template=CHATML, ctx_train=4096
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


def _table(tiny: Path, hostile: str, broken: Path | None = None, mib: float = 50.0) -> ServeTable:
    remote = BackendConfig(name="hostile", url=hostile, model="hostile")
    models = {
        "tiny": served(spec(tiny, "tiny", ctx=1024), mib=mib),
        "hostile": Served(name="hostile", remote=remote, memory=Memory(mib=0, source="unknown")),
    }
    if broken is not None:
        models["broken"] = served(spec(broken, "broken", ctx=1024), mib=0.0)
    tiers = {"fast_chat": Tier(name="fast_chat", primary="tiny", backup=None, why="the only chat model")}
    return ServeTable(models=models, tiers=tiers, source="test table")


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _has(selector: str, text: str) -> str:
    """A page function: true once `selector`'s text contains `text`."""
    return f"(document.querySelector({json.dumps(selector)})?.textContent || '').includes({json.dumps(text)})"


def _send(page: Any, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function("!document.querySelector('#send').disabled", timeout=60_000)


def test_workbench_load_chat_side_by_side_unload(
    browser: Any, runtime: Runtime, tiny_chat: Path, hostile_url: str, tmp_path: Path
) -> None:
    with gateway(_table(tiny_chat, hostile_url), runtime, tmp_path) as (url, _gw):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url + "/")
        card = '[data-model="tiny"]'
        page.wait_for_selector(f"{card} .state.stopped")
        # the page's own weight on first load (what a board serves a phone over Wi-Fi)
        sizes = page.evaluate(
            "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]"
            ".map(e => [e.name, e.transferSize, e.decodedBodySize])"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "workbench-weight.txt").write_text("\n".join(f"{n} {t} {d}" for n, t, d in sizes))
        kb = sum(t for _, t, _ in sizes) / 1024
        assert any(n.endswith("purify.min.js") for n, _, _ in sizes) and 20 < kb < 80, sizes
        # a control's consequence is shown before loading: memory from the planner, labelled
        page.fill(f"{card} input[name=ctx]", "2048")
        page.wait_for_function(_has(f"{card} .consequence", "predicted"), timeout=30_000)
        conseq = page.inner_text(f"{card} .consequence")
        assert "MiB" in conseq and "decode: not measured" in conseq
        tier = '#tiers tr[data-tier="fast_chat"] .tier-state'
        assert page.inner_text(tier) == "stopped"  # the routing table's tiers, with their model's state
        page.click(f"{card} button.load")
        page.wait_for_selector(f"{card} .state.ready", timeout=120_000)
        page.wait_for_function(_has(tier, "ready"), timeout=10_000)
        assert "ready" in page.inner_text(f"{card} .state")
        # loaded with the page's context, not the preset's: llama-server says so itself
        server = httpx.get(f"{url}/admin/running").json()["running"][0]["url"]
        props = httpx.get(f"{server}/props").json()
        assert props["default_generation_settings"]["n_ctx"] == 2048
        models = httpx.get(f"{url}/workbench/api/models").json()["models"]
        tiny = next(m for m in models if m["id"] == "tiny")
        assert tiny["config"]["ctx"] == 2048 and tiny["preset"]["ctx"] == 1024

        # chat with the real model: a streamed reply, rendered, with its speed and who served it
        page.click('nav [data-tab="chat"]')
        page.select_option('.pane[data-pane="0"] .model-select', "tiny")
        page.fill("#max_tokens", "24")
        _send(page, "Say hello")
        stats = page.inner_text('.pane[data-pane="0"] .msg.assistant .stats')
        assert "TTFT" in stats and "decode" in stats and "t/s" in stats and "served by tiny" in stats, stats
        assert not page.query_selector('.pane[data-pane="0"] .msg.assistant .error')

        # untrusted output: markdown rendered, nothing executes, no handler or javascript: URL survives
        page.select_option('.pane[data-pane="0"] .model-select', "hostile")
        _send(page, "be hostile")
        reply = '.pane[data-pane="0"] .msg.assistant:last-child'
        assert page.inner_text(f"{reply} .md strong") == "bold"
        assert page.query_selector(f"{reply} .md pre code") is not None  # a code block, with copy
        assert page.query_selector(f"{reply} .md pre button.copy") is not None
        assert page.query_selector(f"{reply} .md table") is not None
        assert "be sneaky" in (page.text_content(f"{reply} details.think") or "")  # <think> folded
        assert not page.evaluate(f"document.querySelector('{reply} details.think').open")
        page.wait_for_timeout(300)  # an onerror would have fired by now
        assert page.evaluate("window.__pwned") is None
        html = page.inner_html(".panes")
        assert "onerror" not in html and "<script" not in html and "javascript:" not in html
        assert "onbegin" not in html and not dialogs
        _shot(page, "workbench-desktop-chat.png")

        # side by side: the same prompt to two models at once, both speeds shown
        page.check("#side-by-side")
        page.select_option('.pane[data-pane="0"] .model-select', "tiny")
        page.select_option('.pane[data-pane="1"] .model-select', "hostile")
        _send(page, "Compare")
        for i, who in ((0, "tiny"), (1, "hostile")):
            stats = page.inner_text(f'.pane[data-pane="{i}"] .msg.assistant:last-child .stats')
            assert f"served by {who}" in stats and "TTFT" in stats, stats
        _shot(page, "workbench-desktop-side-by-side.png")

        # a stream cut mid-way is said in words
        page.uncheck("#side-by-side")
        page.select_option('.pane[data-pane="0"] .model-select', "hostile")
        _send(page, "cut it")
        err = page.inner_text('.pane[data-pane="0"] .msg.assistant:last-child .error')
        assert "stream" in err and ("broke" in err or "cut" in err), err

        # history kept in the browser and exportable
        page.click('nav [data-tab="history"]')
        assert len(page.query_selector_all("#history li")) >= 1
        with page.expect_download() as dl:
            page.click("#export")
        doc = json.loads(Path(dl.value.path()).read_text())
        assert any(p["messages"] for c in doc for p in c["panes"])

        # unload changes the state
        page.click('nav [data-tab="models"]')
        page.click(f"{card} button.unload")
        page.wait_for_selector(f"{card} .state.stopped", timeout=60_000)
        _shot(page, "workbench-desktop-models.png")
        page.close()


def test_workbench_fits_a_phone(
    browser: Any, runtime: Runtime, tiny_chat: Path, hostile_url: str, tmp_path: Path
) -> None:
    with gateway(_table(tiny_chat, hostile_url), runtime, tmp_path) as (url, _gw):
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = ctx.new_page()
        page.goto(url + "/")
        page.wait_for_selector('[data-model="tiny"] .state.stopped')
        for tab in ("models", "chat", "history"):
            page.click(f'nav [data-tab="{tab}"]')
            over = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
            assert over <= 1, f"{tab}: {over} px wider than the phone"
        page.click('nav [data-tab="chat"]')
        page.check("#side-by-side")
        boxes = [page.query_selector(f'.pane[data-pane="{i}"]').bounding_box() for i in (0, 1)]
        assert boxes[1]["y"] > boxes[0]["y"]  # stacked, not squeezed side by side
        page.select_option('.pane[data-pane="0"] .model-select', "hostile")
        page.uncheck("#side-by-side")
        _send(page, "hello from a phone")
        assert page.inner_text('.pane[data-pane="0"] .msg.assistant .md strong') == "bold"
        _shot(page, "workbench-phone-chat.png")
        page.click('nav [data-tab="models"]')
        _shot(page, "workbench-phone-models.png")
        ctx.close()


def test_workbench_says_the_gateways_errors(
    browser: Any, runtime: Runtime, tiny_chat: Path, hostile_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # llama-server refuses it: its start fails
    tbl = _table(tiny_chat, hostile_url, broken, mib=50.0)
    with gateway(tbl, runtime, tmp_path, budget_mib=10.0) as (url, _gw):
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector('[data-model="tiny"] .state.stopped')
        page.click('[data-model="tiny"] button.load')  # 50 MiB in a 10 MiB budget: 503
        page.wait_for_selector("#notice:not([hidden])")
        text = page.inner_text("#notice")
        assert "503" in text and "no_room" in text and "tiny" in text, text
        page.click('[data-model="broken"] button.load')
        page.wait_for_function(
            "document.querySelector('#notice').textContent.includes('start_failed')", timeout=60_000
        )
        assert "broken" in page.inner_text("#notice")
        page.wait_for_selector('[data-model="broken"] .state.failed')
        # a control llama.cpp cannot use is refused with its reason, before any load
        page.select_option('[data-model="tiny"] select[name=cache_type_v]', "q4_0")
        page.select_option('[data-model="tiny"] select[name=flash_attn]', "off")
        page.wait_for_function(_has('[data-model="tiny"] .consequence', "flash attention"), timeout=30_000)
        page.close()
