"""A recipe is data: tensor groups (by name and layer range) mapped to ggml types.

    name = "moe-16g"
    base_type = "Q4_K"           # every quantizable tensor that no rule names
    embeddings = "Q6_K"          # token_embd (llama-quantize --token-embedding-type)
    output = "Q6_K"              # output.weight (--output-tensor-type)
    [[rules]]                    # the first rule that matches a tensor decides, as in llama-quantize
    tensors = "attn"             # a group (GROUPS) or "re:<regex>" on the tensor name
    type = "Q8_0"
    [[rules]]
    tensors = "exps"
    layers = "0-7"
    type = "IQ4_XS"

Norms, router gates and the other tensors llama-quantize never quantizes keep their type.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from edgebench.quant.types import RecipeError, canonical_type

__all__ = ["GROUPS", "Recipe", "Rule", "load_recipe", "parse_layers", "save_recipe"]

# Group → the tensor-name suffix after "blk.N." (llama.cpp's LLM_TN names).
GROUPS: dict[str, str] = {
    "attn": r"attn_(q|k|v|qkv|output)",
    "attn_q": r"attn_q",
    "attn_k": r"attn_k",
    "attn_v": r"attn_v",
    "attn_qkv": r"attn_qkv",
    "attn_output": r"attn_output",
    "ffn": r"ffn_(up|gate|down)",
    "ffn_up": r"ffn_up",
    "ffn_gate": r"ffn_gate",
    "ffn_down": r"ffn_down",
    "exps": r"ffn_(up|gate|down)_exps",
    "ffn_up_exps": r"ffn_up_exps",
    "ffn_gate_exps": r"ffn_gate_exps",
    "ffn_down_exps": r"ffn_down_exps",
    "shexp": r"ffn_(up|gate|down)_shexp",
    "ssm": r"ssm_(in|out|x|dt)",
}
_UNSUPPORTED_RE = re.compile(r"\(\?[P<=!]|\(\?<|\\[AZzbBg]")  # Python-only or differing in std::regex


def _ik(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get("ik"))


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tensors: str
    layers: str | None = None
    type: str

    @field_validator("type")
    @classmethod
    def _type(cls, v: str, info: ValidationInfo) -> str:
        return canonical_type(v, "rule type", ik=_ik(info))

    @field_validator("tensors")
    @classmethod
    def _tensors(cls, v: str) -> str:
        v = v.strip()
        if v.startswith("re:"):
            rx = v[3:]
            # llama-quantize lowercases the pattern (tools/quantize: parse_tensor_type) and reads
            # a --tensor-type-file split on whitespace: either would change this regex silently.
            if rx != rx.lower() or re.search(r"\s", rx) or not rx:
                raise ValueError(
                    f"regex {rx!r}: llama-quantize lowercases patterns and splits on spaces; "
                    "use lowercase and no whitespace (e.g. [0-9] for \\d is fine, \\D is not)"
                )
            if _UNSUPPORTED_RE.search(rx):
                raise ValueError(
                    f"regex {rx!r}: lookbehind, named groups and \\A\\Z\\b anchors differ in "
                    "llama-quantize's std::regex; use ^ $ and plain groups"
                )
            try:
                re.compile(rx)
            except re.error as e:
                raise ValueError(f"regex {rx!r}: {e}") from None
            return v
        if v not in GROUPS:
            raise ValueError(f"tensor group {v!r}: one of {', '.join(GROUPS)} or re:<regex>")
        return v

    def label(self) -> str:
        return self.tensors + (f"[{self.layers}]" if self.layers else "")


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    base_type: str
    embeddings: str | None = None
    output: str | None = None
    rules: tuple[Rule, ...] = ()
    source_sha256: str | None = None
    build: str | None = None

    @field_validator("base_type")
    @classmethod
    def _base(cls, v: str, info: ValidationInfo) -> str:
        t = canonical_type(v, "base_type", ik=_ik(info))
        if t in ("F32", "F16", "BF16"):
            # llama-quantize applies --tensor-type only when the file type is a quantized one.
            raise ValueError(
                f"base_type {t}: must be a quantized type (llama-quantize ignores every "
                "--tensor-type under a float file type); name the float groups in rules"
            )
        return t

    @field_validator("embeddings", "output")
    @classmethod
    def _flag(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else canonical_type(v, "embeddings/output", ik=_ik(info))

    def types(self) -> set[str]:
        return {
            self.base_type,
            *(r.type for r in self.rules),
            *(t for t in (self.embeddings, self.output) if t),
        }


def parse_layers(spec: str, n_layer: int) -> list[int]:
    """ "0-7", "8-" (to the last layer), "3", "0-3,10-12" → sorted layer indices."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:(-)(\d*))?", part)
        if m is None:
            raise RecipeError(f"layers {spec!r}: not a layer range (e.g. 0-7, 8-, 3, 0-3,10-12)")
        lo = int(m.group(1))
        hi = (int(m.group(3)) if m.group(3) else n_layer - 1) if m.group(2) else lo
        if lo > hi or hi >= n_layer:
            raise RecipeError(f"layers {spec!r}: the model has layers 0-{n_layer - 1}")
        out.update(range(lo, hi + 1))
    return sorted(out)


def load_recipe(path: Path, *, ik: bool = False) -> Recipe:
    """A recipe from a .toml or .json file; every problem is one line naming the file.
    ik: ik_llama.cpp's own types are allowed (a recipe to emit for that fork, never applied here)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise RecipeError(f"recipe {path}: cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise RecipeError(
            f"recipe {path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'} ({e})"
        ) from None
    try:
        return Recipe.model_validate(data, context={"ik": ik})
    except RecipeError as e:
        raise RecipeError(f"recipe {path}: {e}") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "recipe"
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise RecipeError(f"recipe {path}: {where}: {msg}") from None


def save_recipe(recipe: Recipe, path: Path) -> Path:
    data = recipe.model_dump(exclude_none=True)
    data["rules"] = [r.model_dump(exclude_none=True) for r in recipe.rules]
    path.write_text(json.dumps(data, indent=2) + "\n" if path.suffix == ".json" else tomli_w.dumps(data))
    return path
