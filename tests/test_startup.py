"""Start-up cost: `edgebench --help` must not pay for scipy and matplotlib (~2-3 s of imports on a
small board); only the commands that compute intervals or draw plots import them."""

from __future__ import annotations

import subprocess
import sys


def test_cli_import_leaves_scipy_and_matplotlib_alone() -> None:
    code = "import edgebench.cli, sys; print(sorted({'scipy', 'matplotlib'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_stats_still_work_after_the_lazy_import() -> None:
    from edgebench.stats import mcnemar, summarize, wilson

    assert summarize([1.0, 2.0, 3.0]).ci_low < 2.0 < summarize([1.0, 2.0, 3.0]).ci_high
    lo, hi = wilson(5, 10)
    assert 0.2 < lo < 0.5 < hi < 0.8
    assert mcnemar(0, 6) < 0.05
