"""The KV lab's simulated schemes: llama.cpp's block formats bit-exact against gguf-py and ggml's
own iq4_nl reference, TurboQuant and KIVI against the properties that define them, and the
divergence the lab scores with."""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgebench.errors import EdgebenchError
from edgebench.kvlab.lab import _layers_spec
from edgebench.kvlab.schemes import (
    SchemeError,
    hadamard,
    lloyd_max_normal,
    parse_scheme,
    quantize_iq4_nl,
    roundtrip,
)
from edgebench.kvlab.score import Dist, ScoreError, _kld, compare
from edgebench.models.memory import parse_kv_layers

RNG = np.random.default_rng(7)


def _keys(cells: int = 64, width: int = 256, outliers: bool = True) -> np.ndarray:
    """K-like rows: a few channels much larger than the rest (as real keys have), f16-exact."""
    x = RNG.standard_normal((cells, width)).astype(np.float32)
    if outliers:
        x[:, [3, 77, 140]] *= 20
    return x.astype(np.float16).astype(np.float32)


@pytest.mark.parametrize("t", ["q8_0", "q5_1", "q5_0", "q4_1", "q4_0"])
def test_block_formats_are_gguf_py_reference_quantizers_bit_for_bit(t: str) -> None:
    x = _keys()
    qt = gguf.GGMLQuantizationType[t.upper()]
    ref = np.asarray(gguf.quants.dequantize(gguf.quants.quantize(x, qt), qt), np.float32)
    got = roundtrip(x, parse_scheme(t), "k", head_dim=256)
    assert np.array_equal(got.values, ref)
    size, block = gguf.GGML_QUANT_SIZES[qt][1], gguf.GGML_QUANT_SIZES[qt][0]
    assert got.bits == 8 * size * x.size // block


def _iq4_nl_ref(b: np.ndarray) -> tuple[np.float16, list[int]]:
    """ggml-quants.c quantize_row_iq4_nl_impl(32, 32, …, ntry=-1) line by line, in float32."""
    vals = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

    def best_index(x: np.float32) -> int:
        if x <= vals[0]:
            return 0
        if x >= vals[-1]:
            return 15
        ml, mu = 0, 15
        while mu - ml > 1:
            mav = (ml + mu) // 2
            if x < vals[mav]:
                mu = mav
            else:
                ml = mav
        return mu - 1 if x - vals[mu - 1] < vals[mu] - x else mu

    amax, vmax = np.float32(0), np.float32(0)
    for v in b:
        if abs(v) > amax:
            amax, vmax = abs(v), v
    if amax < 1e-15:
        return np.float16(0), [0] * 32
    d = np.float32(vmax / np.float32(-127))
    inv = np.float32(1) / d
    idx = [best_index(np.float32(inv * v)) for v in b]
    sqx = sq2 = np.float32(0)
    for i, v in zip(idx, b, strict=True):
        w, q = np.float32(v * v), np.float32(vals[i])
        sqx = np.float32(sqx + w * q * v)
        sq2 = np.float32(sq2 + w * q * q)
    return np.float16(sqx / sq2), idx


def test_iq4_nl_is_ggmls_reference_and_gguf_py_reads_it() -> None:
    x = _keys(8)
    x[0, :32] = 0  # an all-zero block
    x[1, :32] = np.linspace(-1, 1, 32)  # values on the grid's midpoints and a negative maximum
    packed = quantize_iq4_nl(x)
    for i, block in enumerate(x.reshape(-1, 32)):
        d, idx = _iq4_nl_ref(block)
        got = np.concatenate([packed[i, 2:] & 15, packed[i, 2:] >> 4]).tolist()
        assert packed[i, :2].view(np.float16)[0] == d, i
        if d != 0:
            assert got == idx, i
    deq = np.asarray(gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.IQ4_NL), np.float32)
    assert np.abs(deq.reshape(x.shape) - x).max() < 0.1 * np.abs(x).max()
    assert not deq.reshape(x.shape)[0, :32].any()


def test_rotation_is_llamacpps_hadamard_and_helps_outlier_channels() -> None:
    h = hadamard(64)
    np.testing.assert_allclose(h @ h, np.eye(64), atol=1e-6)  # orthonormal and its own inverse
    assert h[0, 0] == pytest.approx(1 / 8) and h[1, 1] == pytest.approx(-1 / 8)  # Sylvester order
    x = _keys()
    plain = roundtrip(x, parse_scheme("q4_0"), "k", head_dim=256)
    rot = roundtrip(x, parse_scheme("q4_0+rot"), "k", head_dim=256)
    err = lambda r: float(((r.values - x) ** 2).mean())  # noqa: E731
    assert err(rot) < 0.5 * err(plain)  # the outlier channels are spread over the block
    assert rot.bits == plain.bits
    with pytest.raises(SchemeError, match="power of two"):
        hadamard(48)


def test_lloyd_max_levels_are_the_known_gaussian_quantizers() -> None:
    assert lloyd_max_normal(1) == pytest.approx([-0.7979, 0.7979], abs=1e-4)
    assert lloyd_max_normal(2) == pytest.approx([-1.5104, -0.4528, 0.4528, 1.5104], abs=1e-4)
    z = RNG.standard_normal(200_000).astype(np.float32)
    for bits, mse in ((2, 0.1175), (3, 0.03454), (4, 0.009497)):  # Max (1960)
        lv = lloyd_max_normal(bits)
        q = lv[np.abs(z[:, None] - lv[None, :]).argmin(axis=1)]
        assert float(((q - z) ** 2).mean()) == pytest.approx(mse, rel=0.03)


def test_turboquant_mse_and_the_qjl_residual_makes_inner_products_unbiased() -> None:
    d = 128
    x = RNG.standard_normal((4000, d)).astype(np.float32)
    q = RNG.standard_normal((4000, d)).astype(np.float32)
    true = (x * q).sum(axis=1)
    ratios = {}
    for name in ("tq2", "tq2+qjl", "tq3"):
        r = roundtrip(x, parse_scheme(name), "k", head_dim=d, seed=3)
        est = (r.values * q).sum(axis=1)
        # regression of the estimate on the truth: 1 = unbiased, < 1 = shrunk towards 0
        ratios[name] = float((est * true).sum() / (true * true).sum())
        if name == "tq3":
            rel = float(((r.values - x) ** 2).sum() / (x * x).sum())
            assert rel == pytest.approx(0.0345, rel=0.1)  # the 3-bit Gaussian quantizer's MSE
            assert r.bits == 4000 * (3 * d + 16)  # codes + an f16 norm per vector
    assert ratios["tq2"] < 0.93  # the MSE quantizer shrinks inner products …
    assert ratios["tq2+qjl"] == pytest.approx(1.0, abs=0.03)  # … the QJL residual removes the bias


def test_kivi_quantizes_keys_per_channel_and_keeps_the_residual_tokens_f16() -> None:
    x = _keys(cells=70, outliers=False)  # 2 full groups of 32 tokens + 6 residual tokens
    x[:, [3, 77, 140]] += 20  # outlier channels as keys have them: a large offset per channel
    x = x.astype(np.float16).astype(np.float32)
    k = roundtrip(x, parse_scheme("kivi2"), "k", head_dim=256)
    v = roundtrip(x, parse_scheme("kivi2"), "v", head_dim=256)
    assert np.array_equal(k.values[64:], x[64:])  # the residual window is kept as it was
    assert k.bits == 64 * 256 * 2 + 32 * 2 * 256 + 16 * 6 * 256
    assert v.bits == 70 * 256 * 2 + 32 * 70 * (256 // 32)
    # per-channel groups absorb a channel's offset; per-token groups share a scale with it
    err = lambda r: float(((r.values[:64] - x[:64]) ** 2).mean())  # noqa: E731
    assert err(k) < 0.5 * err(v)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("q3_0", "not one of"),
        ("f16+rot", "rotates only quantized"),
        ("tq1+qjl", "needs ≥ 2 bits"),
        ("", "not one of"),
        ("tq9", "not one of"),
        ("q4_0 rot", "not one of"),
    ],
)
def test_bad_scheme_names_are_one_line(name: str, says: str) -> None:
    with pytest.raises(SchemeError, match=says) as exc:
        parse_scheme(name)
    assert isinstance(exc.value, EdgebenchError) and "\n" not in str(exc.value)


def test_shapes_a_scheme_cannot_take_are_refused() -> None:
    with pytest.raises(SchemeError, match="multiple of the 32"):
        roundtrip(np.zeros((4, 48), np.float32), parse_scheme("q8_0"), "k", head_dim=48)
    with pytest.raises(SchemeError, match="head size"):
        roundtrip(np.zeros((4, 96), np.float32), parse_scheme("tq3"), "k", head_dim=64)


def test_kld_is_zero_for_equal_distributions_and_a_lower_bound_of_the_full_one() -> None:
    vocab, top = 5000, 64
    full_p = RNG.dirichlet(np.full(vocab, 0.05))
    full_q = RNG.dirichlet(np.full(vocab, 0.05)) * 0.3 + full_p * 0.7
    true = float((full_p * np.log(full_p / full_q)).sum())

    def dist(p: np.ndarray, pos: int = 5) -> Dist:
        ids = np.argsort(-p)[:top]
        return Dist(pos, {int(i): float(np.log(p[i])) for i in ids})

    same, _ = _kld(dist(full_p), dist(full_p))
    assert same == 0.0
    bound, mass = _kld(dist(full_p), dist(full_q))
    assert 0 < bound <= true + 1e-9
    assert 0 < mass <= 1
    assert compare([dist(full_p)], [dist(full_p)]).mean_kld == 0.0
    with pytest.raises(ScoreError, match="positions differ"):
        compare([dist(full_p, 5)], [dist(full_p, 6)])
    # the test lists different top tokens: a missing one is bounded, never a crash
    shifted = Dist(5, {i + 10_000: lp for i, lp in dist(full_p).logprobs.items()})
    assert _kld(dist(full_p), shifted)[0] > 0
    assert math.isfinite(_kld(dist(full_p), shifted)[0])


def test_a_hybrid_plan_prints_as_the_planners_kv_layers_syntax() -> None:
    hi, lo = parse_scheme("q8_0"), parse_scheme("q4_0")
    plan = {il: (hi, hi) if il in (0, 1, 2, 7) else (lo, lo) for il in range(10)}
    spec = _layers_spec(plan)
    assert spec == "0-2:q8_0,3-6:q4_0,7:q8_0,8-9:q4_0"
    parsed = parse_kv_layers(spec, 10)
    assert parsed == {il: (plan[il][0].name, plan[il][1].name) for il in range(10)}


def test_the_lab_report_has_the_seed_table_the_check_and_a_plot(tmp_path: Path) -> None:
    from edgebench.kvlab.lab import LabResult, LabRow, Validation, recommend
    from edgebench.kvlab.report import write_report
    from edgebench.kvlab.score import Divergence

    def div(k: float, top: float) -> Divergence:
        return Divergence(k, k / 10, top, 1.0, 64, 0.9, (k,) * 64)

    rows = [
        LabRow(method="f16", source="native", bits_k=16, bits_v=16, kld=div(0.0, 100), ctx_fit=4096),
        LabRow(method="q8_0", source="native", bits_k=8.5, bits_v=8.5, kld=div(0.004, 99.5), ctx_fit=7680),
        LabRow(method="q4_0", source="native", bits_k=4.5, bits_v=4.5, kld=div(0.09, 90.0), ctx_fit=14080),
        LabRow(method="tq3", source="simulated", bits_k=3.06, bits_v=3.06, rel_mse_k=0.03, rel_mse_v=0.03,
               kld=div(0.2, 70.0), validated=True),
        LabRow(method="hybrid by sensitivity", source="simulated", bits_k=5.8, bits_v=5.8,
               kld=div(0.05, 95.0), kv_layers="0-5:q8_0,6-17:q4_0|x", validated=False),
    ]  # fmt: skip
    rec = recommend(rows)
    assert rec.startswith("-ctk q8_0 -ctv q8_0") and "KLD 0.0040" in rec  # q4_0 fails the thresholds
    worse = [r.model_copy(update={"kld": div(0.03, 95.0)}) if r.method == "q8_0" else r for r in rows]
    assert recommend(worse).startswith("keep an f16 cache") and "the closest, q8_0" in recommend(worse)
    res = LabResult(
        model="m", model_sha256="ab" * 32, build_id="b1", host_fingerprint="h", text_sha256="cd" * 32,
        ctx=512, tokens=496, positions=64, flash_attn="on", n_probs=256, budget_mib=400,
        roundtrip_kld_max=0.0,
        validations=[Validation(simulated="q4_0", native="q4_0", rotation=True, kld_simulated=0.088,
                                kld_native=0.09, diff=-0.002, diff_se=0.01, agree=True)],
        rows=rows, sensitivity={0: 0.01, 1: 0.002}, sensitivity_scheme="q4_0", step=8,
        recommendation=rec, wall_s=12.0,
    )  # fmt: skip
    md, svg = write_report(res, tmp_path / "lab")
    text = md.read_text()
    assert "| q4_0 | native | 4.50 | 3.56× / 7.11× |" in text and "decode t/s at depth 256" in text
    assert "simulated (unvalidated)" in text and "\\|x" in text  # a pipe in a cell cannot break the table
    assert "q4_0 vs q4_0: 0.08800 vs 0.09000" in text and "agree" in text
    assert svg is not None and svg.read_text().startswith("<svg") and "lab.svg" in text
