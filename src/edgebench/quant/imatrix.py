"""Importance matrices: made with llama-imatrix on a shipped text, or the user's own file; read
for what llama-quantize writes about them into the header (quantize.imatrix.*)."""

from __future__ import annotations

from pathlib import Path

import gguf

from edgebench.host.busy import quality_threads
from edgebench.quant.preview import ImatrixMeta
from edgebench.quant.types import RecipeError
from edgebench.runtime import proc
from edgebench.runtime.flags import imatrix_argv
from edgebench.runtime.locate import Runtime
from edgebench.textsafe import one_line

__all__ = ["make_imatrix", "read_imatrix"]


def read_imatrix(path: Path) -> ImatrixMeta:
    """The GGUF imatrix's datasets, chunk count and entries (tensors with an `.in_sum2`)."""
    try:
        r = gguf.GGUFReader(path)
    except FileNotFoundError:
        raise RecipeError(f"imatrix {path}: no such file") from None
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise RecipeError(f"imatrix {path}: not a GGUF imatrix ({one_line(str(e), 120)})") from None
    fields = r.fields
    if "imatrix.chunk_count" not in fields:
        raise RecipeError(
            f"imatrix {path}: no imatrix.chunk_count key (the legacy .dat format is not read here)"
        )
    chunks = int(fields["imatrix.chunk_count"].contents())
    ds = fields.get("imatrix.datasets")
    datasets = [str(x) for x in ds.contents()] if ds is not None else []
    entries = sum(1 for t in r.tensors if t.name.endswith(".in_sum2"))
    if entries == 0:
        raise RecipeError(f"imatrix {path}: holds no .in_sum2 entries")
    return ImatrixMeta(
        file=str(path), dataset=datasets[0] if datasets else None, entries=entries, chunks=chunks
    )


def make_imatrix(
    runtime: Runtime, source: Path, text: Path, out: Path, *, ctx: int = 512, threads: int | None = None
) -> Path:
    """llama-imatrix over `text` (reused when `out` exists: same source, same text, same file name)."""
    if out.is_file():
        return out
    tmp = out.with_name(out.stem + ".partial.gguf")
    n = quality_threads(threads)  # the matrix does not depend on it: the spare cores
    argv = imatrix_argv(runtime.binary("llama-imatrix"), str(source), str(text), str(tmp), ctx=ctx, threads=n)
    res = proc.run(argv, timeout_s=6 * 3600)
    if not res.ok or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        lines = [ln for ln in (res.stdout + res.stderr).splitlines() if "error" in ln.lower()]
        raise RecipeError(
            f"llama-imatrix ({source.name}): {one_line(lines[-1] if lines else res.detail, 200)}"
        )
    tmp.replace(out)
    return out
