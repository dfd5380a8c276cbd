"""Fuzz: a few hundred mutated GGUFs through `edgebench models add` and `edgebench plan`.

Start from two tiny synthetic models (llama, and the attention + Mamba hybrid jamba), replace,
drop or add metadata values (NaN, inf, negative, zero, huge, wrong types, wrong array lengths,
other architectures, control characters and Rich markup in strings), and flip random bytes or cut
the files short. Every case must end in exit 0 or in exactly one `edgebench: error:` line naming
the file: never an internal error (exit 70), never a traceback or a second line. A model that
`models add` accepts must plan: finite, positive, not absurd. Seeded: the same cases every run.

In-process (`edgebench.cli.main`, the console script's entry point) to stay fast; a sample also
goes through the real command in a subprocess, with a timeout, for the hang check.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli_inproc import Result, run
from edgebench.testing.synth import write_tiny_jamba, write_tiny_llama
from gguf_edit import VT, GGUFTemplate, Value
from helpers import edgebench

SEED = 20240610
N_META = 260  # metadata mutations, split over the two base models
N_BYTES = 60  # random byte flips and truncations
N_SUBPROCESS = 3  # of the cases above, also run through the real CLI (~4 s each on a busy machine)

_INTS = (VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64)
_RANGE = {
    VT.UINT8: (0, 2**8 - 1),
    VT.INT8: (-(2**7), 2**7 - 1),
    VT.UINT16: (0, 2**16 - 1),
    VT.INT16: (-(2**15), 2**15 - 1),
    VT.UINT32: (0, 2**32 - 1),
    VT.INT32: (-(2**31), 2**31 - 1),
    VT.UINT64: (0, 2**64 - 1),
    VT.INT64: (-(2**63), 2**63 - 1),
}
# Keys the header reader or the planner read besides those the base models carry.
_EXTRA = (
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "attention.recurrent_layers",
    "expert_count",
    "expert_used_count",
    "expert_feed_forward_length",
    "expert_shared_feed_forward_length",
    "expert_shared_count",
    "nextn_predict_layers",
    "full_attention_interval",
    "vocab_size",
    "ssm.conv_kernel",
    "ssm.inner_size",
    "ssm.state_size",
    "ssm.group_count",
    "ssm.time_step_rank",
    "wkv.head_size",
    "token_shift_count",
    "shortconv.l_cache",
    "kda.head_dim",
)
_ARCHES = ("mamba", "jamba", "gemma3", "qwen35", "rwkv7", "lfm2", "nosuch", "", "lla\nma", "x" * 300)
_STRINGS = ("", "x", "evil\n\x1b[31mred\x07", "[/x] [bold]", "\udcff", "a" * 5000, "nan")


def _int_value(rng: random.Random) -> Value:
    vtype = rng.choice(_INTS)
    lo, hi = _RANGE[vtype]
    picks = [0, 1, 2, 3, -1, 255, 256, 4096, 2**31, 2**32 - 1, 2**40, 2**63 - 1, -(2**40)]
    value = rng.choice([v for v in picks if lo <= v <= hi] + [rng.randint(lo, hi)])
    return Value(vtype, value)


def _value(rng: random.Random, n_layer: int) -> Value:
    kind = rng.choice(("nan", "inf", "int", "int", "zero", "float", "bool", "string", "array", "array"))
    if kind == "nan":
        return Value(rng.choice((VT.FLOAT32, VT.FLOAT64)), float("nan"))
    if kind == "inf":
        return Value(rng.choice((VT.FLOAT32, VT.FLOAT64)), rng.choice((1.0, -1.0)) * float("inf"))
    if kind == "int":
        return _int_value(rng)
    if kind == "zero":
        return Value(rng.choice(_INTS), 0)
    if kind == "float":
        return Value(VT.FLOAT64, rng.choice((1.5, -2.0, 1e300, 4096.0, -0.0, 5e-324)))
    if kind == "bool":
        return Value(VT.BOOL, rng.choice((True, False)))
    if kind == "string":
        return Value(VT.STRING, rng.choice(_STRINGS))
    length = rng.choice((0, 1, n_layer - 1, n_layer, n_layer + 1, 5000))
    sub = rng.choice((VT.UINT32, VT.INT32, VT.FLOAT32, VT.BOOL, VT.STRING))
    item = {VT.UINT32: 2, VT.INT32: -3, VT.FLOAT32: float("nan"), VT.BOOL: True, VT.STRING: "s"}[sub]
    items = [item if rng.random() < 0.8 else _int_value(rng).value % 7 for _ in range(length)]
    if sub in (VT.FLOAT32, VT.BOOL, VT.STRING):
        items = [item] * length
    return Value(VT.ARRAY, items, sub)


@dataclass(frozen=True)
class Case:
    name: str
    write: object  # a callable(dst: Path) -> Path, kept opaque for the dataclass


def _meta_cases(base: GGUFTemplate, label: str, n: int, rng: random.Random) -> Iterator[Case]:
    arch = str(base.kv["general.architecture"].value)
    n_layer = int(base.kv[f"{arch}.block_count"].value)
    keys = [k for k in base.kv if not k.startswith("tokenizer.ggml.") or rng.random() < 0.3]
    for i in range(n):
        mutations: dict[str, Value] = {}
        drop: list[str] = []
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            roll = rng.random()
            if roll < 0.08:
                drop.append(rng.choice(keys))
            elif roll < 0.15:
                mutations["general.architecture"] = Value(VT.STRING, rng.choice(_ARCHES))
            elif roll < 0.45:
                mutations[f"{arch}.{rng.choice(_EXTRA)}"] = _value(rng, n_layer)
            else:
                mutations[rng.choice(keys)] = _value(rng, n_layer)

        def write(dst: Path, m: dict[str, Value] = mutations, d: list[str] = drop) -> Path:
            return base.write(dst, m, d)

        yield Case(f"{label}-meta-{i}", write)


def _byte_cases(data: bytes, label: str, n: int, rng: random.Random) -> Iterator[Case]:
    for i in range(n):
        mutated = bytearray(data)
        if i % 3 == 0:
            mutated = mutated[: rng.randrange(1, len(data))]
        elif i % 3 == 1:
            for _ in range(rng.randint(1, 6)):
                mutated[rng.randrange(4, min(len(data), 8192))] = rng.randrange(256)
        else:  # a plausible but wrong count or length field: a u64 near the start of the header
            pos = rng.randrange(8, min(len(data), 4096) - 8)
            struct.pack_into("<Q", mutated, pos, rng.choice((0, 1, 2**31, 2**63, 2**64 - 1)))
        blob = bytes(mutated)

        def write(dst: Path, b: bytes = blob) -> Path:
            dst.write_bytes(b)
            return dst

        yield Case(f"{label}-bytes-{i}", write)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    d = tmp_path_factory.mktemp("fuzz-base")
    llama = write_tiny_llama(d / "llama.gguf", n_embd=64, n_head=4, n_head_kv=2, n_ff=128, ctx_train=4096)
    jamba = write_tiny_jamba(d / "jamba.gguf", n_embd=64, n_ff=128, d_state=16, ctx_train=2048)
    rng = random.Random(SEED)
    out = [
        *_meta_cases(GGUFTemplate(llama), "llama", N_META // 2, rng),
        *_meta_cases(GGUFTemplate(jamba), "jamba", N_META - N_META // 2, rng),
        *_byte_cases(llama.read_bytes(), "llama", N_BYTES // 2, rng),
        *_byte_cases(jamba.read_bytes(), "jamba", N_BYTES - N_BYTES // 2, rng),
    ]
    return out


def _refusal(r: Result, path: Path, what: str) -> None:
    lines = r.stderr.splitlines()
    assert r.code not in (0, 70), f"{what}: exit {r.code}: {r.stderr}"
    assert len(lines) == 1, f"{what}: {len(lines)} lines on stderr:\n{r.stderr}"
    assert lines[0].startswith("edgebench: error: "), f"{what}: {r.stderr}"
    assert "internal error" not in lines[0], f"{what}: {r.stderr}"
    assert str(path) in lines[0], f"{what}: the error does not name the file: {r.stderr}"


def test_mutated_ggufs_never_cause_internal_errors(
    cases: list[Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accepted = refused = 0
    for i, case in enumerate(cases):
        monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / f"home-{i}"))  # one store per case
        path = case.write(tmp_path / f"{case.name}.gguf")  # type: ignore[operator]
        added = run(monkeypatch, "models", "add", str(path))
        if added.code != 0:
            _refusal(added, path, f"{case.name}: models add")
            refused += 1
            # plan on the path reads the file again and must refuse it the same way
            _refusal(run(monkeypatch, "plan", str(path)), path, f"{case.name}: plan")
            continue
        accepted += 1
        assert not added.stderr and "\x1b" not in added.stdout, f"{case.name}: {added.stderr}"
        r = run(monkeypatch, "plan", str(path), "--json", *(("--fit", "--budget-gib", "1") if i % 4 else ()))
        assert r.code == 0, f"{case.name}: plan of an accepted model: exit {r.code}: {r.stderr}"
        total = json.loads(r.stdout)["plan"]
        host_total = sum(
            total[k]
            for k in (
                "model_mib",
                "repack_mib",
                "kv_mib",
                "recurrent_mib",
                "compute_mib",
                "output_mib",
                "work_mib",
                "overhead_mib",
            )
        )
        assert math.isfinite(host_total) and 0 < host_total < 1e6, f"{case.name}: {host_total} MiB"
        table = run(monkeypatch, "plan", str(path))  # the table, with the model's name in its title
        assert table.code == 0 and "\x1b" not in table.stdout, f"{case.name}: {table.stderr}"
    # the mutations must exercise both paths, or the test proves little
    assert accepted >= 40 and refused >= 150, (accepted, refused)


def test_a_sample_through_the_real_command(cases: list[Case], tmp_path: Path) -> None:
    """The console script itself, with a timeout: no hang, one line on stderr."""
    sample = random.Random(SEED).sample(cases, N_SUBPROCESS)
    for i, case in enumerate(sample):
        env = {"EDGEBENCH_HOME": str(tmp_path / f"home-{i}")}
        path = case.write(tmp_path / f"{case.name}.gguf")  # type: ignore[operator]
        r = edgebench("models", "add", str(path), env=env, timeout=60)
        assert r.returncode in (0, 1), f"{case.name}: exit {r.returncode}: {r.stderr}"
        if r.returncode:
            assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("edgebench: error: "), r.stderr
            assert str(path) in r.stderr
