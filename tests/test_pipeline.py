"""`edgebench run` end to end on a synthetic model, and the report as headless Chromium renders it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebench.decide.export import validate_routing
from edgebench.report import SECTION_IDS
from edgebench.runtime.locate import Runtime
from helpers import FIXTURES, edgebench

pytestmark = pytest.mark.llama
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _dump_dom(html: Path, tmp_path: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        # `make test` installs it: a skip here would hide the check in CI. Opt out explicitly only.
        if os.environ.get("EDGEBENCH_NO_CHROMIUM") == "1":
            pytest.skip("EDGEBENCH_NO_CHROMIUM=1: the headless-Chromium check is off")
        pytest.fail("Debian chromium is not installed (make test installs it; or apt-get install chromium)")
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-1000:]
    return res.stdout


def test_run_writes_a_complete_report(runtime: Runtime, tmp_path: Path, _data_home: Path) -> None:
    from edgebench.testing.synth import write_tiny_llama

    model = write_tiny_llama(tmp_path / "tiny-chat.gguf", chat_template=CHATML, ctx_train=8192)
    (tmp_path / "edgebench.toml").write_text(
        f'[[models]]\npath = "{model}"\nname = "tiny-chat"\n\n'
        '[sweep]\nthreads = [1, 2]\nflash_attn = ["on"]\n\n'
        f'[run]\nkv = ["f16"]\nn_prompt = 32\nn_gen = 16\ncontext_max = 4096\nsuite = "mini"\n'
        f'suite_dirs = ["{FIXTURES / "suites"}"]\n'
    )
    r = edgebench("run", "--json", "--no-bandwidth", cwd=tmp_path, timeout=1200)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["timings_s"]) == {"setup", "plan", "sweep", "context", "quality", "decide+report"}
    assert doc["sweeps"][0]["best_tg"]["result"]["status"] == "ok"
    assert doc["context"][0]["stable_ctx"] == 4096
    assert doc["quality"][0]["mode"] == "chat" and doc["quality"][0]["runs"] == 3
    assert doc["plans"]["tiny-chat"]["predicted"] is True
    routing = json.loads(Path(doc["report"]["routing"]).read_text())
    assert validate_routing(routing) == []
    broken = {**routing, "routes": [{"use_case": "fast_chat"}]}
    assert validate_routing(broken) != []
    _same_serving_spec_everywhere(routing, _data_home / "edgebench.sqlite")
    dom = _dump_dom(Path(doc["report"]["html"]), tmp_path)
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in dom, sid
    svgs = re.findall(r"<svg.*?</svg>", dom, re.S)
    assert len(svgs) >= 3
    assert sum(s.count("<path") + s.count("<use") for s in svgs) > 20  # real marks, not empty axes
    assert 'src="http' not in dom and 'href="http' not in dom  # self-contained
    assert "tiny-chat" in dom
    md = Path(doc["report"]["markdown"]).read_text()
    assert "tiny-chat" in md and "measured" in md


def _same_serving_spec_everywhere(routing: dict[str, object], db_path: Path) -> None:
    """The routing file's spec is the config quality served with and the context probe started
    from (threads, threads_batch, ubatch, KV; quality also the proven ctx): one ServingSpec."""
    import sqlite3

    from edgebench.runtime.flags import RuntimeConfig

    serving = routing["serving"]
    assert isinstance(serving, dict)
    spec = serving["tiny-chat"]
    rc = RuntimeConfig.model_validate(spec["runtime"])
    assert spec["ctx_source"] == "context probe" and rc.ctx == 4096
    assert rc.threads_batch is not None  # prefill's winner's threads, explicit
    db = sqlite3.connect(db_path)
    quality = {
        json.loads(r[0])["backend_id"] for r in db.execute("SELECT record FROM results WHERE stage='quality'")
    }
    probes = [
        json.loads(r[0])["runtime"] for r in db.execute("SELECT params FROM results WHERE stage='context'")
    ]
    db.close()
    assert quality == {f"llama-server|{rc.key()}"}  # quality served exactly the routing file's spec
    assert probes
    for p in probes:  # the probe varied only the context
        started = RuntimeConfig.model_validate(p)
        same = ("threads", "threads_batch", "ubatch", "cache_type_k", "cache_type_v", "flash_attn", "cpus")
        assert {k: getattr(started, k) for k in same} == {k: getattr(rc, k) for k in same}
