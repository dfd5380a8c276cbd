"""bench/graders: false-accept and false-reject rates of the validators on the adversarial set.

Every `tests/adversarial/*.yaml` (one file per validator kind) is judged by its item's own validator
from the shipped suites. Goal: ≤ 2 % false accepts and ≤ 2 % false rejects per kind.
Usage: python bench/graders.py [--show]   (--show lists every misjudged case with the verdict)
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from adversarial_cases import Case, judge, load_cases

GOAL = 0.02


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="list the misjudged cases")
    args = parser.parse_args()
    cases = load_cases()
    by_kind: dict[str, list[tuple[Case, bool, str]]] = defaultdict(list)
    for case in cases:
        try:
            verdict = judge(case)
            passed, detail = verdict.passed, f"{verdict.failure.value}: {verdict.detail}"
        except Exception as e:  # a crashing grader is a misjudgement too, and is shown as one
            passed, detail = case.expect == "fail", f"crash: {type(e).__name__}: {e}"
        by_kind[case.kind].append((case, passed, detail))
    print(f"{'kind':<12} {'cases':>5} {'pass':>5} {'fail':>5}  {'false-reject':>14}  {'false-accept':>14}")
    worst = 0.0
    misjudged: list[tuple[Case, bool, str]] = []
    totals = [0, 0, 0, 0]
    for kind in sorted(by_kind):
        rows = by_kind[kind]
        good = [r for r in rows if r[0].expect == "pass"]
        bad = [r for r in rows if r[0].expect == "fail"]
        rejected = [r for r in good if not r[1]]
        accepted = [r for r in bad if r[1]]
        misjudged += rejected + accepted
        fr = len(rejected) / len(good) if good else 0.0
        fa = len(accepted) / len(bad) if bad else 0.0
        worst = max(worst, fr, fa)
        totals = [
            totals[0] + len(good),
            totals[1] + len(bad),
            totals[2] + len(rejected),
            totals[3] + len(accepted),
        ]
        print(
            f"{kind:<12} {len(rows):>5} {len(good):>5} {len(bad):>5}  "
            f"{len(rejected):>3} ({fr:6.1%})  {len(accepted):>3} ({fa:6.1%})"
        )
    g, b, r, a = totals
    print(
        f"{'all':<12} {g + b:>5} {g:>5} {b:>5}  {r:>3} ({r / max(g, 1):6.1%})  {a:>3} ({a / max(b, 1):6.1%})"
    )
    if args.show:
        for case, passed, detail in misjudged:
            print(f"\n[{'FALSE ACCEPT' if passed else 'FALSE REJECT'}] {case.label}  ({case.why})")
            print(f"  reply: {case.reply[:200]!r}")
            print(f"  verdict: {detail[:200]}")
    print(f"\nworst rate {worst:.1%} (goal ≤ {GOAL:.0%} per kind)")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
