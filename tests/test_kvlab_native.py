"""Native KV truth through the real llama-perplexity (tiny synthetic llama): f16 against itself is
zero, a quantized cache is not, bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.kvlab.native import NativeError, kld_base, native_kld, parse_chunks, parse_kld
from edgebench.runtime.locate import Runtime

TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of folly. "
)


@pytest.fixture
def text(tmp_path: Path) -> Path:
    p = tmp_path / "text.txt"
    p.write_text(TEXT * 30)
    return p


@pytest.mark.llama
def test_f16_matches_its_base_and_q4_0_does_not(
    runtime: Runtime, tiny_model: Path, text: Path, tmp_path: Path
) -> None:
    base = kld_base(runtime, str(tiny_model), text, tmp_path / "base.kld", ctx=128)
    same = native_kld(runtime, str(tiny_model), text, base, k_type="f16", v_type="f16", ctx=128)
    assert same.mean_kld < 1e-6 and (same.same_top_pct or 100.0) > 99.0 and abs(same.dppl_pct) < 0.05
    q4 = native_kld(runtime, str(tiny_model), text, base, k_type="q4_0", v_type="q4_0", ctx=128)
    assert q4.mean_kld > 10 * max(same.mean_kld, 1e-9) and (q4.same_top_pct or 100.0) < 99.9
    assert q4.ppl_base == pytest.approx(same.ppl_base)  # both scored against the same f16 logits
    # asymmetric pairs and the rotation switch are separate measurements of the same kind
    mixed = native_kld(runtime, str(tiny_model), text, base, k_type="q8_0", v_type="q4_0", ctx=128)
    assert mixed.mean_kld >= 0 and (mixed.k_type, mixed.v_type) == ("q8_0", "q4_0")
    plain = native_kld(
        runtime, str(tiny_model), text, base, k_type="q4_0", v_type="q4_0", ctx=128, rotation=False
    )
    assert plain.rotation is False and plain.mean_kld > 0
    for r in (same, q4, mixed, plain):  # the figures cover the text (or say how much of it)
        assert r.chunks_total >= 5 and 1 <= r.chunks <= r.chunks_total


@pytest.mark.llama
def test_bad_input_is_one_line(runtime: Runtime, tiny_model: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(NativeError, match="too short") as exc:
        kld_base(runtime, str(tiny_model), short, tmp_path / "b.kld", ctx=128)
    assert "\n" not in str(exc.value)
    with pytest.raises(NativeError, match=r"not one llama\.cpp offers"):
        native_kld(runtime, str(tiny_model), short, tmp_path / "b.kld", k_type="q3_k", v_type="f16", ctx=128)


def test_the_statistics_block_is_read_and_a_missing_line_named() -> None:
    out = """====== Perplexity statistics ======
Mean PPL(Q)                   : 505.273588 ±   2.264454
Mean PPL(base)                : 503.222323 ±   2.274232
Mean ln(PPL(Q)/PPL(base))     :   0.004068 ±   0.000268
====== KL divergence statistics ======
Mean    KLD:   0.000083 ±   0.000001
Same top p: 89.484 ± 0.789 %
"""
    f = parse_kld(out)
    assert f["mean_kld"] == (0.000083, 0.000001) and f["same_top"] == (89.484, 0.789)
    assert f["ppl"] == (505.273588,) and f["ln_ratio"] == (0.004068, 0.000268)
    nan = parse_kld(out.replace("0.004068 ±   0.000268", "0.000000 ±       -nan"))  # Q identical to base
    assert nan["ln_ratio"][0] == 0.0 and nan["ln_ratio"][1] != nan["ln_ratio"][1]
    with pytest.raises(NativeError, match="no mean kld line"):
        parse_kld(out.replace("Mean    KLD", "Median  KLD"))


def test_lost_summary_falls_back_to_the_last_chunk_line() -> None:
    """llama.cpp can lose its last log lines at exit (its issue #22142): the chunk table's running
    figures stand in, with the number of chunks they cover."""
    cut = (Path(__file__).parent / "fixtures" / "llama-logs" / "perplexity-kld-lost-summary.log").read_text()
    got = parse_chunks(cut)
    assert got is not None
    n, total, f = got
    assert (n, total) == (23, 24)
    assert f["mean_kld"] == (0.00008, 0.0) and f["same_top"] == (89.510, 0.805)
    assert f["ppl_base"][0] == pytest.approx(505.1089 / 1.0040482, rel=1e-6)
    with pytest.raises(NativeError):
        parse_kld(cut)
    assert parse_chunks("no table here") is None
