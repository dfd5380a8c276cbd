"""Quantization recipes as pipeline steps (quant/ does the work; the CLI only parses and shows):
the evaluator for a source (its work dir, the text, an importance matrix made on demand) and the
verification of a list of candidates with their report."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from edgebench.config import Config
from edgebench.host.probe import HostInfo
from edgebench.kvlab.lab import load_text
from edgebench.models.gguf import ModelInfo
from edgebench.quant.imatrix import make_imatrix
from edgebench.quant.measure import Evaluator
from edgebench.quant.recipe import Recipe
from edgebench.quant.types import RecipeError
from edgebench.quant.verify import QuantRow, verify_recipe
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["quant_evaluator", "verify_candidates"]


def quant_evaluator(
    cfg: Config,
    runtime: Runtime,
    info: ModelInfo,
    *,
    kld_ctx: int,
    text: Path | None,
    imatrix: Path | None,
    make_imx: bool,
    say: Callable[[str], None],
) -> Evaluator:
    """Quantized files and the source's logits live in data_dir/quant/<sha256>; with `make_imx`
    and no `imatrix`, llama-imatrix runs once per source and text."""
    work = cfg.data_dir / "quant" / info.sha256[:12]
    work.mkdir(parents=True, exist_ok=True)
    tf = work / "text.txt"
    tf.write_text(load_text(text))
    if make_imx and imatrix is None:
        say(f"llama-imatrix on {tf.name} ({info.name})")
        digest = hashlib.sha256(tf.read_bytes()).hexdigest()[:10]
        out = work / f"imatrix-{digest}-{kld_ctx}.gguf"
        imatrix = make_imatrix(runtime, Path(info.path), tf, out, ctx=kld_ctx)

    def progress(i: int, n: int, tensor: str) -> None:
        if i == n or i % max(n // 4, 1) == 0:  # a line per quarter of the tensors
            say(f"llama-quantize: {i}/{n} tensors ({tensor})")

    return Evaluator(runtime, Path(info.path), work, tf, ctx=kld_ctx, n_layer=info.n_layer, imatrix=imatrix,
                     on_progress=progress)  # fmt: skip


def verify_candidates(
    store: Store,
    ev: Evaluator,
    host: HostInfo,
    info: ModelInfo,
    recipes: Sequence[Recipe],
    cfg: RuntimeConfig,
    *,
    budget_mib: float,
    log_dir: Path,
    report_stem: Path | None = None,
    say: Callable[[str], None] = lambda _s: None,
) -> tuple[list[QuantRow], Path | None]:
    """Apply and verify each recipe (one that cannot be made from this source is said and
    skipped; each row is stored as it is measured); the candidates' report beside `report_stem`."""
    rows = []
    for r in recipes:
        try:
            plan = ev.preview(r)
        except RecipeError as e:
            say(f"{r.name}: skipped ({e})")
            continue
        rows.append(verify_recipe(store, ev.runtime, host, info, plan, ev, cfg, budget_mib=budget_mib,
                                  log_dir=log_dir, say=say))  # fmt: skip
    report = None
    if rows and report_stem is not None:
        from edgebench.quant.report import write_report  # lazy: matplotlib only for commands that draw

        report = write_report(rows, budget_mib, report_stem)
    return rows, report
