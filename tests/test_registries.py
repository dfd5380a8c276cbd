"""One backend registry (config kinds, declared limits) and the in-process FakeBackend through the
real quality runner: references score, the store resumes, a second pass asks nothing."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from edgebench.backends.openai import OpenAICompatible
from edgebench.backends.registry import BACKEND_KINDS, make_backend
from edgebench.config import BackendConfig
from edgebench.errors import ConfigError
from edgebench.quality.runner import QualitySettings, Target, run_suite
from edgebench.quality.score import score
from edgebench.quality.suite import load_suite
from edgebench.store import Provenance, Store
from edgebench.testing.fakes import FakeBackend


def test_config_kinds_are_the_registry() -> None:
    literal = typing.get_args(BackendConfig.model_fields["kind"].annotation)
    assert set(literal) == set(BACKEND_KINDS)


def test_declared_limits_come_from_the_kind() -> None:
    npu = make_backend(
        BackendConfig(name="npu", kind="rkllama", url="http://127.0.0.1:9", model="qwen3"),
        api_key=None,
        timeout_s=5,
        stall_s=5,
    )
    assert isinstance(npu, OpenAICompatible) and npu.max_ctx == 4096  # the NPU's fixed context
    own = make_backend(
        BackendConfig(name="npu", kind="rkllama", url="http://127.0.0.1:9", model="q", max_ctx=2048),
        api_key=None,
        timeout_s=5,
        stall_s=5,
    )
    assert isinstance(own, OpenAICompatible) and own.max_ctx == 2048  # the config wins
    with pytest.raises(ConfigError, match="needs `model`"):
        make_backend(
            BackendConfig(name="o", kind="ollama", url="http://127.0.0.1:9"),
            api_key=None,
            timeout_s=5,
            stall_s=5,
        )
    for b in (npu, own):
        b.close()


def test_fake_backend_through_the_real_runner(tmp_path: Path) -> None:
    suite = load_suite("seed14")
    table = {i.messages[-1].content: i.reference for i in suite.items if i.reference and not i.tools}
    assert len(table) >= 8
    be = FakeBackend(table=table, default="I do not know.")
    store = Store(tmp_path / "s.sqlite")
    prov = Provenance(build_id="fake", host_fingerprint="h", model_sha256="0" * 64)
    target = Target(label="fake", mode="chat", provenance=prov, backend_id="fake")
    settings = QualitySettings(samples=0, variants=False)
    results = run_suite(store, be, target, suite, settings)
    answered = [r for r in results if r.raw_output != "I do not know."]
    assert len(answered) == len(table) and all(r.passed for r in answered)
    assert not any(
        r.passed for r in results if r.raw_output == "I do not know." and r.category != "tool_call"
    )
    asked = len(be.requests)
    again = run_suite(store, be, target, suite, settings)
    assert len(be.requests) == asked and all(r.resumed for r in again)  # resumed, nothing asked again
    assert score(again).weighted == score(results).weighted
