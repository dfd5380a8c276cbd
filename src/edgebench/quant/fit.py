"""RAM at a target context for a recipe's file before it exists: the memory planner run on the
preview's tensor layout (what repacks, what stays mapped) with the KV cache and compute buffers."""

from __future__ import annotations

from collections.abc import Iterable

from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import MemoryPlan, plan_memory
from edgebench.quant.preview import FilePlan
from edgebench.runtime.flags import RuntimeConfig

__all__ = ["predicted_model", "ram_plan"]


def predicted_model(source: ModelInfo, plan: FilePlan, name: str | None = None) -> ModelInfo:
    """The source's ModelInfo with the sizes the recipe's file will have (no sha256 yet)."""
    by_name = {t.name: t.dst_bytes for t in plan.tensors}
    n_params = max(source.params, 1)
    return source.model_copy(
        update={
            "name": name or f"{source.name}-{plan.recipe.name}",
            "sha256": "",
            "file_size": plan.file_bytes,
            "bpw": round(8.0 * plan.weight_bytes / n_params, 3),
            "quant": f"recipe:{plan.recipe.name}",
            "tensor_bytes": plan.bytes_by_type(),
            "embd_bytes": by_name.get("token_embd.weight", 0),
            "expert_bytes": sum(b for n, b in by_name.items() if "_exps." in n),
        }
    )


def ram_plan(
    source: ModelInfo,
    plan: FilePlan,
    cfg: RuntimeConfig,
    *,
    host_arch: str = "x86_64",
    cpu_flags: Iterable[str] | None = None,
) -> MemoryPlan:
    """llama-server's buffers for the recipe's file run with `cfg` (context, KV types, mmap)."""
    return plan_memory(
        predicted_model(source, plan),
        cfg,
        host_arch=host_arch,
        cpu_flags=cpu_flags,
        weights_layout=plan.layout(),
    )
