"""The solver: the mix of per-group types that fits a RAM budget at a target context with the
least measured damage.

Every group (attn_q, …, ffn_down, the experts, the embeddings, the output) starts as the source
holds it, copied bit for bit, and may move to a ladder type no wider than the source's own (never
requantize up) and no narrower than a pin. The predicted RAM at the target context (the memory
planner on each preview's layout: weights as mapped or repacked on this CPU, KV, compute) of
every single move is computed first; only moves that save RAM are measured — that group alone at
that type, KLD against the source's logits. Then the move adding the least measured KLD per MiB
saved is taken until the budget holds. Per-group damage is treated as additive, which the final
mix's own measurement (`quant solve --verify`) checks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.models.gguf import ModelInfo, _read_header
from edgebench.quant.fit import ram_plan
from edgebench.quant.measure import Evaluator, Measured
from edgebench.quant.preview import FilePlan, quantizable
from edgebench.quant.recipe import GROUPS, Recipe, Rule
from edgebench.quant.types import FLOAT_TYPES, RecipeError, bpw, canonical_type
from edgebench.runtime.flags import RuntimeConfig

__all__ = ["KEEP", "Pin", "Solution", "groups_present", "keep_source", "parse_pin", "solve", "uniform"]

_MIB = 1024 * 1024
# The fine groups the solver moves independently (a tensor belongs to at most one).
_SOLVER_GROUPS = (
    "attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output", "ffn_up", "ffn_gate", "ffn_down",
    "ffn_up_exps", "ffn_gate_exps", "ffn_down_exps", "shexp", "ssm",
)  # fmt: skip


@dataclass(frozen=True)
class Pin:
    group: str
    min_type: str  # the group never goes below this type's bits per weight


@dataclass
class Solution:
    recipe: Recipe
    plan: FilePlan
    ram_mib: float  # predicted, at the target context
    budget_mib: float
    steps: list[str]  # each move, in order, with its measured cost
    sensitivity: dict[str, dict[str, float]]  # group → type → measured KLD (that group alone)
    measured: dict[str, Measured] = field(default_factory=dict)  # recipe name → measurement
    wall_s: float = 0.0


def parse_pin(spec: str) -> Pin:
    """ "attn>=q8_0" (the group and its minimum type)."""
    m = re.fullmatch(r"\s*([a-z_]+)\s*>=\s*([A-Za-z0-9_]+)\s*", spec)
    if m is None:
        raise RecipeError(f"--pin {spec!r}: write it as GROUP>=TYPE (e.g. attn>=q8_0)")
    group = m.group(1)
    if group not in GROUPS and group not in ("embeddings", "output"):
        raise RecipeError(
            f"--pin {spec!r}: unknown group {group!r} (one of {', '.join(GROUPS)}, embeddings, output)"
        )
    return Pin(group, canonical_type(m.group(2), f"--pin {spec}"))


def groups_present(source: Path) -> list[str]:
    """The solver's groups that hold at least one tensor llama-quantize quantizes, plus
    "embeddings" and "output" (when the model has an output.weight of its own)."""
    header, _ = _read_header(source)
    present = {_group_of(t.name) for t in header.tensors if quantizable(t.name, t.shape)}
    return [g for g in (*_SOLVER_GROUPS, "embeddings", "output") if g in present]


# The embeddings and the output as rules, not llama-quantize's --token-embedding-type /
# --output-tensor-type: a rule gets the row fallback (gemma's 640-wide rows take no 256-block type).
_FLAG_RULES = {"embeddings": r"re:^token_embd\.weight$", "output": r"re:^output\.weight$"}


KEEP = "keep"  # a group's state: every tensor keeps the source's type (copied, bit for bit)


def _recipe(name: str, base: str, types: dict[str, str], keep: dict[str, tuple[Rule, ...]]) -> Recipe:
    rules: list[Rule] = []
    for g, t in types.items():
        if t == KEEP:
            rules.extend(keep[g])
        elif t != base:
            rules.append(Rule(tensors=_FLAG_RULES.get(g, g), type=t))
    return Recipe(name=name, base_type=base, rules=tuple(rules))


def _keep_rules(source: Path) -> dict[str, tuple[Rule, ...]]:
    """Per group, the rules that give each of its tensors the type it has in the source (one per
    type, with its layers: a Q4_K_M file holds ffn_down in Q6_K in some layers, Q4_K in others)."""
    header, _ = _read_header(source)
    by: dict[str, dict[str, list[int]]] = {}
    for t in header.tensors:
        g = _group_of(t.name) if quantizable(t.name, t.shape) else None
        if g is not None:
            m = re.match(r"^blk\.(\d+)\.", t.name)
            by.setdefault(g, {}).setdefault(t.ggml_type, []).append(int(m.group(1)) if m else -1)
    out: dict[str, tuple[Rule, ...]] = {}
    for g, types in by.items():
        if g in _FLAG_RULES or len(types) == 1:
            out[g] = tuple(Rule(tensors=_FLAG_RULES.get(g, g), type=t) for t in types)
        else:
            out[g] = tuple(
                Rule(tensors=g, layers=",".join(map(str, sorted(ls))), type=t) for t, ls in types.items()
            )
    return out


def keep_source(source: Path) -> Recipe:
    """The source as it is (every tensor copied): the most expensive candidate, KLD 0."""
    rules = tuple(r for rs in _keep_rules(source).values() for r in rs)
    return Recipe(name="source", base_type="Q8_0", rules=rules)


def uniform(t: str) -> Recipe:
    """Every quantizable tensor at `t` (--pure), with llama-quantize's fallback for rows that are
    not a whole number of its blocks."""
    return Recipe(name=f"uniform-{t.lower()}", base_type=t)


_COVERS = {
    "attn": ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output"),
    "ffn": ("ffn_up", "ffn_gate", "ffn_down"),
    "exps": ("ffn_up_exps", "ffn_gate_exps", "ffn_down_exps"),
}


def _pinned(group: str, t: str, pins: Sequence[Pin]) -> bool:
    """True when `t` is below a pin on `group` or on a group that holds it ("attn" holds attn_q)."""
    return any(
        (p.group == group or group in _COVERS.get(p.group, ())) and bpw(t) < bpw(p.min_type) - 1e-9
        for p in pins
    )


def _group_of(name: str) -> str | None:
    if name == "token_embd.weight":
        return "embeddings"
    if name == "output.weight":
        return "output"
    return next((g for g in _SOLVER_GROUPS if re.search(rf"^blk\.\d+\.{GROUPS[g]}\.weight$", name)), None)


def _caps(source: Path) -> dict[str | None, float]:
    """Per group (None: quantizable tensors in no group), the fewest bits per weight any of its
    tensors has in the source: no type above it may be asked for (requantizing up)."""
    header, _ = _read_header(source)
    caps: dict[str | None, float] = {}
    for t in header.tensors:
        if not quantizable(t.name, t.shape):
            continue
        g = _group_of(t.name)
        cap = float("inf") if t.ggml_type in FLOAT_TYPES else bpw(t.ggml_type)
        caps[g] = min(caps.get(g, float("inf")), cap)
    return caps


def solve(
    source: Path,
    info: ModelInfo,
    *,
    budget_mib: float,
    cfg: RuntimeConfig,
    ladder: Sequence[str],
    evaluator: Evaluator,
    pins: Sequence[Pin] = (),
    cpu_flags: Sequence[str] | None = None,
    name: str = "mix",
    on_step: Callable[[str], None] | None = None,
    before_measuring: Callable[[], None] = lambda: None,
) -> Solution:
    """before_measuring: called once, after every check that needs no measurement passed and
    before the first one (the CLI takes the host's measurement lock there)."""
    t0 = time.monotonic()
    ladder = sorted({canonical_type(t, "--types") for t in ladder}, key=bpw, reverse=True)
    if len(ladder) < 2:
        raise RecipeError("--types: give at least two types (the top one and lower ones to move groups to)")
    groups = groups_present(source)
    caps = _caps(source)
    keep = _keep_rules(source)
    # Each group starts as the source has it (KEEP) and may move to a ladder type that is no more
    # bits than its tensors hold in the source (never requantize up) and no less than a pin.
    allowed: dict[str, list[str]] = {
        g: [
            KEEP,
            *(t for t in ladder if bpw(t) <= caps.get(g, float("inf")) + 1e-9 and not _pinned(g, t, pins)),
        ]
        for g in groups
    }
    # tensors in no group get the base type: the highest the source allows for them
    base = next((t for t in ladder if bpw(t) <= caps.get(None, float("inf")) + 1e-9), ladder[-1])
    say = on_step or (lambda _s: None)

    def ram(plan: FilePlan) -> float:
        return ram_plan(info, plan, cfg, cpu_flags=cpu_flags).host_total_mib

    current = {g: a[0] for g, a in allowed.items()}
    plan = evaluator.preview(_recipe(name, base, current, keep))
    top_ram = ram(plan)
    # RAM, not file size, per (group, type) from previews alone (milliseconds): a type llama.cpp
    # repacks on this CPU can cost more RAM than a bigger one (a tied Q4_0 embedding gets a second,
    # repacked copy for the output matmul), and a fallback can make two types the same bytes.
    rams: dict[str, dict[str, float]] = {g: {current[g]: top_ram} for g in groups}
    for g in groups:
        for t in allowed[g][1:]:
            rams[g][t] = ram(
                evaluator.preview(_recipe(f"sens-{g}-{t.lower()}", base, {**current, g: t}, keep))
            )
        # only types that save RAM over every higher one are worth measuring
        useful, best_ram = [allowed[g][0]], top_ram
        for t in allowed[g][1:]:
            if rams[g][t] < best_ram - 1e-6:
                useful.append(t)
                best_ram = rams[g][t]
        allowed[g] = useful
    lowest = evaluator.preview(_recipe("floor", base, {g: a[-1] for g, a in allowed.items()}, keep))
    if ram(lowest) > budget_mib:
        raise RecipeError(
            f"budget {budget_mib:.0f} MiB at context {cfg.ctx}: nothing fits — even every group at its "
            f"lowest allowed type needs {ram(lowest):.0f} MiB (weights {lowest.file_bytes / _MIB:.0f} MiB "
            "+ KV + compute); lower the context, quantize the KV cache, or allow lower types"
        )
    if top_ram <= budget_mib:
        say(f"the top types fit ({top_ram:.0f} ≤ {budget_mib:.0f} MiB): no move needed")
        return Solution(plan.recipe, plan, top_ram, budget_mib, [], {}, wall_s=time.monotonic() - t0)

    before_measuring()
    # the start is the source itself (every tensor copied): KLD 0 by construction, not measured
    sens: dict[str, dict[str, float]] = {g: {KEEP: 0.0} for g in groups}
    measured: dict[str, Measured] = {}
    for g in groups:
        for t in allowed[g][1:]:
            say(f"sensitivity: {g} at {t}")
            m = evaluator.measure(
                evaluator.preview(_recipe(f"sens-{g}-{t.lower()}", base, {**current, g: t}, keep))
            )
            measured[m.plan.recipe.name] = m
            sens[g][t] = m.kld.mean_kld

    steps: list[str] = []
    while ram(plan) > budget_mib:
        best: tuple[float, str, str] | None = None
        for g in groups:
            for nxt in allowed[g][allowed[g].index(current[g]) + 1 :]:
                saved = rams[g][current[g]] - rams[g][nxt]
                if saved <= 0:
                    continue  # saves nothing here (a fallback to the same type, or a repack)
                cost = max(sens[g][nxt] - sens[g][current[g]], 0.0) / saved
                if best is None or cost < best[0]:
                    best = (cost, g, nxt)
        if best is None:
            raise RecipeError(
                f"budget {budget_mib:.0f} MiB: no measured move is left and {ram(plan):.0f} MiB "
                "is still needed"
            )
        cost, g, nxt = best
        current[g] = nxt
        plan = evaluator.preview(_recipe(name, base, current, keep))
        steps.append(
            f"{g} → {nxt}: +{cost:.2e} KLD (measured) per MiB saved; RAM {ram(plan):.0f} MiB (predicted)"
        )
        say(steps[-1])
    return Solution(plan.recipe, plan, ram(plan), budget_mib, steps, sens, measured, time.monotonic() - t0)
