"""Quality and tool-calling suite: items, validators and the sanitizer (pure logic, no HTTP).

The runner loads a suite, sends each item's prompts, builds a `ModelOutput` per reply and calls
`validate(output, item.validator)`; `Verdict.failure` separates format from capability.
"""

from __future__ import annotations

from edgebench.quality.coderun import RunResult, extract_code, run_python
from edgebench.quality.records import FailureClass, ModelOutput, ToolCallOut, Verdict
from edgebench.quality.sanitize import Sanitized, sanitize
from edgebench.quality.specs import ValidatorSpec
from edgebench.quality.suite import (
    CATEGORIES,
    CATEGORY_WEIGHTS,
    Category,
    Item,
    Message,
    Suite,
    SuiteSummary,
    list_suites,
    load_suite,
)
from edgebench.quality.toolcall import extract_calls
from edgebench.quality.validators import looks_like_refusal, register, registered, validate

__all__ = [
    "CATEGORIES",
    "CATEGORY_WEIGHTS",
    "Category",
    "FailureClass",
    "Item",
    "Message",
    "ModelOutput",
    "RunResult",
    "Sanitized",
    "Suite",
    "SuiteSummary",
    "ToolCallOut",
    "ValidatorSpec",
    "Verdict",
    "extract_calls",
    "extract_code",
    "list_suites",
    "load_suite",
    "looks_like_refusal",
    "register",
    "registered",
    "run_python",
    "sanitize",
    "validate",
]
