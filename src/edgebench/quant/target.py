"""Target mode: the cheapest quantization that meets the user's targets, measured with intervals.

Candidates (uniform types, and the source as it is) are tried in order of predicted RAM at the
target context; each is quantized and measured — KLD against the source, decode speed at the
target context's depth (llama-bench tg32 at depth ctx-32, in `processes` separate processes: the
process is the unit of the interval, edgebench.stats) — and passes only when the whole 95 % interval
clears every target; "marginal" when an interval straddles one. The first pass wins; when none
passes, the closest candidate is returned with what it misses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from edgebench.models.gguf import ModelInfo
from edgebench.quant.fit import ram_plan
from edgebench.quant.measure import Evaluator
from edgebench.quant.recipe import Recipe
from edgebench.quant.types import RecipeError
from edgebench.runtime.bench import run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.stats import Summary, summarize_groups

__all__ = ["TargetRow", "Targets", "judge", "run_target"]

Verdict = Literal["pass", "marginal", "fail"]
_Z = 1.96


@dataclass(frozen=True)
class Targets:
    min_tg: float | None = None  # t/s at the target context's depth
    min_pp: float | None = None  # t/s, pp512 at that depth
    max_kld: float | None = None  # mean KLD against the source
    max_ram_mib: float | None = None  # predicted RAM at the target context

    def any(self) -> bool:
        return any(v is not None for v in (self.min_tg, self.min_pp, self.max_kld, self.max_ram_mib))


@dataclass
class TargetRow:
    recipe: Recipe
    ram_mib: float
    file_bytes: int
    kld: tuple[float, float] | None = None  # mean, standard error
    tg: Summary | None = None
    pp: Summary | None = None
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def verdict(self) -> Verdict:
        if self.error or "fail" in self.verdicts.values():
            return "fail"
        return "marginal" if "marginal" in self.verdicts.values() else "pass"


def _at_least(lo: float, hi: float, target: float) -> Verdict:
    return "pass" if lo >= target else ("fail" if hi < target else "marginal")


def _at_most(lo: float, hi: float, target: float) -> Verdict:
    return "pass" if hi <= target else ("fail" if lo > target else "marginal")


def judge(row: TargetRow, t: Targets) -> None:
    """Fill row.verdicts and row.misses from its measurements (intervals, not means)."""
    v, miss = row.verdicts, row.misses
    if t.max_ram_mib is not None:
        v["ram"] = "pass" if row.ram_mib <= t.max_ram_mib else "fail"
        if v["ram"] == "fail":
            miss.append(f"RAM {row.ram_mib:.0f} MiB > {t.max_ram_mib:.0f} (predicted)")
    if t.max_kld is not None and row.kld is not None:
        mean, se = row.kld
        v["kld"] = _at_most(mean - _Z * se, mean + _Z * se, t.max_kld)
        if v["kld"] != "pass":
            miss.append(f"KLD {mean:.4f} ± {_Z * se:.4f} vs ≤ {t.max_kld}")
    for key, target, s in (("tg", t.min_tg, row.tg), ("pp", t.min_pp, row.pp)):
        if target is None or s is None:
            continue
        v[key] = _at_least(s.ci_low, s.ci_high, target)
        if v[key] != "pass":
            miss.append(f"{key} {s.mean:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}] t/s vs ≥ {target}")


def _shortfall(row: TargetRow) -> tuple[int, int, float]:
    """Order for "closest": fewer failed targets, fewer marginal ones, less RAM."""
    vals = list(row.verdicts.values())
    return (vals.count("fail") + (1 if row.error else 0), vals.count("marginal"), row.ram_mib)


def run_target(
    evaluator: Evaluator,
    info: ModelInfo,
    candidates: Sequence[Recipe],
    cfg: RuntimeConfig,
    targets: Targets,
    *,
    processes: int = 3,
    cpu_flags: Sequence[str] | None = None,
    say: Callable[[str], None] = lambda _s: None,
) -> tuple[TargetRow | None, list[TargetRow]]:
    """(the first candidate that passes, or None; every row tried, cheapest first)."""
    if not targets.any():
        raise RecipeError(
            "quant target: give at least one target (--min-tg, --min-pp, --max-kld, --max-ram-mib)"
        )
    rows: list[TargetRow] = []
    for r in candidates:
        try:
            plan = evaluator.preview(r)
        except RecipeError as e:
            say(f"{r.name}: not a candidate ({e})")
            continue
        rows.append(
            TargetRow(r, ram_plan(info, plan, cfg, cpu_flags=cpu_flags).host_total_mib, plan.file_bytes)
        )
    rows.sort(key=lambda x: x.ram_mib)
    if not rows:
        raise RecipeError("quant target: no candidate can be made from this source")
    depth = max(cfg.ctx - 32, 0)
    for row in rows:
        say(f"{row.recipe.name}: {row.ram_mib:.0f} MiB predicted at context {cfg.ctx}")
        if targets.max_ram_mib is not None and row.ram_mib > targets.max_ram_mib:
            judge(row, targets)  # measured or not, it does not fit
            continue
        plan = evaluator.preview(row.recipe)
        try:
            if targets.max_kld is not None:
                k = evaluator.measure(plan).kld
                row.kld = (k.mean_kld, k.mean_kld_pm)
            applied = evaluator.quantize(plan)
            for key, target, test in (
                ("tg", targets.min_tg, BenchTest(n_prompt=0, n_gen=32, depth=depth, reps=3)),
                ("pp", targets.min_pp, BenchTest(n_prompt=512, depth=depth, reps=3)),
            ):
                if target is None:
                    continue
                groups = []
                for i in range(processes):
                    say(f"{row.recipe.name}: llama-bench {test.name} at depth {depth} ({i + 1}/{processes})")
                    out = run_bench(evaluator.runtime, applied.path, cfg, test, timeout_s=3600)
                    if not out.runs:
                        raise RecipeError(f"llama-bench {test.name}: {out.status.value}: {out.detail}")
                    groups.append(out.runs[0].samples_ts)
                setattr(row, key, summarize_groups(groups))
        except RecipeError as e:
            row.error = str(e)
        judge(row, targets)
        if row.verdict == "pass":
            return row, rows
    tried = [r for r in rows if r.verdicts or r.error]
    return None, sorted(tried or rows, key=_shortfall)
