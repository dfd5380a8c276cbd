from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgebench.runtime.flags import (
    BenchTest,
    Dialect,
    RuntimeConfig,
    bench_argv,
    cpu_list,
    cpu_mask_hex,
    parse_cpus,
    quantize_argv,
    server_argv,
)


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_bench_argv_maps_every_field() -> None:
    cfg = RuntimeConfig(
        threads=6,
        ctx=8192,
        cache_type_k="q8_0",
        cache_type_v="q4_0",
        flash_attn="on",
        batch=1024,
        ubatch=256,
        mmap=False,
        ngl=0,
    )
    argv = bench_argv("/b/llama-bench", "/m.gguf", cfg, BenchTest(n_prompt=512, n_gen=0, depth=4096, reps=3))
    assert argv[0] == "/b/llama-bench"
    assert _opt(argv, "-m") == "/m.gguf"
    assert _opt(argv, "-o") == "json"
    assert (_opt(argv, "-p"), _opt(argv, "-n"), _opt(argv, "-d"), _opt(argv, "-r")) == (
        "512",
        "0",
        "4096",
        "3",
    )
    assert (_opt(argv, "-t"), _opt(argv, "-b"), _opt(argv, "-ub")) == ("6", "1024", "256")
    assert (_opt(argv, "-ctk"), _opt(argv, "-ctv"), _opt(argv, "-fa")) == ("q8_0", "q4_0", "on")
    assert _opt(argv, "-lm") == "none"
    assert "taskset" not in argv[0]
    assert "-v" not in argv
    # verbose: llama.cpp names the reason it refuses a config (diagnose_failure reads that line)
    loud = bench_argv("/b/llama-bench", "/m.gguf", cfg, BenchTest(), verbose=True)
    assert "-v" in loud and loud[: loud.index("-v")] == [a for a in loud if a != "-v"]


def test_server_argv_shares_the_mapping() -> None:
    cfg = RuntimeConfig(
        threads=4,
        threads_batch=6,
        ctx=32768,
        cache_type_k="q4_0",
        cache_type_v="q4_0",
        flash_attn="on",
        reasoning_budget=0,
        parallel=2,
        mlock=True,
    )
    argv = server_argv("/b/llama-server", "/m.gguf", cfg, port=8081)
    assert (_opt(argv, "-c"), _opt(argv, "-t"), _opt(argv, "-tb")) == ("32768", "4", "6")
    assert (_opt(argv, "-ctk"), _opt(argv, "-ctv"), _opt(argv, "-fa")) == ("q4_0", "q4_0", "on")
    assert (_opt(argv, "--port"), _opt(argv, "-np"), _opt(argv, "--reasoning-budget")) == ("8081", "2", "0")
    assert _opt(argv, "--load-mode") == "mmap+mlock"
    assert "--jinja" in argv and "--no-webui" in argv
    assert "--verbose" not in argv
    assert server_argv("/b/llama-server", "/m.gguf", cfg, verbose=True)[-2:] == ["-lv", "4"]
    old = Dialect(server_log_verbosity=False)
    assert server_argv("/b/llama-server", "/m.gguf", cfg, verbose=True, dialect=old)[-1] == "--verbose"


def test_old_dialect_uses_old_spellings() -> None:
    old = Dialect.from_help("-mmp, --mmap <0|1>\n -fa, --flash-attn <0|1>", "--no-mmap --mlock")
    assert not old.bench_load_mode and not old.bench_fa_words and not old.server_load_mode
    cfg = RuntimeConfig(flash_attn="on", mmap=False, mlock=True)
    b = bench_argv("llama-bench", "m", cfg, BenchTest(), old)
    assert _opt(b, "-fa") == "1" and _opt(b, "-mmp") == "0" and "-lm" not in b
    s = server_argv("llama-server", "m", cfg, dialect=old)
    assert "--no-mmap" in s and "--mlock" in s and "--load-mode" not in s
    # "auto" has no old spelling: leave llama-bench's default alone.
    assert "-fa" not in bench_argv("llama-bench", "m", RuntimeConfig(flash_attn="auto"), BenchTest(), old)


def test_new_dialect_detected_from_real_help_text() -> None:
    d = Dialect.from_help(
        "-fa, --flash-attn <on|off|auto>\n-lm, --load-mode <auto|none|mmap>",
        "-lm, --load-mode MODE\n--reasoning-budget N\n-lv, --verbosity, --log-verbosity N",
    )
    assert d == Dialect()


def test_affinity_taskset_and_mask() -> None:
    cfg = RuntimeConfig(threads=4, cpus=(7, 4, 5, 6))
    argv = bench_argv("llama-bench", "m", cfg, BenchTest())
    assert argv[0].endswith("taskset") and argv[1:3] == ["-c", "4-7"] and argv[3] == "llama-bench"
    masked = server_argv("llama-server", "m", cfg.model_copy(update={"affinity": "mask"}))
    assert masked[0] == "llama-server"
    assert _opt(masked, "-C") == "0xf0" and _opt(masked, "--cpu-strict") == "1"


@pytest.mark.parametrize(
    ("spec", "cpus", "back"),
    [
        ("0-3", (0, 1, 2, 3), "0-3"),
        ("4-7,0", (0, 4, 5, 6, 7), "0,4-7"),
        ("1,3,5", (1, 3, 5), "1,3,5"),
    ],
)
def test_cpu_lists_round_trip(spec: str, cpus: tuple[int, ...], back: str) -> None:
    assert parse_cpus(spec) == cpus
    assert cpu_list(cpus) == back


def test_cpu_mask_hex() -> None:
    assert cpu_mask_hex((0, 1, 2, 3)) == "0xf"
    assert cpu_mask_hex((4, 5, 6, 7)) == "0xf0"


@pytest.mark.parametrize("spec", ["3-1", "a-b", "", "1,x"])
def test_bad_cpu_specs_are_rejected(spec: str) -> None:
    with pytest.raises(ValueError, match="CPU"):
        parse_cpus(spec)


def test_invalid_configs_name_the_problem() -> None:
    with pytest.raises(ValidationError, match="unknown KV cache type 'q3_k'"):
        RuntimeConfig(cache_type_k="q3_k")
    with pytest.raises(ValidationError, match=r"ubatch \(1024\) cannot exceed batch \(512\)"):
        RuntimeConfig(batch=512, ubatch=1024)
    with pytest.raises(ValidationError, match="threads"):
        RuntimeConfig(threads=0)
    with pytest.raises(ValidationError, match="extra"):
        RuntimeConfig(thread=4)  # type: ignore[call-arg]


def test_key_is_stable_and_sensitive() -> None:
    a, b = RuntimeConfig(threads=2), RuntimeConfig(threads=2)
    assert a.key() == b.key()
    assert a.key() != RuntimeConfig(threads=2, cache_type_v="q8_0").key()


def test_test_names_follow_llama_bench() -> None:
    assert BenchTest(n_prompt=512, n_gen=0).name == "pp512"
    assert BenchTest(n_prompt=0, n_gen=128).name == "tg128"
    assert BenchTest(n_prompt=512, n_gen=0, depth=4096).name == "pp512 @ d4096"
    assert BenchTest(n_prompt=512, n_gen=128).name == "pp512+tg128"


def test_quantize_argv() -> None:
    assert quantize_argv("q", "in.gguf", "out.gguf", "Q4_0") == ["q", "in.gguf", "out.gguf", "Q4_0"]
    assert quantize_argv("q", "a", "b", "Q8_0", allow_requantize=True)[1] == "--allow-requantize"


def test_planner_options_are_typed_fields_with_stable_keys() -> None:
    # Options that change buffer sizes are typed (the planner reads fields, not argv strings);
    # configs that spelled them in `extra` still mean the same, and default configs keep the key
    # every stored row was measured under.
    old = RuntimeConfig(extra=("-kvu", "--swa-full", "-nr", "--ctx-checkpoints", "4", "--foo"))
    assert (old.kv_unified, old.swa_full, old.repack, old.ctx_checkpoints) == (True, True, False, 4)
    assert old.extra == ("--foo",)
    argv = server_argv("llama-server", "m.gguf", old)
    assert argv[-6:] == ["-kvu", "--swa-full", "-nr", "--ctx-checkpoints", "4", "--foo"]
    assert "kv_unified" not in RuntimeConfig().model_dump()  # at its default: out of the hashed dump
    assert RuntimeConfig().key() == RuntimeConfig(extra=()).key()
    assert RuntimeConfig(kv_unified=False).key() != RuntimeConfig().key()
    assert RuntimeConfig.model_validate(old.model_dump(mode="json")) == old


def test_recipe_and_fleet_tool_argv() -> None:
    from edgebench.runtime.flags import imatrix_argv, quantize_type_probe_argv, rpc_server_argv

    kw = {"tensor_type_file": "t.txt", "imatrix": "im.gguf", "threads": 2}
    argv = quantize_argv(
        "q", "in", "out", "Q8_0", pure=True, allow_requantize=True, token_embedding_type="Q6_K", **kw
    )
    flags = ["--pure", "--allow-requantize", "--token-embedding-type", "q6_k", "--tensor-type-file", "t.txt"]
    assert argv == ["q", *flags, "--imatrix", "im.gguf", "in", "out", "Q8_0", "2"]
    assert quantize_type_probe_argv("q", "IQ4_NL")[1:3] == ["--tensor-type", "x=iq4_nl"]
    assert imatrix_argv("i", "m", "t", "o", ctx=256, threads=1)[-1] == "--no-ppl"
    assert rpc_server_argv("r", "127.0.0.1", 5, threads=1, cache=True) == [
        "r",
        "-H",
        "127.0.0.1",
        "-p",
        "5",
        "-t",
        "1",
        "-c",
    ]
