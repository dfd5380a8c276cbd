"""Quantization recipes against the real llama-quantize: the preview is the produced file, byte for
byte, tensor for tensor; every recipe that cannot work is one clear line before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.kvlab.lab import load_text
from edgebench.models.gguf import _read_header, read_model_info
from edgebench.quant.apply import apply_recipe, ik_custom_q
from edgebench.quant.fit import ram_plan
from edgebench.quant.imatrix import make_imatrix, read_imatrix
from edgebench.quant.preview import plan_file
from edgebench.quant.recipe import Recipe, Rule, load_recipe, save_recipe
from edgebench.quant.types import RecipeError, build_has_type
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.testing.zoo import write_f16_source

DENSE = [
    Recipe(name="u-q4k", base_type="q4_k"),  # ffn_down falls back to Q5_0, attn_output to F16
    Recipe(name="u-q4_0", base_type="q4_0", embeddings="q4_0", output="q4_0"),
    Recipe(
        name="mix1",
        base_type="q8_0",
        embeddings="q6_k",
        output="q8_0",
        rules=(Rule(tensors="attn", type="q4_k"), Rule(tensors="ffn_down", layers="0", type="q2_k")),
    ),
    Recipe(
        name="mix2",
        base_type="q3_k",
        rules=(
            Rule(tensors="re:attn_(q|k)", type="q5_1"),
            Rule(tensors="ffn_up", layers="1-", type="iq4_nl"),
        ),
    ),
    Recipe(name="u-q6k", base_type="q6_k", embeddings="q8_0"),
]
MOE = [
    Recipe(name="u-q4k", base_type="q4_k"),
    Recipe(
        name="moe1",
        base_type="q8_0",
        rules=(Rule(tensors="exps", layers="0", type="q4_k"), Rule(tensors="exps", layers="1-", type="q2_k")),
    ),
    Recipe(
        name="moe2",
        base_type="q4_0",
        output="q6_k",
        rules=(Rule(tensors="attn", type="q8_0"), Rule(tensors="ffn_down_exps", type="q5_k")),
    ),
    Recipe(name="moe3", base_type="iq4_xs", embeddings="q4_0"),
    Recipe(name="u-q5_0", base_type="q5_0"),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("quant-src")
    return {k: write_f16_source(d / f"{k}.gguf", k) for k in ("dense", "moe", "narrow")}


@pytest.mark.parametrize(("kind", "recipe"), [*(("dense", r) for r in DENSE), *(("moe", r) for r in MOE)])
def test_preview_is_the_file_llama_quantize_writes(
    runtime: Runtime, sources: dict[str, Path], tmp_path: Path, kind: str, recipe: Recipe
) -> None:
    plan = plan_file(sources[kind], recipe)
    out = apply_recipe(runtime, plan, tmp_path / "out.gguf", n_layer=3)
    assert out.file_bytes == plan.file_bytes  # exact, not within 0.1 %
    header, _ = _read_header(Path(out.path))
    written = {t.name: t.ggml_type for t in header.tensors}
    assert written == {t.name: t.dst_type for t in plan.tensors}
    assert out.fallbacks == sum(1 for t in plan.tensors if t.fell_back_from)


def test_fallbacks_follow_llama_quantize(sources: dict[str, Path]) -> None:
    plan = {t.name: t for t in plan_file(sources["dense"], DENSE[0]).tensors}
    assert plan["blk.0.ffn_down.weight"].dst_type == "Q5_0"  # rows of 352: Q4_K → Q5_0
    assert plan["blk.0.attn_output.weight"].dst_type == "F16"  # rows of 144: nothing fits
    assert plan["blk.0.ffn_norm.weight"].dst_type == "F32"  # never quantized
    assert plan["blk.0.ffn_up.weight"].dst_type == "Q4_K"


def test_rule_order_and_layers_decide(sources: dict[str, Path]) -> None:
    """The first matching rule wins (llama-quantize's order); a layer range reaches only its layers."""
    r = Recipe(
        name="order",
        base_type="q8_0",
        rules=(Rule(tensors="ffn_up", layers="2", type="q4_0"), Rule(tensors="ffn", type="q5_0")),
    )
    plan = {t.name: t.dst_type for t in plan_file(sources["dense"], r).tensors}
    assert plan["blk.2.ffn_up.weight"] == "Q4_0"
    assert plan["blk.1.ffn_up.weight"] == "Q5_0"
    assert plan["blk.0.attn_q.weight"] == "Q8_0"


def test_same_recipe_same_build_same_bytes(
    runtime: Runtime, sources: dict[str, Path], tmp_path: Path
) -> None:
    plan = plan_file(sources["moe"], MOE[1])
    a = apply_recipe(runtime, plan, tmp_path / "a.gguf", n_layer=3)
    b = apply_recipe(runtime, plan, tmp_path / "b.gguf", n_layer=3)
    assert a.sha256 == b.sha256


def test_ram_preview_uses_the_recipe_layout(sources: dict[str, Path]) -> None:
    info = read_model_info(sources["dense"])
    cfg = RuntimeConfig(ctx=2048)
    small = ram_plan(info, plan_file(sources["dense"], DENSE[1]), cfg)
    big = ram_plan(info, plan_file(sources["dense"], DENSE[2]), cfg)
    assert small.kv_mib == big.kv_mib  # the KV cache does not depend on the weights' types
    assert small.host_total_mib < big.host_total_mib


def _one_line(exc: pytest.ExceptionInfo[RecipeError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        (
            Recipe(name="x", base_type="q4_0", rules=(Rule(tensors="shexp", type="q8_0"),)),
            "matches no tensor",
        ),
        (
            Recipe(name="x", base_type="q4_0", rules=(Rule(tensors="re:^nothing_here", type="q8_0"),)),
            "matches no",
        ),
        (
            Recipe(name="x", base_type="q4_0", rules=(Rule(tensors="ffn", layers="2-9", type="q8_0"),)),
            "layers 0-2",
        ),
        (
            Recipe(name="x", base_type="q4_0", rules=(Rule(tensors="ffn", type="iq2_xxs"),)),
            "importance matrix",
        ),
        (
            Recipe(name="x", base_type="q4_0", rules=(Rule(tensors="re:attn", layers="0", type="q8_0"),)),
            "layers go",
        ),
    ],
)
def test_recipes_that_cannot_work_are_one_line(sources: dict[str, Path], recipe: Recipe, needle: str) -> None:
    with pytest.raises(RecipeError) as exc:
        plan_file(sources["dense"], recipe)
    assert needle in _one_line(exc)


def test_embeddings_type_that_does_not_fit_the_rows(sources: dict[str, Path]) -> None:
    """llama-quantize applies no fallback to --token-embedding-type: it would abort mid-file."""
    with pytest.raises(RecipeError) as exc:
        plan_file(sources["narrow"], Recipe(name="x", base_type="q4_0", embeddings="q4_k"))
    assert "rows of 160" in _one_line(exc) and "Q4_K" in str(exc.value)


def test_source_already_below_the_requested_type(
    runtime: Runtime, sources: dict[str, Path], tmp_path: Path
) -> None:
    low = apply_recipe(runtime, plan_file(sources["dense"], DENSE[1]), tmp_path / "q4_0.gguf", n_layer=3)
    with pytest.raises(RecipeError) as exc:
        plan_file(Path(low.path), Recipe(name="up", base_type="q8_0"))
    msg = _one_line(exc)
    assert "is Q4_0" in msg and "Q8_0" in msg and "requantizing up" in msg
    # down (or equal) is allowed, as a requantization
    down = plan_file(
        Path(low.path), Recipe(name="down", base_type="q4_0", rules=(Rule(tensors="ffn_up", type="q2_k"),))
    )
    assert down.requantize


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"name": "x", "base_type": "iq4_ks"}, "ik_llama.cpp type"),
        ({"name": "x", "base_type": "q4_0_4_4"}, "not a type llama-quantize writes"),
        ({"name": "x", "base_type": "f16"}, "must be a quantized type"),
        ({"name": "x", "base_type": "q4_0", "rules": [{"tensors": "re:\\D+", "type": "q8_0"}]}, "lowercases"),
        (
            {"name": "x", "base_type": "q4_0", "rules": [{"tensors": "re:(?<=a)b", "type": "q8_0"}]},
            "lookbehind",
        ),
        ({"name": "x", "base_type": "q4_0", "rules": [{"tensors": "re:[", "type": "q8_0"}]}, "regex"),
        (
            {"name": "x", "base_type": "q4_0", "rules": [{"tensors": "attention", "type": "q8_0"}]},
            "tensor group",
        ),
        ({"name": "x", "base_type": "q4_0", "rules": [{"tensors": "attn", "typ": "q8_0"}]}, "rules.0"),
        ({"name": "../evil", "base_type": "q4_0"}, "name"),
    ],
)
def test_bad_recipe_files_are_one_line(tmp_path: Path, data: dict[str, object], needle: str) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps(data))
    with pytest.raises(RecipeError) as exc:
        load_recipe(f)
    msg = _one_line(exc)
    assert needle in msg and str(f) in msg


def test_recipe_round_trips_through_toml(tmp_path: Path) -> None:
    path = save_recipe(DENSE[2], tmp_path / "r.toml")
    assert load_recipe(path) == DENSE[2]


def test_the_build_is_asked_which_types_it_has(runtime: Runtime) -> None:
    q = runtime.binary("llama-quantize")
    assert build_has_type(q, "Q4_K") and build_has_type(q, "IQ4_NL")
    assert not build_has_type(q, "IQ4_KS")  # ik_llama.cpp's: the real binary says invalid ggml_type


def test_ik_llama_form_accepts_its_types(tmp_path: Path) -> None:
    f = tmp_path / "seed004.toml"
    f.write_text(
        'name = "seed004"\nbase_type = "q8_0"\nembeddings = "q6_k"\noutput = "q6_k"\n'
        '[[rules]]\ntensors = "exps"\nlayers = "0-7"\ntype = "iq4_ks"\n'
        '[[rules]]\ntensors = "exps"\nlayers = "8-"\ntype = "iq2_ks"\n'
    )
    with pytest.raises(RecipeError):
        load_recipe(f)  # mainline cannot run it
    cmd = ik_custom_q(load_recipe(f, ik=True), 40, "src.gguf", "out.gguf")
    assert "--custom-q" in cmd and "=iq4_ks" in cmd and "(8|9|10" in cmd and "39)" in cmd


def test_cli_preview_and_refusal(
    monkeypatch: pytest.MonkeyPatch, sources: dict[str, Path], tmp_path: Path
) -> None:
    rf = save_recipe(DENSE[2], tmp_path / "mix.toml")
    r = cli(
        monkeypatch, "quant", "preview", str(sources["dense"]), "--recipe", str(rf), "--ctx", "1024", "--json"
    )
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["file_bytes"] == plan_file(sources["dense"], DENSE[2]).file_bytes
    assert data["ram_mib"] > data["file_bytes"] / 2**20
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\nbase_type = "q4_0"\n[[rules]]\ntensors = "shexp"\ntype = "q8_0"\n')
    r = cli(monkeypatch, "quant", "preview", str(sources["dense"]), "--recipe", str(bad))
    assert "matches no tensor" in r.error_line()


def test_imatrix_types_with_a_made_imatrix_are_exact(
    runtime: Runtime, sources: dict[str, Path], tmp_path: Path
) -> None:
    """IQ2_XXS needs an importance matrix: llama-imatrix makes one on the shipped text, and the
    header then carries quantize.imatrix.* — still predicted to the byte."""
    text = tmp_path / "t.txt"
    text.write_text(load_text())
    im = make_imatrix(runtime, sources["dense"], text, tmp_path / "im.gguf", ctx=256)
    meta = read_imatrix(im)
    assert meta.entries > 0 and meta.chunks > 0 and meta.dataset == str(text)
    r = Recipe(name="iq2", base_type="q4_k", rules=(Rule(tensors="ffn_up", type="iq2_xxs"),))
    with pytest.raises(RecipeError, match="importance matrix"):
        plan_file(sources["dense"], r)
    plan = plan_file(sources["dense"], r, imatrix=meta)
    out = apply_recipe(runtime, plan, tmp_path / "iq2.gguf", n_layer=3, imatrix=im)
    assert out.file_bytes == plan.file_bytes
    assert {t.dst_type for t in plan.tensors if "ffn_up" in t.name} == {"IQ2_XXS"}


def test_a_file_that_is_no_imatrix_is_one_line(sources: dict[str, Path], tmp_path: Path) -> None:
    for bad in (sources["dense"], tmp_path / "missing.gguf"):
        with pytest.raises(RecipeError) as exc:
            read_imatrix(bad)
        assert str(bad) in _one_line(exc)
