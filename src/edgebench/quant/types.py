"""The ggml types llama-quantize writes, their block sizes, and its per-tensor rules
(src/llama-quant.cpp of the pinned llama.cpp: tensor_type_fallback, tensor_requires_imatrix)."""

from __future__ import annotations

import functools
import re

import gguf

from edgebench.errors import ConfigError
from edgebench.runtime import proc
from edgebench.runtime.flags import quantize_type_probe_argv

__all__ = [
    "FLOAT_TYPES",
    "FTYPE_FOR",
    "IQK_TYPES",
    "NEEDS_IMATRIX",
    "RecipeError",
    "block_of",
    "bpw",
    "build_has_type",
    "canonical_type",
    "fallback",
    "row_bytes",
]


class RecipeError(ConfigError):
    """A recipe that cannot be sized, applied or met (the cause in one line)."""


# llama-quantize's file-type argument whose default tensor type is the key (with --pure every
# tensor gets it unless a --tensor-type names another): llama_ftype_get_default_type inverted.
FTYPE_FOR: dict[str, str] = {
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q2_K": "Q2_K", "Q3_K": "Q3_K", "Q4_K": "Q4_K", "Q5_K": "Q5_K", "Q6_K": "Q6_K",
    "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_M", "IQ3_XXS": "IQ3_XXS", "IQ3_S": "IQ3_S",
    "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
    "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0", "MXFP4": "MXFP4_MOE", "Q1_0": "Q1_0",
}  # fmt: skip
FLOAT_TYPES = ("F32", "F16", "BF16")

# Types llama-quantize refuses to write without an importance matrix (tensor_requires_imatrix;
# token_embd and output are exempt).
NEEDS_IMATRIX = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ1_S", "IQ1_M"})

# ik_llama.cpp's own types (its --custom-q accepts them); mainline llama.cpp has none of them.
IQK_TYPES = frozenset(
    {
        "IQ1_BN", "IQ2_BN", "IQ1_KT", "IQ2_K", "IQ2_KS", "IQ2_KL", "IQ2_KT", "IQ3_K", "IQ3_KS", "IQ3_KT",
        "IQ4_K", "IQ4_KS", "IQ4_KSS", "IQ4_KT", "IQ5_K", "IQ5_KS", "IQ6_K", "Q8_K_R8", "Q8_KV",
    }
)  # fmt: skip

# tensor_type_fallback: a row whose length is not a multiple of the type's block.
_FALLBACK: dict[str, str] = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    **dict.fromkeys(("Q2_K", "Q3_K", "TQ1_0", "TQ2_0", "Q2_0"), "Q4_0"),
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
}


def canonical_type(name: str, what: str, *, ik: bool = False) -> str:
    """The ggml type name llama-quantize knows (case-insensitive), or one line saying why not.
    ik: ik_llama.cpp's types are accepted too (a recipe only emitted for that fork)."""
    t = str(name).strip().upper()
    if t in IQK_TYPES and ik:
        return t
    if t in IQK_TYPES:
        raise RecipeError(
            f"{what}: {name!r} is an ik_llama.cpp type; mainline llama.cpp (the build edgebench runs) "
            "cannot write or run it — emit the recipe with --ik for that fork"
        )
    if t in FLOAT_TYPES or t in FTYPE_FOR:
        if t not in _SIZES:
            raise RecipeError(f"{what}: {t}: the gguf-py edgebench pins has no block size for it")
        return t
    raise RecipeError(
        f"{what}: {name!r} is not a type llama-quantize writes "
        f"(one of {', '.join((*FLOAT_TYPES, *FTYPE_FOR))})"
    )


_SIZES: dict[str, tuple[int, int]] = {t.name: v for t, v in gguf.GGML_QUANT_SIZES.items()}


def block_of(t: str) -> int:
    return _SIZES[t][0]


def bpw(t: str) -> float:
    block, size = _SIZES[t]
    return 8.0 * size / block


def row_bytes(t: str, ncols: int) -> int:
    block, size = _SIZES[t]
    return ncols // block * size


def fallback(t: str, ncols: int) -> tuple[str, bool]:
    """(type written, whether llama-quantize fell back) for a row of `ncols` asked to be `t`."""
    if t in FLOAT_TYPES or ncols % block_of(t) == 0:
        return t, False
    out = _FALLBACK.get(t, t)
    if ncols % block_of(out):
        out = "F16"  # "must use F16 due to unusual shape"
    return out, True


@functools.lru_cache(maxsize=256)
def build_has_type(quantize_binary: str, t: str) -> bool:
    """Ask the build's own llama-quantize: it parses --tensor-type before it opens any file and
    prints "invalid ggml_type" for a type its ggml does not have."""
    res = proc.run(quantize_type_probe_argv(quantize_binary, t), timeout_s=60)
    return re.search(r"invalid ggml_type", res.stdout + res.stderr) is None
