"""Put a simulated scheme into a captured f16 cache: each layer's K and V rows go through their
scheme (quantize → dequantize) and are written back as f16, so an f16 llama-server restores the
cache the scheme would have left. Per-layer plans give each model layer its own K and V scheme."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import gguf
import numpy as np

from edgebench.kvlab.schemes import Role, Scheme, roundtrip, unrotate
from edgebench.kvlab.state import SeqState, StateFormatError
from edgebench.models.gguf import ModelInfo

__all__ = ["LayerError", "LayerRef", "apply_plan", "layer_refs", "native_to_f16"]

_F16 = int(gguf.GGMLQuantizationType.F16)


@dataclass(frozen=True)
class LayerRef:
    """Where a state layer sits: its cache and index there, the model layer, head sizes."""

    cache: int
    index: int
    layer: int  # model layer (blk.N)
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int


@dataclass(frozen=True)
class LayerError:
    """What a scheme did to one layer's K or V: squared error and the stored bits."""

    layer: int
    role: Role
    scheme: str
    sq_err: float
    sq_ref: float
    elements: int
    bits: int


def layer_refs(info: ModelInfo, state: SeqState) -> list[LayerRef]:
    """Map the state's layers to model layers: one cache holds every attention layer in order; an
    iSWA model's state holds the full-attention layers, then the sliding-window ones."""
    attn = [il for il in range(info.n_layer) if il not in info.recurrent_layers and info.n_head_kv[il] > 0]
    if len(state.caches) == 2:
        groups = [
            [il for il in attn if not info.swa_layers[il]],
            [il for il in attn if info.swa_layers[il]],
        ]
    else:
        groups = [attn]
    refs = []
    for ci, (cache, layers) in enumerate(zip(state.caches, groups, strict=False)):
        if cache.cells and len(cache.layers) != len(layers):
            raise StateFormatError(
                f"sequence state: cache {ci} holds {len(cache.layers)} layers, {info.name} has "
                f"{len(layers)} such attention layers (shared-KV layers are not supported)"
            )
        for i, (il, lk) in enumerate(zip(layers, cache.layers, strict=False)):
            n_kv = info.n_head_kv[il]
            k_w, v_w = lk.k_row_bytes // 2, lk.v_row_bytes // 2
            if lk.k_type != _F16 or lk.v_type != _F16:
                raise StateFormatError(
                    "sequence state: the cache is not f16 (the lab captures with -ctk f16 -ctv f16)"
                )
            if k_w % n_kv or v_w % n_kv:
                raise StateFormatError(
                    f"sequence state: layer {il} rows ({k_w}, {v_w}) do not split into {n_kv} KV heads"
                )
            refs.append(LayerRef(ci, i, il, n_kv, k_w // n_kv, v_w // n_kv))
    return refs


def apply_plan(
    state: SeqState, refs: list[LayerRef], plan: dict[int, tuple[Scheme, Scheme]], *, seed: int = 0
) -> tuple[SeqState, list[LayerError]]:
    """A copy of `state` with each model layer's K and V through `plan[layer]` (layers missing
    from the plan stay f16); the error each scheme made on the layer's real rows."""
    out = copy.deepcopy(state)
    errors = []
    for ref in refs:
        if ref.layer not in plan:
            continue
        lk = out.caches[ref.cache].layers[ref.index]
        roles: tuple[Role, Role] = ("k", "v")
        for role, scheme in zip(roles, plan[ref.layer], strict=True):
            rows = lk.k if role == "k" else lk.v
            x = rows.view(np.float16).astype(np.float32)
            hd = ref.head_dim_k if role == "k" else ref.head_dim_v
            rt = roundtrip(x, scheme, role, head_dim=hd, seed=seed + ref.layer)
            back = rt.values.astype(np.float16)
            rows[:] = back.view(np.uint8).reshape(rows.shape)
            diff = back.astype(np.float32) - x
            errors.append(
                LayerError(
                    ref.layer,
                    role,
                    scheme.name,
                    float((diff * diff).sum()),
                    float((x * x).sum()),
                    x.size,
                    rt.bits,
                )
            )
    return out, errors


def native_to_f16(state: SeqState, refs: list[LayerRef], *, rotated: bool) -> SeqState:
    """A cache llama.cpp quantized itself (-ctk/-ctv), dequantized into f16 rows an f16 server
    restores: llama.cpp's own quantization scored the way the simulated schemes are. `rotated`:
    the cache was written with llama.cpp's Hadamard rotation, undone here (H is its own inverse)."""
    out = copy.deepcopy(state)
    for ref in refs:
        lk = out.caches[ref.cache].layers[ref.index]
        for role, hd in (("k", ref.head_dim_k), ("v", ref.head_dim_v)):
            qtype = lk.k_type if role == "k" else lk.v_type
            vals = lk.k_values() if role == "k" else lk.v_values()
            if rotated and qtype != _F16 and hd % 64 == 0:
                vals = unrotate(vals, hd, "k" if role == "k" else "v")
            rows = vals.astype(np.float16).view(np.uint8).reshape(vals.shape[0], -1).copy()
            if role == "k":
                lk.k, lk.k_type, lk.k_row_bytes = rows, _F16, rows.shape[1]
            else:
                lk.v, lk.v_type, lk.v_row_bytes = rows, _F16, rows.shape[1]
                if lk.v_el_bytes:
                    lk.v_el_bytes = 2
    return out
