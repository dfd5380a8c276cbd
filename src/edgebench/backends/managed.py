"""A llama-server edgebench starts itself for a model and RuntimeConfig, served through the same client."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from edgebench.backends.openai import OpenAICompatible
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerProcess

__all__ = ["ManagedLlamaServer"]


class ManagedLlamaServer:
    """`with ManagedLlamaServer(rt, model, cfg, log_dir) as backend: backend.chat(...)`."""

    def __init__(
        self,
        runtime: Runtime,
        model: ModelInfo,
        cfg: RuntimeConfig,
        log_dir: Path,
        *,
        timeout_s: float = 300.0,
        stall_s: float = 60.0,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        # --jinja only where there is a template to run; a base model is served for completions.
        serve = cfg.model_copy(update={"jinja": model.chat_template})
        self.server = ServerProcess(runtime, model.path, serve, log_dir / f"{model.name}-{cfg.key()}.log")
        self.model = model
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.backend: OpenAICompatible | None = None

    def __enter__(self) -> OpenAICompatible:
        self.server.start()
        self.backend = OpenAICompatible(
            f"llama-server:{self.model.name}",
            self.server.base_url,
            max_ctx=None,
            timeout_s=self.timeout_s,
            stall_s=self.stall_s,
        )
        return self.backend

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.backend is not None:
            self.backend.close()
        self.server.stop()
