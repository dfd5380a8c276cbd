"""The backend registry: every kind of server edgebench talks to, by name, with what it declares.

All of them speak the OpenAI API, so one client serves them; what differs is what a kind needs
(a model name to address), what it cannot do (an RK3588 NPU server's fixed context) and what
edgebench must never assume about it. The CLI, the pipeline and the gateway resolve a configured
backend here instead of matching kind strings themselves.
"""

from __future__ import annotations

from typing import NamedTuple

from edgebench.backends.base import Backend
from edgebench.backends.openai import OpenAICompatible
from edgebench.config import BackendConfig
from edgebench.errors import ConfigError

__all__ = ["BACKEND_KINDS", "BackendKind", "make_backend"]


class BackendKind(NamedTuple):
    name: str
    what: str
    needs_model: bool  # the server hosts several models: requests must name one
    default_max_ctx: int | None  # a limit the kind always has, when the config does not say


BACKEND_KINDS: dict[str, BackendKind] = {
    k.name: k
    for k in (
        BackendKind("openai", "any OpenAI-compatible endpoint", needs_model=False, default_max_ctx=None),
        BackendKind("llama-server", "a llama-server edgebench did not start", False, None),
        # rkllama (RKLLM on the RK3588 NPU): models are converted for a fixed context, 4096 by default
        BackendKind("rkllama", "RKLLM models on the RK3588 NPU via rkllama", True, 4096),
        BackendKind("ollama", "Ollama's OpenAI-compatible API", True, None),
        BackendKind("vllm", "vLLM's OpenAI-compatible server", True, None),
    )
}


def make_backend(spec: BackendConfig, *, api_key: str | None, timeout_s: float, stall_s: float) -> Backend:
    kind = BACKEND_KINDS.get(spec.kind)
    if kind is None:
        raise ConfigError(f"backend {spec.name!r}: unknown kind {spec.kind!r} ({', '.join(BACKEND_KINDS)})")
    if kind.needs_model and not spec.model:
        raise ConfigError(f"backend {spec.name!r}: a {spec.kind} server needs `model` (it hosts several)")
    return OpenAICompatible(
        spec.name,
        spec.url,
        model=spec.model,
        api_key=api_key,
        max_ctx=spec.max_ctx if spec.max_ctx is not None else kind.default_max_ctx,
        timeout_s=timeout_s,
        stall_s=stall_s,
    )
