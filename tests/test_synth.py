"""The synthetic tiny llama: deterministic bytes, a sane vocabulary, and real llama.cpp runs it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgebench.models import read_model_info
from edgebench.runtime.locate import Runtime
from edgebench.testing import FType, tiny_vocab, write_tiny_llama

FTYPES: list[FType] = ["f32", "f16", "q8_0"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("ftype", FTYPES)
def test_same_arguments_same_bytes(tmp_path: Path, ftype: FType) -> None:
    a = write_tiny_llama(tmp_path / "a.gguf", ftype=ftype, seed=3)
    b = write_tiny_llama(tmp_path / "b.gguf", ftype=ftype, seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert _sha(write_tiny_llama(tmp_path / "c.gguf", ftype=ftype, seed=4)) != _sha(a)
    assert not list(tmp_path.glob("*.part"))


def test_vocab_shape() -> None:
    tokens, scores, types = tiny_vocab()
    assert len(tokens) == len(scores) == len(types) == len(set(tokens))
    assert 300 < len(tokens) < 1000
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert [t for t, k in zip(tokens, types, strict=True) if k == 6] == [f"<0x{b:02X}>" for b in range(256)]
    assert "\u2581the" in tokens and "\u2581hello" in tokens


@pytest.mark.parametrize("ftype", FTYPES)
def test_tensor_types_and_tokenizer_keys(tmp_path: Path, ftype: FType) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf", ftype=ftype, chat_template="{{ messages }}")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {n for n, ty in types.items() if ty == "F32"} >= {"output_norm.weight", "blk.0.attn_norm.weight"}
    assert types["blk.1.ffn_down.weight"] == types["token_embd.weight"] == ftype.upper()
    fields = reader.fields
    assert fields["tokenizer.ggml.model"].contents() == "llama"
    assert fields["tokenizer.ggml.bos_token_id"].contents() == 1
    assert fields["tokenizer.ggml.eos_token_id"].contents() == 2
    assert fields["tokenizer.chat_template"].contents() == "{{ messages }}"
    assert len(fields["tokenizer.ggml.tokens"].data) == len(tiny_vocab()[0])


def test_q8_0_holds_the_same_weights_as_f32(tmp_path: Path) -> None:
    def weight(ftype: FType) -> np.ndarray:
        reader = gguf.GGUFReader(write_tiny_llama(tmp_path / f"{ftype}.gguf", ftype=ftype, seed=7))
        t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)

    f32, q8 = weight("f32"), weight("q8_0")
    assert f32.std() == pytest.approx(0.02, rel=0.1)
    assert np.abs(f32 - q8).max() < 0.002


def test_per_layer_kv_list_is_an_array(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf", n_layer=3, n_head_kv=[1, 1, 1])
    field = gguf.GGUFReader(path).fields["llama.attention.head_count_kv"]
    assert field.types[0] == gguf.GGUFValueType.ARRAY
    assert read_model_info(path).n_head_kv == [1, 1, 1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ftype": "f8"},
        {"n_layer": 3, "n_head_kv": [2, 2]},
        {"n_layer": 2, "n_head_kv": [2, 1]},  # llama arch sizes K/V from layer 0
        {"n_head": 3},
        {"ftype": "q8_0", "n_ff": 100},
    ],
)
def test_rejects_models_llama_cpp_cannot_load(tmp_path: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        write_tiny_llama(tmp_path / "t.gguf", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "t.gguf").exists()


@pytest.mark.llama
@pytest.mark.parametrize("ftype", FTYPES)
def test_llama_bench_runs_it(tmp_path: Path, ftype: FType, runtime: Runtime) -> None:
    bench = runtime.binaries["llama-bench"]
    path = write_tiny_llama(tmp_path / f"tiny-{ftype}.gguf", ftype=ftype)
    res = subprocess.run(
        [str(bench), "-m", str(path), "-p", "16", "-n", "8", "-r", "1", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout)
    assert [(r["n_prompt"], r["n_gen"]) for r in rows] == [(16, 0), (0, 8)]
    assert all(r["avg_ts"] > 0 for r in rows)
    info = read_model_info(path)
    # llama.cpp counts the same parameters and tensor bytes as ModelInfo
    assert rows[0]["model_n_params"] == info.params
    assert rows[0]["model_size"] == sum(info.tensor_bytes.values())


@pytest.mark.llama
def test_llama_cli_generates_from_it(tmp_path: Path, runtime: Runtime) -> None:
    cli = runtime.binaries["llama-cli"]
    path = write_tiny_llama(tmp_path / "tiny.gguf", ftype="q8_0")
    res = subprocess.run(
        [str(cli), "-m", str(path), "-p", "hello world", "-n", "8", "-st", "--seed", "1", "-c", "256"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",  # random weights emit arbitrary byte tokens
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "hello world" in res.stdout
