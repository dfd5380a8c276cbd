"""Emit a recipe as commands (ours and ik_llama.cpp's) and run llama-quantize with it."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgebench.models.gguf import sha256_file
from edgebench.quant.preview import FilePlan, quantize_patterns
from edgebench.quant.recipe import Recipe
from edgebench.quant.types import FTYPE_FOR, RecipeError, build_has_type
from edgebench.runtime import proc
from edgebench.runtime.flags import quantize_argv
from edgebench.runtime.locate import Runtime
from edgebench.textsafe import one_line

__all__ = ["Applied", "apply_recipe", "ik_custom_q", "quantize_command", "write_tensor_type_file"]

_PROGRESS = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")


@dataclass(frozen=True)
class Applied:
    path: str
    file_bytes: int
    predicted_bytes: int
    sha256: str
    argv: tuple[str, ...]
    fallbacks: int  # "N of M tensor(s) required fallback quantization", as llama-quantize counted

    @property
    def size_error_pct(self) -> float:
        return 100.0 * (self.file_bytes - self.predicted_bytes) / self.predicted_bytes


def write_tensor_type_file(recipe: Recipe, n_layer: int, path: Path) -> Path:
    """--tensor-type-file: one `regex=type` per line, in rule order (the first match wins)."""
    lines = [f"{p}={r.type.lower()}" for r, p in quantize_patterns(recipe, n_layer)]
    path.write_text("".join(ln + "\n" for ln in lines))
    return path


def quantize_command(
    binary: str,
    plan: FilePlan,
    dst: Path,
    type_file: Path,
    *,
    imatrix: Path | None = None,
    threads: int | None = None,
) -> list[str]:
    r = plan.recipe
    return quantize_argv(
        binary, plan.source, str(dst), FTYPE_FOR[r.base_type], allow_requantize=plan.requantize, pure=True,
        token_embedding_type=r.embeddings, output_tensor_type=r.output,
        tensor_type_file=str(type_file) if r.rules else None,
        imatrix=str(imatrix) if imatrix is not None else None, threads=threads,
    )  # fmt: skip


def ik_custom_q(recipe: Recipe, n_layer: int, src: str, dst: str) -> str:
    """The same recipe for ik_llama.cpp's llama-quantize (--custom-q "regex=type,…"; its IQK types
    such as iq4_ks are accepted there, and cannot be run or sized by this build)."""
    q = ",".join(f"{p}={r.type.lower()}" for r, p in quantize_patterns(recipe, n_layer))
    parts = ["llama-quantize", "--pure"]
    if q:
        parts += ["--custom-q", q]
    if recipe.embeddings:
        parts += ["--token-embedding-type", recipe.embeddings.lower()]
    if recipe.output:
        parts += ["--output-tensor-type", recipe.output.lower()]
    parts += [src, dst, FTYPE_FOR.get(recipe.base_type, recipe.base_type)]
    return shlex.join(parts)


def check_build_types(runtime: Runtime, recipe: Recipe) -> None:
    binary = runtime.binary("llama-quantize")
    missing = sorted(t for t in recipe.types() if not build_has_type(binary, t))
    if missing:
        raise RecipeError(
            f"type {', '.join(missing)}: the llama.cpp build at {runtime.bin_dir} does not have it "
            "(llama-quantize says invalid ggml_type); use a newer build or another type"
        )


def apply_recipe(
    runtime: Runtime,
    plan: FilePlan,
    dst: Path,
    *,
    n_layer: int,
    imatrix: Path | None = None,
    threads: int | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> Applied:
    """Quantize into `dst` (written as dst.partial, renamed when complete) and check the result
    against the preview: its size and every tensor's type."""
    check_build_types(runtime, plan.recipe)
    tmp = dst.with_name(dst.name + ".partial")
    type_file = dst.with_name(dst.name + ".tensor-types.txt")
    write_tensor_type_file(plan.recipe, n_layer, type_file)
    argv = quantize_command(
        runtime.binary("llama-quantize"), plan, tmp, type_file, imatrix=imatrix, threads=threads
    )
    lines: list[str] = []

    def _line(ln: str) -> None:
        lines.append(ln)
        m = _PROGRESS.match(ln)
        if m and on_progress:
            on_progress(int(m.group(1)), int(m.group(2)), m.group(3))

    res = proc.run(argv, timeout_s=6 * 3600, on_line=_line)
    if not res.ok or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        errs = [ln for ln in lines if re.search(r"error|failed|exception|invalid", ln, re.I)]
        why = errs[-1] if errs else res.detail
        raise RecipeError(f"llama-quantize ({plan.recipe.name}): {one_line(why, 200)}")
    tmp.replace(dst)
    fb = re.search(r"(\d+) of \d+ tensor\(s\) required fallback", "\n".join(lines))
    return Applied(
        path=str(dst),
        file_bytes=dst.stat().st_size,
        predicted_bytes=plan.file_bytes,
        sha256=sha256_file(dst),
        argv=tuple(argv),
        fallbacks=int(fb.group(1)) if fb else 0,
    )
