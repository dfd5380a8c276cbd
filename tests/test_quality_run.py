"""The quality runner end to end: managed llama-server (gemma, completion mode), a second independent
server declared as a remote backend (chat mode), the NPU context limit, timeouts, kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess
from edgebench.testing.synth import write_tiny_llama
from helpers import FIXTURES, edgebench

pytestmark = pytest.mark.llama
SUITES = ["--suite", "mini", "--suite-dir", str(FIXTURES / "suites")]
CLASSES = {
    "correct",
    "wrong",
    "refused",
    "no_call",
    "unparseable",
    "schema_invalid",
    "wrong_function",
    "wrong_args",
    "empty",
    "timeout",
    "template_missing",
}
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _rows(db: Path) -> dict[str, str]:
    if not db.exists():
        return {}
    with sqlite3.connect(db) as c:
        try:
            return dict(c.execute("SELECT key, record FROM results WHERE stage='quality'"))
        except sqlite3.OperationalError:
            return {}


def test_gemma_base_model_runs_in_completion_mode(
    runtime: Runtime, gemma_path: Path, _data_home: Path
) -> None:
    r = edgebench("quality", str(gemma_path), *SUITES, "-k", "1", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    (sc,) = json.loads(r.stdout)["scores"]
    assert sc["mode"] == "completion" and sc["runs"] == 3 * 2 * 2  # items × prompts × (greedy + 1)
    assert {c["category"] for c in sc["categories"]} == {"factual", "math", "tool_call"}
    for c in sc["categories"]:
        assert 0 <= c["wilson_low"] <= c["wilson_high"] <= 1 and c["ci_low"] <= c["mean"] <= c["ci_high"]
    assert sc["weighted_low"] <= sc["weighted"] <= sc["weighted_high"]
    recs = [json.loads(v) for v in _rows(_data_home / "edgebench.sqlite").values()]
    assert len(recs) == 12
    assert all(x["mode"] == "completion" and x["failure"] in CLASSES for x in recs)
    assert all(x["error"] is None for x in recs)  # every request answered
    assert any(x["raw_output"] for x in recs)
    assert {x["sample"] for x in recs} == {0, 1} and {x["temperature"] for x in recs} == {0.0, 0.7}
    shown = edgebench("quality", str(gemma_path), *SUITES, "-k", "1")
    assert "completion mode" in shown.stdout and "weighted score" in shown.stdout
    # the table's pass^k column: items whose canonical prompt passed in every run
    for c in sc["categories"]:
        steady = sum(i["pass_hat_k"] for i in sc["items"] if i["category"] == c["category"])
        (row,) = [ln for ln in shown.stdout.splitlines() if ln.startswith(f"│ {c['category']} ")]
        assert row.split("│")[7].strip() == f"{steady}/{c['items']}"


def test_second_server_as_remote_backend(runtime: Runtime, tmp_path: Path, _data_home: Path) -> None:
    chat_model = write_tiny_llama(tmp_path / "chat.gguf", chat_template=CHATML)
    srv = ServerProcess(runtime, str(chat_model), RuntimeConfig(threads=1, ctx=1024), tmp_path / "srv.log")
    with srv:
        (tmp_path / "edgebench.toml").write_text(
            f'[[backends]]\nname = "second"\nkind = "llama-server"\nurl = "{srv.base_url}"\nmodel = "tiny"\n'
        )
        r = edgebench("quality", "--backend", "second", *SUITES, "-k", "0", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (sc,) = json.loads(r.stdout)["scores"]
    assert sc["target"] == "second:tiny" and sc["mode"] == "chat" and sc["runs"] == 6
    recs = [json.loads(v) for v in _rows(_data_home / "edgebench.sqlite").values()]
    assert all(x["error"] is None for x in recs)  # the remote path answered every request
    assert {x["tool_mode"] for x in recs if x["category"] == "tool_call"} == {"native"}


def test_npu_context_limit_refuses_before_sending(tmp_path: Path, _data_home: Path) -> None:
    # Port 9 (discard) is closed here: had anything been sent, the error would say "connection failed".
    (tmp_path / "edgebench.toml").write_text(
        '[[backends]]\nname = "npu"\nkind = "rkllama"\nurl = "http://127.0.0.1:9"\n'
        'model = "qwen3-1.7b"\nmax_ctx = 40\n'
    )
    r = edgebench("quality", "--backend", "npu", *SUITES, "-k", "0", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(v) for v in _rows(_data_home / "edgebench.sqlite").values()]
    assert len(recs) == 6
    for x in recs:
        assert x["failure"] == "empty" and "over its max context 40; not sent" in x["detail"]


def test_timeout_is_a_failure_class(tmp_path: Path, _data_home: Path) -> None:
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:  # accepts and never answers
        while True:
            try:
                held.append(lsn.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port = lsn.getsockname()[1]
    (tmp_path / "edgebench.toml").write_text(
        f'[[backends]]\nname = "slow"\nurl = "http://127.0.0.1:{port}"\n'
    )
    try:
        argv = ("quality", "--backend", "slow", *SUITES, "-k", "0", "--stall", "1", "--json")
        r = edgebench(*argv, cwd=tmp_path)
    finally:  # closed here, not by the garbage collector during some later test (a ResourceWarning there)
        lsn.close()
        for s in held:
            s.close()
    assert r.returncode == 0, r.stderr
    recs = [json.loads(v) for v in _rows(_data_home / "edgebench.sqlite").values()]
    assert len(recs) == 6 and all(x["failure"] == "timeout" for x in recs)


def test_killed_run_resumes(runtime: Runtime, gemma_path: Path, _data_home: Path) -> None:
    db = _data_home / "edgebench.sqlite"
    argv = [sys.executable, "-m", "edgebench", "quality", str(gemma_path), *SUITES, "-k", "2", "--json"]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while len(_rows(db)) < 4 and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the CLI and its llama-server together
    p.wait()
    before = _rows(db)
    assert 4 <= len(before) < 18
    r = edgebench("quality", str(gemma_path), *SUITES, "-k", "2", "--json", timeout=900)
    assert r.returncode == 0, r.stderr
    after = _rows(db)
    assert len(after) == 18 and all(after[k] == v for k, v in before.items())
    assert json.loads(r.stdout)["scores"][0]["runs"] == 18
