"""The context stage for several models, each probed from its serving spec."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgebench.host.probe import HostInfo
from edgebench.measure.context import ContextProbe, probe_context
from edgebench.measure.serving import serving_spec
from edgebench.models.gguf import ModelInfo
from edgebench.pipeline.events import Emit, TaskFinished, TaskStarted, silent
from edgebench.runtime.flags import FlashAttn
from edgebench.runtime.locate import Runtime
from edgebench.store import Store

__all__ = ["probe_models"]


def probe_models(
    store: Store,
    runtime: Runtime,
    host: HostInfo,
    targets: list[ModelInfo],
    *,
    budget_mib: float,
    swap_limit_mib: float,
    n_decode: int,
    log_dir: Path,
    kv: str | None = None,
    fa: FlashAttn | None = None,
    threads: int | None = None,
    rpc: tuple[str, ...] = (),
    tensor_split: tuple[float, ...] | None = None,
    contexts: Callable[[ModelInfo], list[int] | None] = lambda m: None,
    emit: Emit = silent,
) -> list[ContextProbe]:
    """Binary search for each model's stable context. The base config is the model's serving spec
    (the sweep's winner), with `kv`/`fa`/`threads` overriding it when given: by default the
    context is proven for exactly the config that will be served."""
    probes = []
    for m in targets:
        base = serving_spec(store, m, host).runtime
        update: dict[str, object] = {}
        if kv is not None:
            update |= {"cache_type_k": kv, "cache_type_v": kv}
        if fa is not None:
            update["flash_attn"] = fa
        if threads is not None:
            update["threads"] = threads
        if rpc:  # split over RPC workers: every layer offloaded to them
            update |= {"rpc": rpc, "tensor_split": tensor_split, "ngl": -1}
        base = base.model_copy(update=update)
        ctx_list = contexts(m)
        task = f"context:{m.sha256[:12]}"
        what = f"contexts {ctx_list}" if ctx_list else "2k … ctx_train"
        emit(TaskStarted(task=task, label=f"{m.name}: context probe at kv {base.cache_type_k} ({what})"))
        probes.append(
            probe_context(
                store,
                runtime,
                host,
                m,
                base,
                budget_mib=budget_mib,
                swap_limit_mib=swap_limit_mib,
                n_decode=n_decode,
                log_dir=log_dir,
                ctx_list=ctx_list,
            )
        )
        emit(TaskFinished(task=task))
    return probes
