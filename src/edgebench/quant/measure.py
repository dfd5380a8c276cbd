"""What a quantized file costs in quality: llama-perplexity --kl-divergence against the source's
own logits on the shipped text (f16 KV for both, so only the weights differ)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebench.host.busy import quality_threads
from edgebench.kvlab.native import KldResult, NativeError, kld_base, native_kld
from edgebench.quant.apply import Applied, apply_recipe
from edgebench.quant.imatrix import read_imatrix
from edgebench.quant.preview import FilePlan, ImatrixMeta, plan_file
from edgebench.quant.recipe import Recipe
from edgebench.quant.types import RecipeError
from edgebench.runtime.locate import Runtime

__all__ = ["Evaluator", "Measured"]


@dataclass(frozen=True)
class Measured:
    plan: FilePlan
    applied: Applied
    kld: KldResult


class Evaluator:
    """Quantizes recipes into `work` (one file per distinct recipe, reused) and measures each
    against the source's logits, computed once."""

    def __init__(self, runtime: Runtime, source: Path, work: Path, text: Path, *, ctx: int, n_layer: int,
                 threads: int | None = None, imatrix: Path | None = None,
                 on_progress: Callable[[int, int, str], None] | None = None) -> None:  # fmt: skip
        self.runtime, self.source, self.work, self.text = runtime, source, work, text
        # KLD does not depend on the thread count: the spare cores, unless asked
        self.ctx, self.n_layer, self.threads = ctx, n_layer, quality_threads(threads)
        self.imatrix = imatrix
        self.on_progress = on_progress  # llama-quantize's [i/n] tensor lines
        self.imatrix_meta: ImatrixMeta | None = read_imatrix(imatrix) if imatrix is not None else None
        self._base: Path | None = None
        self._measured: dict[str, Measured] = {}  # one measurement per distinct file content
        work.mkdir(parents=True, exist_ok=True)

    def base(self) -> Path:
        if self._base is None:
            out = self.work / f"base-{self.ctx}.kld"
            try:
                self._base = kld_base(self.runtime, str(self.source), self.text, out, ctx=self.ctx,
                                      threads=self.threads)  # fmt: skip
            except NativeError as e:
                raise RecipeError(f"source logits ({self.source.name}): {e}") from None
        return self._base

    def _key(self, plan: FilePlan) -> str:
        """What decides the file's bytes: every tensor's type, and the importance matrix."""
        what: list[object] = [[t.name, t.dst_type] for t in plan.tensors]
        if self.imatrix is not None:
            st = self.imatrix.stat()
            what.append([str(self.imatrix), st.st_size, st.st_mtime_ns])
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]

    def file_for(self, plan: FilePlan) -> Path:
        return self.work / f"{plan.recipe.name}-{self._key(plan)}.gguf"

    def quantize(self, plan: FilePlan) -> Applied:
        dst = self.file_for(plan)
        return apply_recipe(
            self.runtime, plan, dst, n_layer=self.n_layer, threads=self.threads, imatrix=self.imatrix,
            on_progress=self.on_progress,
        )  # fmt: skip

    def preview(self, recipe: Recipe) -> FilePlan:
        return plan_file(self.source, recipe, imatrix=self.imatrix_meta)

    def measure(self, plan: FilePlan) -> Measured:
        """KLD of the recipe's file; a recipe that makes the same file as one measured before (the
        solver's mix is often one of its single moves) reuses that measurement."""
        done = self._measured.get(self._key(plan))
        if done is not None:
            return Measured(plan, done.applied, done.kld)
        applied = self.quantize(plan)
        try:
            kld = native_kld(
                self.runtime, applied.path, self.text, self.base(), k_type="f16", v_type="f16", ctx=self.ctx,
                threads=self.threads, label=f"recipe {plan.recipe.name}",
            )  # fmt: skip
        except NativeError as e:
            raise RecipeError(str(e)) from None
        self._measured[self._key(plan)] = Measured(plan, applied, kld)
        return self._measured[self._key(plan)]
