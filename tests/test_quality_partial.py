"""`edgebench quality A B` where A's llama-server cannot start: A is a stored failed row with
llama.cpp's reason, B is scored, and the exit code says not everything succeeded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edgebench.runtime.locate import Runtime
from edgebench.testing.synth import write_tiny_llama
from gguf_edit import VT, GGUFTemplate, Value
from helpers import FIXTURES, edgebench

pytestmark = pytest.mark.llama
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_one_model_that_will_not_start_does_not_stop_the_others(
    runtime: Runtime, tmp_path: Path, _data_home: Path
) -> None:
    good = write_tiny_llama(tmp_path / "good.gguf", chat_template=CHATML)
    # llama.cpp reads feed_forward_length as u32 and refuses a u64: a load error we do not predict
    tpl = GGUFTemplate(write_tiny_llama(tmp_path / "base.gguf", chat_template=CHATML))
    bad = tpl.write(tmp_path / "bad.gguf", {"llama.feed_forward_length": Value(VT.UINT64, 256)})
    for path, name in ((bad, "bad"), (good, "good")):
        r = edgebench("models", "add", str(path), "--name", name)
        assert r.returncode == 0, r.stderr
    r = edgebench(
        "quality",
        "bad",
        "good",
        "--suite",
        "mini",
        "--suite-dir",
        str(FIXTURES / "suites"),
        "-k",
        "0",
        "--json",
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert (
        lines[-1].startswith("edgebench: error: llama-server")
        and "bad: llama-server did not start" in lines[-1]
    )
    doc = json.loads(r.stdout)
    assert [s["target"] for s in doc["scores"]] == ["good"]  # the other target was scored
    (f,) = doc["failed"]
    assert f["model"] == "bad" and f["cause"] != "ok"
    assert "feed_forward_length" in f["detail"] or "feed_forward_length" in f["log_tail"]
    db = sqlite3.connect(_data_home / "edgebench.sqlite")
    rows = db.execute("SELECT status, record FROM results WHERE stage = 'server_start'").fetchall()
    db.close()
    assert len(rows) == 1 and json.loads(rows[0][1])["model"] == "bad"
