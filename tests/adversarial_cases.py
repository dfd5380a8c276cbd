"""The adversarial grader set: every `tests/adversarial/<kind>.yaml`, judged by its item's own validator.

Each file is a YAML list of cases `{item: "<suite>/<item id>", reply: "<text>", tool_calls: [{name,
arguments}] (optional, as the OpenAI API returns them), expect: pass|fail, why: "<one line>"}`.
Shared by tests/test_adversarial_graders.py and bench/graders.py.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from edgebench.quality import Item, ModelOutput, ToolCallOut, Verdict, load_suite, validate

CASES_DIR = Path(__file__).parent / "adversarial"


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item: str = Field(pattern=r"^[\w-]+/[\w.-]+$")
    reply: str
    tool_calls: list[dict[str, Any]] = []
    expect: Literal["pass", "fail"]
    why: str = Field(min_length=3)
    kind: str = ""  # the file it came from
    index: int = 0  # its position there

    @property
    def label(self) -> str:
        text = self.reply or ",".join(str(c.get("name")) for c in self.tool_calls)
        return f"{self.kind}#{self.index}:{self.item.split('/')[1]}:{' '.join(text.split())[:40]}"

    def output(self) -> ModelOutput:
        calls = [ToolCallOut(name=c["name"], arguments=c.get("arguments", {})) for c in self.tool_calls]
        return ModelOutput(content=self.reply, tool_calls=calls)


@cache
def _suite_items(suite: str) -> dict[str, Item]:
    return {item.id: item for item in load_suite(suite).items}


def item_of(case: Case) -> Item:
    suite, item_id = case.item.split("/", 1)
    items = _suite_items(suite)
    if item_id not in items:
        raise KeyError(f"{case.label}: no item {item_id!r} in suite {suite!r}")
    return items[item_id]


def load_cases(directory: Path = CASES_DIR) -> list[Case]:
    cases: list[Case] = []
    for path in sorted(directory.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a YAML list of cases")
        for index, entry in enumerate(raw, 1):
            cases.append(Case.model_validate({**entry, "kind": path.stem, "index": index}))
    return cases


def judge(case: Case) -> Verdict:
    return validate(case.output(), item_of(case).validator)
