"""llama.cpp memory-line parsing, against real llama-server logs (tests/fixtures/llama-logs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.runtime.memlog import BreakdownRow, MemoryBreakdown, parse_memory_log, read_memory_log

LOGS = Path(__file__).parent / "fixtures" / "llama-logs"


def log(name: str) -> MemoryBreakdown:
    return read_memory_log(LOGS / f"{name}.log")


def test_gemma_verbose_skips_the_fit_dry_run() -> None:
    b = log("gemma3-270m_c2048_f16_verbose")
    assert not b.dry_run
    assert list(b.devices) == ["CPU"]
    cpu = b.host
    assert cpu is not None
    assert cpu.model_mib == 235.16  # CPU_Mapped, not the dry run's "CPU model buffer size = 0.00"
    assert cpu.repack_mib == 12.66
    assert cpu.kv_mib == 21.0 and cpu.kv_swa_mib == 15.0
    assert cpu.recurrent_mib is None
    assert cpu.compute_mib == 20.77
    assert cpu.output_mib == 1.0
    assert cpu.total_mib == pytest.approx(235.16 + 12.66 + 21.0 + 20.77 + 1.0)
    base, swa = b.caches
    assert (base.kind, base.cells, base.layers, base.seqs, base.streams) == ("kv_base", 2048, 3, 1, 1)
    assert (base.type_k, base.k_mib, base.type_v, base.v_mib, base.size_mib) == ("f16", 3.0, "f16", 3.0, 6.0)
    assert (swa.kind, swa.cells, swa.layers, swa.size_mib) == ("kv_swa", 1024, 15, 15.0)
    assert (b.kv_cells, b.kv_layers, b.kv_swa_cells, b.kv_swa_layers) == (2048, 3, 1024, 15)
    assert (b.n_ctx, b.n_ctx_seq, b.n_seq_max, b.n_batch, b.n_ubatch) == (2048, 2048, 1, 2048, 512)
    assert (b.n_outputs_max, b.flash_attn, b.kv_unified) == (1, "enabled", False)
    assert b.table == [
        BreakdownRow(name="Host", self_mib=276, model_mib=235, context_mib=21, compute_mib=20),
        BreakdownRow(name="CPU_REPACK", self_mib=12, model_mib=12, context_mib=0, compute_mib=0),
    ]
    assert b.fit_table[0] == BreakdownRow(
        name="Host", self_mib=264, model_mib=222, context_mib=21, compute_mib=20
    )
    assert b.fit_s == 0.92 and b.reserve_ms == 5.52
    assert b.ready_s == pytest.approx(3.460733)
    assert b.load_time_ms is None  # llama-server never prints llama_perf's "load time"


def test_gemma_quantized_kv_lv4() -> None:
    b = log("gemma3-270m_c2048_q8_0_lv4")
    cpu = b.host
    assert cpu is not None
    assert (cpu.model_mib, cpu.repack_mib, cpu.kv_mib, cpu.kv_swa_mib) == (235.16, 12.66, 11.16, 7.97)
    assert (cpu.compute_mib, cpu.output_mib) == (21.3, 1.0)
    assert [(c.kind, c.cells, c.type_k, c.type_v, c.k_mib) for c in b.caches] == [
        ("kv_base", 2048, "q8_0", "q8_0", 1.59),
        ("kv_swa", 1024, "q8_0", "q8_0", 3.98),
    ]
    assert b.table[0].self_mib == 267 and b.table[0].context_mib == 11
    assert b.fit_table[0].model_mib == 222  # the --fit projection, printed before the load


def test_gemma_8k_without_flash_attention() -> None:
    b = log("gemma3-270m_c8192_f16_fa-off_lv4")
    cpu = b.host
    assert cpu is not None
    assert (cpu.kv_mib, cpu.kv_swa_mib, cpu.compute_mib) == (39.0, 15.0, 91.76)
    assert (b.kv_cells, b.kv_swa_cells, b.n_ctx, b.flash_attn) == (8192, 1024, 8192, "disabled")
    assert b.table[0] == BreakdownRow(
        name="Host", self_mib=365, model_mib=235, context_mib=39, compute_mib=91
    )


def test_gemma_8k_q8_0() -> None:
    b = log("gemma3-270m_c8192_q8_0_lv4")
    cpu = b.host
    assert cpu is not None
    assert (cpu.kv_mib, cpu.kv_swa_mib, cpu.compute_mib) == (20.72, 7.97, 27.3)
    assert [c.size_mib for c in b.caches] == [12.75, 7.97]


def test_default_verbosity_prints_no_buffers() -> None:
    b = log("gemma3-270m_c2048_default-verbosity")
    assert b.devices == {} and b.caches == [] and b.table == [] and b.fit_table == []
    assert b.host is None and b.kv_cells is None and b.n_ctx is None and b.flash_attn is None
    assert b.ready_s == pytest.approx(7.622978)  # the timestamps are still there


def test_tiny_llama_two_streams() -> None:
    b = log("tiny-llama_c2048_f16_np2_lv4")
    cpu = b.host
    assert cpu is not None
    assert (cpu.model_mib, cpu.repack_mib, cpu.kv_mib, cpu.compute_mib, cpu.output_mib) == (
        1.59,
        None,
        1.0,
        1.51,
        0.0,
    )
    (kv,) = b.caches
    assert (kv.kind, kv.cells, kv.layers, kv.seqs, kv.streams) == ("kv", 1024, 2, 2, 2)
    assert (b.n_ctx, b.n_ctx_seq, b.n_seq_max, b.n_ubatch) == (2048, 1024, 2, 256)


def test_hybrid_jamba_kv_and_recurrent_state() -> None:
    b = log("tiny-jamba_c4096_f16_np2_lv4")
    cpu = b.host
    assert cpu is not None
    assert (cpu.model_mib, cpu.kv_mib, cpu.recurrent_mib, cpu.compute_mib) == (12.34, 4.0, 0.52, 8.91)
    kv, rs = b.caches
    assert (kv.kind, kv.cells, kv.layers, kv.streams) == ("kv", 2048, 2, 2)
    assert (rs.kind, rs.cells, rs.layers, rs.seqs, rs.size_mib) == ("recurrent", 2, 4, 2, 0.52)
    assert (rs.type_k, rs.k_mib, rs.type_v, rs.v_mib) == ("f32", 0.02, "f32", 0.5)
    assert b.recurrent_cells == 2
    assert b.table == [BreakdownRow(name="Host", self_mib=25, model_mib=12, context_mib=4, compute_mib=8)]


# ---------------------------------------------------------------------------- odd logs


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "garbage \x00\xff line\nload_tensors: CPU model buffer size = lots MiB\n",
        "llama_kv_cache: size = 6.00 MiB (  2048 cells",  # truncated mid-line
        "common_memory_breakdown_print: |   - Host | 292 = 235 + 36 + 21 |",  # row without a header
        "common_memory_breakdown_print: | memory breakdown [MiB] | total free self |\n"
        "common_memory_breakdown_print: |   - Host | 1 = 2 |",  # row with the wrong arity
    ],
)
def test_odd_logs_never_raise(text: str) -> None:
    b = parse_memory_log(text)
    assert b.devices == {} and b.caches == [] and b.table == []
    assert b.host is None and b.kv_cells is None


def test_accepts_lines_and_strips_colour_and_pid_prefixes() -> None:
    lines = [
        "[4711] \x1b[34m0.01.056.770\x1b[0m \x1b[32mI \x1b[0m"
        "load_tensors:   CPU_Mapped model buffer size =   10.50 MiB",
        "[4711] 0.01.056.800 I llama_kv_cache:        CPU KV buffer size =     2.00 MiB",
        "[4711] 0.01.060.000 I srv  llama_server: model loaded",
    ]
    b = parse_memory_log(lines)
    cpu = b.host
    assert cpu is not None and (cpu.model_mib, cpu.kv_mib) == (10.5, 2.0)
    assert b.ready_s == pytest.approx(1.06)  # minutes.seconds.millis.micros


def test_older_llama_cpp_wording() -> None:
    text = "\n".join(
        [
            "llm_load_tensors:        CPU buffer size =  1640.62 MiB",
            "llm_load_tensors:      CUDA0 buffer size =  5434.38 MiB",
            "llama_new_context_with_model: n_ctx      = 4096",
            "llama_new_context_with_model: n_ctx_per_seq = 4096",
            "llama_kv_cache_unified:      CUDA0 KV buffer size =  1536.00 MiB",
            "llama_kv_cache_unified: size = 1536.00 MiB (  4096 cells,  24 layers,  1 seqs), "
            "K (f16):  768.00 MiB, V (f16):  768.00 MiB",
            "llama_new_context_with_model:  CUDA_Host  output buffer size =     1.95 MiB",
            "llama_new_context_with_model:      CUDA0 compute buffer size =   672.01 MiB",
            "llama_perf_context_print:        load time =    1234.50 ms",
        ]
    )
    b = parse_memory_log(text)
    assert set(b.devices) == {"CPU", "CUDA0"}
    cpu, gpu = b.devices["CPU"], b.devices["CUDA0"]
    assert (cpu.model_mib, cpu.output_mib, cpu.kv_mib) == (1640.62, 1.95, None)  # CUDA_Host is host memory
    assert (gpu.model_mib, gpu.kv_mib, gpu.compute_mib) == (5434.38, 1536.0, 672.01)
    (kv,) = b.caches
    assert (kv.cells, kv.layers, kv.seqs, kv.streams) == (4096, 24, 1, None)
    assert (b.n_ctx, b.n_ctx_seq, b.load_time_ms) == (4096, 4096, 1234.5)


def test_device_table_rows() -> None:
    text = "\n".join(
        [
            "common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context"
            "   compute    unaccounted |",
            "common_memory_breakdown_print: |   - CUDA0 (RTX 4090)   | 24076 = 1450 + (21829 = 19800"
            " +    1536 +     493) +         797 |",
            "common_memory_breakdown_print: |   - Host               |                   652 =   620 +"
            "       0 +      32                |",
        ]
    )
    b = parse_memory_log(text)
    gpu, host = b.table
    assert gpu == BreakdownRow(
        name="CUDA0 (RTX 4090)",
        self_mib=21829,
        model_mib=19800,
        context_mib=1536,
        compute_mib=493,
        total_mib=24076,
        free_mib=1450,
        unaccounted_mib=797,
    )
    assert host.name == "Host" and host.self_mib == 652


def test_a_log_cut_before_exit_keeps_the_fit_projection_apart() -> None:
    text = (LOGS / "gemma3-270m_c2048_q8_0_lv4.log").read_text()
    cut = text[: text.index("srv  llama_server: model loaded")]  # killed before the exit table
    b = parse_memory_log(cut)
    assert b.table == []  # the only table is the --fit projection, printed before the load
    assert b.fit_table[0].model_mib == 222
    assert b.host is not None and b.host.kv_mib == 11.16


def test_dry_run_only() -> None:
    text = (LOGS / "gemma3-270m_c2048_f16_verbose.log").read_text()
    dry = text[: text.index("CPU_Mapped model buffer size")]  # the --fit no_alloc pass alone
    b = parse_memory_log(dry)
    assert b.dry_run
    assert b.host is not None and b.host.model_mib == 0.0 and b.host.kv_mib == 0.0
