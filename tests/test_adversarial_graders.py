"""Every adversarial case in tests/adversarial/*.yaml gets the verdict it expects from its item's own
validator; bench/graders.py prints the same set as false-accept / false-reject rates per kind."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from adversarial_cases import CASES_DIR, Case, item_of, judge, load_cases
from edgebench.quality.specs import ToolCallSpec

CASES = load_cases()
# the file a case lives in must hold its validator's kind (tool_call items split by what they expect)
KIND_OF_FILE = {
    "ask": ("tool_call", "ask"),
    "irrelevance": ("tool_call", "none"),
    "tool_call": ("tool_call", "call"),
}


def _kind(case: Case) -> tuple[str, str]:
    spec = item_of(case).validator
    return spec.kind, spec.expect if isinstance(spec, ToolCallSpec) else ""


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_adversarial_verdict(case: Case) -> None:
    verdict = judge(case)
    expected = case.expect == "pass"
    assert verdict.passed is expected, f"{case.why}: {verdict.failure.value}: {verdict.detail}"


def test_the_set_is_big_and_balanced_per_kind() -> None:
    assert len(CASES) >= 300
    counts = Counter((c.kind, c.expect) for c in CASES)
    for kind in {c.kind for c in CASES}:
        assert counts[kind, "pass"] >= 5, kind
        assert counts[kind, "fail"] >= 5, kind


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_each_file_holds_one_validator_kind(case: Case) -> None:
    kind, expect = _kind(case)
    if case.kind in KIND_OF_FILE:
        assert (kind, expect) == KIND_OF_FILE[case.kind]
    elif case.kind in {
        "numeric",
        "choice",
        "contains",
        "exact",
        "json",
        "csv",
        "bullets",
        "sentences",
        "code",
    }:
        assert kind == case.kind
    # words and regex items are `all` checks or plain regexes: their file names say what they probe


def test_the_bench_loads_every_file_in_the_directory() -> None:
    assert {c.kind for c in CASES} == {p.stem for p in CASES_DIR.glob("*.yaml")}


def test_loader_rejects_a_malformed_case(tmp_path: Path) -> None:
    (tmp_path / "numeric.yaml").write_text(
        "- {item: core/math.lcm, reply: '12', expect: maybe, why: bad expect}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="expect"):
        load_cases(tmp_path)
