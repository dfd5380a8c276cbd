"""The KV lab's state parser on real llama-server slot files (tiny synthetic llama, real build)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pytest

from edgebench.kvlab.capture import capture, continue_from
from edgebench.kvlab.state import StateFormatError, parse_seq_state, write_seq_state
from edgebench.models.gguf import read_model_info
from edgebench.runtime.flags import FlashAttn
from edgebench.runtime.locate import Runtime

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom. " * 3


@pytest.mark.llama
def test_captured_kv_has_the_shapes_the_metadata_implies_in_both_layouts(
    runtime: Runtime, tiny_model: Path, tmp_path: Path
) -> None:
    info = read_model_info(tiny_model)
    on, raw_on, _ = capture(runtime, str(tiny_model), TEXT, ctx=512, flash_attn="on", log_dir=tmp_path)
    off, raw_off, _ = capture(runtime, str(tiny_model), TEXT, ctx=512, flash_attn="off", log_dir=tmp_path)
    assert write_seq_state(on) == raw_on and write_seq_state(off) == raw_off  # byte-exact round trip
    assert on.prompt_tokens == off.prompt_tokens and len(on.prompt_tokens) > 40
    for state, transposed in ((on, False), (off, True)):
        (cache,) = state.caches
        assert cache.v_trans is transposed
        assert cache.cells == len(state.prompt_tokens)
        assert cache.positions.tolist() == list(range(cache.cells))
        assert all(ids == [0] for ids in cache.seq_ids)
        assert len(cache.layers) == info.n_layer
        for il, lk in enumerate(cache.layers):
            width_k = info.n_head_kv[min(il, len(info.n_head_kv) - 1)] * info.head_dim_k
            width_v = info.n_head_kv[min(il, len(info.n_head_kv) - 1)] * info.head_dim_v
            assert lk.k_values().shape == (cache.cells, width_k)
            assert lk.v_values().shape == (cache.cells, width_v)
            assert np.isfinite(lk.k_values()).all() and lk.k_values().std() > 0
    # the same numbers whatever the layout: K identical, V read back from its transposed rows
    for a, b in zip(on.caches[0].layers, off.caches[0].layers, strict=True):
        np.testing.assert_allclose(a.k_values(), b.k_values(), rtol=0, atol=2e-3)
        np.testing.assert_allclose(a.v_values(), b.v_values(), rtol=0, atol=2e-3)
        assert not np.array_equal(a.k_values(), a.v_values())


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "truncated in magic"),
        (b"GGUF" + b"\0" * 20, "magic"),
        ((0x67677371).to_bytes(4, "little") + (2).to_bytes(4, "little"), "version 2"),
        (
            (0x67677371).to_bytes(4, "little") + (3).to_bytes(4, "little") + (5).to_bytes(4, "little"),
            "tokens",
        ),
        ((0x67677371).to_bytes(4, "little") + (3).to_bytes(4, "little") + (0).to_bytes(4, "little"), "no KV"),
        (
            (0x67677371).to_bytes(4, "little")
            + (3).to_bytes(4, "little")
            + (0).to_bytes(4, "little")
            + (2).to_bytes(4, "little"),
            "2 streams",
        ),
    ],
)
def test_bad_state_files_are_one_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(StateFormatError, match=r"^sequence state: ") as exc:
        parse_seq_state(data)
    assert says in str(exc.value)


@pytest.mark.llama
def test_gemma_iswa_state_is_two_caches_the_window_and_the_global_layers(
    runtime: Runtime, gemma_path: Path, tmp_path: Path
) -> None:
    info = read_model_info(gemma_path)
    state, raw, _ = capture(runtime, str(gemma_path), TEXT * 16, ctx=2048, log_dir=tmp_path)
    assert write_seq_state(state) == raw
    full, swa = state.caches
    n = len(state.prompt_tokens)
    assert n > info.swa_window  # the window is full: the SWA cache keeps only its last cells
    n_swa = sum(info.swa_layers)
    assert (len(full.layers), len(swa.layers)) == (info.n_layer - n_swa, n_swa)
    assert full.cells == n and full.positions.tolist() == list(range(n))
    assert swa.cells == info.swa_window and swa.positions.tolist() == list(range(n - info.swa_window, n))
    width = info.n_head_kv[0] * info.head_dim_k
    assert full.layers[0].k_values().shape == (n, width) and swa.layers[0].v_values().shape == (
        swa.cells,
        width,
    )
    # the window's cells hold the same rows as the full history's last cells would: the SWA layers'
    # K differ from the global layers' (other weights), but a layer's rows are finite and distinct
    k = swa.layers[0].k_values()
    assert np.isfinite(k).all() and not np.allclose(k[0], k[-1])


@pytest.mark.llama
@pytest.mark.parametrize("fa", ["on", "off"])
def test_a_state_rewritten_unchanged_restores_the_same_next_token_distributions(
    runtime: Runtime, tiny_model: Path, tmp_path: Path, fa: str
) -> None:
    """capture → parse → write → restore into a fresh server: the next 8 tokens and their top-5
    log-probabilities are exactly the baseline's (the injection path adds nothing of its own)."""
    mode = cast(FlashAttn, fa)
    model = str(tiny_model)
    state, raw, baseline = capture(runtime, model, TEXT, ctx=512, flash_attn=mode, log_dir=tmp_path, steps=8)
    rewritten = write_seq_state(state)
    assert rewritten == raw
    again = continue_from(runtime, model, TEXT, rewritten, ctx=512, flash_attn=mode, log_dir=tmp_path)
    assert len(baseline) == 8 and again == baseline
    # and the comparison can fail: a cache with one layer's K zeroed changes the distributions
    state.caches[0].layers[0].k[:] = 0
    zeroed = write_seq_state(state)
    broken = continue_from(runtime, model, TEXT, zeroed, ctx=512, flash_attn=mode, log_dir=tmp_path)
    assert broken != baseline


def test_a_state_cut_to_its_first_cells_is_what_the_slot_held_then() -> None:
    from edgebench.kvlab.state import CacheState, LayerKV, SeqState, truncated

    rows = np.arange(5 * 8, dtype=np.uint8).reshape(5, 8)
    layer = LayerKV(1, 8, rows.copy(), 1, rows.copy() + 1, 8)
    cache = CacheState(np.arange(5, dtype=np.int32), [[0]] * 5, False, [layer])
    packed = SeqState([-1, 1, 5, 10, 11, 12, 13, 14, 0], [cache, cache])
    cut = truncated(packed, 3)
    assert cut.prompt_tokens == [10, 11, 12] and cut.tokens[-1] == 0
    assert all(c.cells == 3 for c in cut.caches)
    assert cut.caches[0].layers[0].v.tolist() == (rows[:3] + 1).tolist()
    again = parse_seq_state(write_seq_state(cut))  # a file llama-server can read back
    assert again.prompt_tokens == [10, 11, 12] and again.caches[1].cells == 3
    with pytest.raises(StateFormatError, match="media"):
        truncated(SeqState([-1, 1, 5, 10, 11, 12, 13, 14, 1, 7], [cache]), 3)
    with pytest.raises(StateFormatError, match="6 cells asked"):
        truncated(packed, 6)
