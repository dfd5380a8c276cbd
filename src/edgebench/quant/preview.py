"""The exact file llama-quantize will write for a recipe, computed from the source's header alone.

Per tensor, the type is decided as llama_tensor_get_type does under --pure (src/llama-quant.cpp):
tensors it never quantizes keep theirs; --token-embedding-type / --output-tensor-type win for
token_embd / output; else the first --tensor-type regex that matches (std::regex_search), else
the file type's default; then tensor_type_fallback for a row that is not a whole number of
blocks. The file is the input's metadata (+ general.quantization_version and general.file_type,
- split keys, + the quantize.imatrix.* keys) and tensor infos, padded to 32 bytes, then every
tensor's data padded to 32 bytes, in llama_model_loader's weights_map order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgebench.models.gguf import _read_header  # the one GGUF header walker (checked, one-line errors)
from edgebench.quant.recipe import GROUPS, Recipe, Rule, parse_layers
from edgebench.quant.types import FLOAT_TYPES, NEEDS_IMATRIX, RecipeError, block_of, bpw, fallback, row_bytes

__all__ = ["FilePlan", "ImatrixMeta", "TensorPlan", "plan_file", "quantizable", "quantize_patterns"]

ALIGN = 32  # GGUF_DEFAULT_ALIGNMENT: llama-quant pads with it whatever general.alignment says

# tensor_allows_quantization: substrings of tensors it never quantizes (whatever the arch).
_NEVER = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
    "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
    "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
    "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
    ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)  # fmt: skip
_NEVER_EXACT = ("position_embd.weight", "token_types.weight")
_TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")
_LAYER = re.compile(r"^blk\.\s*([+-]?\d+)")


@dataclass(frozen=True)
class ImatrixMeta:
    """What llama-quantize writes about an importance matrix (tools/quantize: quantize.imatrix.*)."""

    file: str  # the path as passed on the command line
    dataset: str | None
    entries: int
    chunks: int


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    src_type: str
    dst_type: str
    src_bytes: int
    dst_bytes: int
    decided_by: str  # "kept" (never quantized), "embeddings", "output", a rule's label, "base"
    fell_back_from: str | None = None  # the type asked for when the row did not fit its blocks


@dataclass(frozen=True)
class FilePlan:
    source: str
    recipe: Recipe
    tensors: tuple[TensorPlan, ...]
    header_bytes: int  # metadata + tensor infos, before padding
    file_bytes: int
    notes: tuple[str, ...] = ()
    requantize: bool = False  # some tensor goes from one quantized type to another

    @property
    def weight_bytes(self) -> int:
        return sum(t.dst_bytes for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.dst_type] = out.get(t.dst_type, 0) + t.dst_bytes
        return out

    def layout(self) -> tuple[tuple[str, str, tuple[int, ...], int, int], ...]:
        """(name, type, shape, bytes, data offset) in file order: the memory planner's input."""
        out, off = [], 0
        for t in self.tensors:
            out.append((t.name, t.dst_type, t.shape, t.dst_bytes, off))
            off += _pad(t.dst_bytes)
        return tuple(out)


def _pad(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def _n_dims(shape: tuple[int, ...]) -> int:
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return n


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    return (
        _n_dims(shape) >= 2
        and name.endswith("weight")
        and not any(s in name for s in _NEVER)
        and name not in _NEVER_EXACT
    )


def _order(name: str) -> tuple[int, str]:
    """llama_model_loader::weight_name_comparer: layer number (sscanf "blk.%d."; -1 without), then name."""
    m = _LAYER.match(name)
    return (int(m.group(1)) if m else -1, name)


def quantize_patterns(recipe: Recipe, n_layer: int) -> list[tuple[Rule, str]]:
    """Each rule and the --tensor-type regex llama-quantize gets for it (lowercase, no spaces)."""
    out = []
    for r in recipe.rules:
        if r.tensors.startswith("re:"):
            if r.layers:
                raise RecipeError(f"rule {r.label()}: layers go with a tensor group; put them in the regex")
            out.append((r, r.tensors[3:]))
            continue
        layers = (
            r"\d+" if r.layers is None else "(" + "|".join(map(str, parse_layers(r.layers, n_layer))) + ")"
        )
        out.append((r, rf"^blk\.{layers}\.{GROUPS[r.tensors]}\.weight$"))
    return out


def _kv_entry(key: str, value: str | int) -> int:
    """Bytes of one GGUF key/value: key (u64 length + bytes), u32 type, value (u32, or u64 + bytes)."""
    v = 4 if isinstance(value, int) else 8 + len(value.encode())
    return 8 + len(key.encode()) + 4 + v


def plan_file(source: Path, recipe: Recipe, *, imatrix: ImatrixMeta | None = None) -> FilePlan:
    header, _size = _read_header(source)
    n_layer = next(
        (int(v) for k, v in header.kv.items() if k.endswith(".block_count") and isinstance(v, int)), 0
    )
    patterns = [(r, p, re.compile(p)) for r, p in quantize_patterns(recipe, max(n_layer, 1))]
    used: set[Rule] = set()
    plans: list[TensorPlan] = []
    notes: list[str] = []
    requant = False
    needs_imatrix: list[str] = []
    for t in sorted(header.tensors, key=lambda t: _order(t.name)):
        ncols = t.shape[0] if t.shape else 1
        src = t.ggml_type
        decided, asked = "kept", src
        if quantizable(t.name, t.shape):
            rule = next(((r, rx) for r, _p, rx in patterns if rx.search(t.name)), None)
            if recipe.embeddings and t.name in _TOKEN_EMBD and not (t.name != "token_embd.weight" and rule):
                decided, asked = "embeddings", recipe.embeddings
            elif recipe.output and t.name == "output.weight":
                decided, asked = "output", recipe.output
            elif rule is not None:
                used.add(rule[0])
                decided, asked = rule[0].label(), rule[0].type
            else:
                decided, asked = "base", recipe.base_type
        dst, fell = asked, False
        if decided in ("embeddings", "output"):
            if asked not in FLOAT_TYPES and ncols % block_of(asked):
                # llama-quantize applies no fallback to these two flags: it would abort mid-file.
                raise RecipeError(
                    f"{decided} type {asked}: {t.name} has rows of {ncols}, not a multiple of {asked}'s "
                    f"block of {block_of(asked)}; pick a type with blocks of 32"
                )
        elif decided != "kept":
            dst, fell = fallback(asked, ncols)
        if dst != src and src not in FLOAT_TYPES:
            requant = True
            if asked in FLOAT_TYPES or bpw(asked) > bpw(src) + 1e-9:
                raise RecipeError(
                    f"{t.name} is {src} ({bpw(src):.2f} bits/weight) in the source; the recipe asks "
                    f"{asked} ({decided}): requantizing up adds size, not precision — quantize from an "
                    "F16/BF16 source or ask for ≤ the source's type"
                )
            if fell and bpw(dst) > bpw(src) + 1e-9:
                notes.append(
                    f"{t.name}: {asked} falls back to {dst} on rows of {ncols}, "
                    f"more bits than the source's {src}"
                )
        if decided not in ("kept", "embeddings", "output") and dst in NEEDS_IMATRIX and imatrix is None:
            needs_imatrix.append(t.name)
        n_rows = t.n_elements // ncols if ncols else 0
        dst_bytes = t.n_bytes if dst == src else n_rows * row_bytes(dst, ncols)
        plans.append(
            TensorPlan(t.name, t.shape, src, dst, t.n_bytes, dst_bytes, decided, asked if fell else None)
        )
    for r, _p, _rx in patterns:
        if r not in used:
            raise RecipeError(
                f"rule {r.label()} = {r.type}: matches no tensor of {source.name} that llama-quantize "
                "quantizes (check the group, layers or regex)"
            )
    if needs_imatrix:
        types = sorted({p.dst_type for p in plans if p.name in needs_imatrix})
        raise RecipeError(
            f"{', '.join(types)} needs an importance matrix ({len(needs_imatrix)} tensors, "
            f"e.g. {needs_imatrix[0]}): pass --imatrix FILE or --make-imatrix"
        )
    fell_n = sum(1 for p in plans if p.fell_back_from)
    if fell_n:
        notes.append(f"{fell_n} tensor(s) fall back to another type (rows not a whole number of blocks)")
    header_bytes = _header_bytes(header.meta_end, header.kv_bytes, imatrix)
    file_bytes = _pad(header_bytes) + sum(_pad(p.dst_bytes) for p in plans)
    return FilePlan(str(source), recipe, tuple(plans), header_bytes, file_bytes, tuple(notes), requant)


def _header_bytes(meta_end: int, kv_bytes: dict[str, int], imx: ImatrixMeta | None) -> int:
    """The input's header with llama-quantize's key changes; the tensor infos keep their size (a
    type is a u32 and the offset a u64 whatever they hold)."""
    size = meta_end
    added: dict[str, str | int] = {"general.quantization_version": 2, "general.file_type": 0}
    if imx is not None:
        added["quantize.imatrix.file"] = imx.file[:127]  # strncpy into a 128-byte val_str
        if imx.dataset is not None:
            added["quantize.imatrix.dataset"] = imx.dataset[:127]
        added["quantize.imatrix.entries_count"] = imx.entries
        if imx.chunks > 0:
            added["quantize.imatrix.chunks_count"] = imx.chunks
    for key, value in added.items():
        size += _kv_entry(key, value) - kv_bytes.get(key, 0)  # set: replaces the key in place
    for key in ("split.no", "split.count", "split.tensors.count"):
        size -= kv_bytes.get(key, 0)
    return size
