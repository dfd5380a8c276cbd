"""Split a model over the head and RPC workers by each one's usable memory.

llama.cpp keeps the token embedding and the first layers on the head's CPU and offloads the last
`-ngl` layers to the other devices (here: the RPC workers, in --rpc order), dividing them by
`--tensor-split`; with -ngl above the layer count the output matrix goes to the last device too.
So the plan fills the head with the first layers its memory holds (after the embedding, its
compute, output and work buffers and the process overhead), then each worker in order, each
paying its own compute buffer (counted whole on every device: an upper bound), and puts the output
with the last worker used. Every figure is the memory planner's prediction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgebench.models.gguf import ModelInfo, _read_header
from edgebench.models.memory import plan_memory
from edgebench.runtime.flags import RuntimeConfig

__all__ = ["DeviceShare", "SplitPlan", "plan_split"]

_MIB = 1024 * 1024
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass
class DeviceShare:
    name: str  # "head" or the worker's host:port
    usable_mib: float
    layers: list[int] = field(default_factory=list)
    weights_mib: float = 0.0
    kv_mib: float = 0.0
    other_mib: float = 0.0  # compute, output, work buffers, overhead, the embedding (head)

    @property
    def total_mib(self) -> float:
        return self.weights_mib + self.kv_mib + self.other_mib


@dataclass
class SplitPlan:
    model: str
    ctx: int
    one_host_mib: float  # the whole model on the head alone (the planner's host total)
    fits_one_host: bool
    fits: bool
    devices: list[DeviceShare]
    shortfall_mib: float = 0.0  # what no device could take
    notes: list[str] = field(default_factory=list)

    @property
    def workers_used(self) -> list[DeviceShare]:
        return [d for d in self.devices[1:] if d.layers]

    def flags(self) -> list[str]:
        """llama-server / llama-cli flags for this split (none when the head holds it all)."""
        used = self.workers_used
        if not used:
            return []
        offloaded = sum(len(d.layers) for d in used)
        return ["-ngl", str(offloaded + 1), "--rpc", ",".join(d.name for d in used),
                "-ts", ",".join(str(len(d.layers)) for d in used)]  # fmt: skip


def plan_split(
    model: ModelInfo,
    cfg: RuntimeConfig,
    *,
    head_usable_mib: float,
    workers: Sequence[tuple[str, float]],
    cpu_flags: Sequence[str] | None = None,
) -> SplitPlan:
    plan = plan_memory(model, cfg, cpu_flags=cpu_flags)
    header, _ = _read_header(Path(model.path))
    per_layer = [0] * model.n_layer
    embd = output = 0
    for t in header.tensors:
        m = _LAYER.match(t.name)
        if m and int(m.group(1)) < model.n_layer:
            per_layer[int(m.group(1))] += t.n_bytes
        elif t.name in ("output.weight", "output_norm.weight"):
            output += t.n_bytes
        else:
            embd += t.n_bytes
    if model.output_tied:
        output += sum(t.n_bytes for t in header.tensors if t.name == "token_embd.weight")
    kv = [0] * model.n_layer
    for lk in plan.layers:
        kv[lk.layer] += lk.k_bytes + lk.v_bytes
    out = SplitPlan(model=model.name, ctx=plan.n_ctx, one_host_mib=plan.host_total_mib,
                    fits_one_host=plan.host_total_mib <= head_usable_mib, fits=False, devices=[])  # fmt: skip
    compute = plan.compute_mib
    fixed = embd / _MIB + compute + plan.output_mib + plan.work_mib + plan.overhead_mib + plan.recurrent_mib
    head = DeviceShare("head", head_usable_mib, other_mib=fixed)
    devices = [head, *(DeviceShare(ep, mib, other_mib=compute) for ep, mib in workers)]
    out.devices = devices
    if plan.recurrent_mib:
        out.notes.append("recurrent state counted on the head (llama.cpp places it with its layers)")
    i, d = 0, 0
    while i < model.n_layer and d < len(devices):
        dev = devices[d]
        need = (per_layer[i] + kv[i]) / _MIB
        last_layer = i == model.n_layer - 1
        extra = output / _MIB if (last_layer and d > 0) else 0.0
        if dev.total_mib + need + extra <= dev.usable_mib:
            dev.layers.append(i)
            dev.weights_mib += per_layer[i] / _MIB + extra
            dev.kv_mib += kv[i] / _MIB
            i += 1
        else:
            d += 1
    if i < model.n_layer:
        out.shortfall_mib = sum(per_layer[i:]) / _MIB + sum(kv[i:]) / _MIB
        return out
    if not any(dev.layers for dev in devices[1:]):
        # nothing offloaded: the output stays on the head, where a tied one is the embedding itself
        if not model.output_tied:
            head.weights_mib += output / _MIB
        if head.total_mib > head.usable_mib:
            out.shortfall_mib = head.total_mib - head.usable_mib
            return out
    elif devices[0].total_mib > devices[0].usable_mib:
        out.shortfall_mib = devices[0].total_mib - devices[0].usable_mib
        return out
    out.fits = True
    return out
