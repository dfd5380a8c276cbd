"""The quality stage: targets (managed llama-server from the serving spec, remote backends), the
suite run per target, and a server that will not start stored as a failed row, not an abort."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from edgebench.backends.base import Backend
from edgebench.backends.managed import ManagedLlamaServer
from edgebench.backends.registry import make_backend
from edgebench.config import BackendConfig, Config
from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo
from edgebench.measure.serving import serving_spec
from edgebench.models.gguf import ModelInfo
from edgebench.pipeline.events import Emit, TaskFinished, TaskProgress, TaskStarted, silent
from edgebench.quality.runner import QualityResult, QualitySettings, Target, run_suite
from edgebench.quality.score import SuiteScore, score
from edgebench.quality.suite import Suite
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.proc import TRANSIENT
from edgebench.runtime.server import ServerFailed
from edgebench.store import Provenance, Store

__all__ = [
    "START_STAGE",
    "START_VERSION",
    "QualityRun",
    "StartFailure",
    "managed_target",
    "remote_target",
    "run_quality",
]

START_STAGE = "server_start"  # a llama-server that would not start for quality: stored, shown
START_VERSION = 1


class StartFailure(BaseModel):
    """llama-server would not start for a model: llama.cpp's reason, kept as a result row."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_sha256: str
    config: RuntimeConfig
    cause: str  # proc.ExitCause value
    detail: str
    log_tail: str
    transient: bool  # our timeout or the environment (port, foreign server): not the model's doing
    build_id: str
    host_fingerprint: str
    measured_at: str


class QualityRun(BaseModel):
    """What `quality` ran: a score per target that ran, a failure per target that could not."""

    model_config = ConfigDict(frozen=True)

    suite: str
    digest: str
    settings: QualitySettings
    scores: list[SuiteScore]
    failed: list[StartFailure]

    @property
    def complete(self) -> bool:
        return not self.failed


def managed_target(
    stack: ExitStack,
    cfg: Config,
    store: Store,
    host: HostInfo,
    runtime: Runtime,
    model: ModelInfo,
    *,
    timeout_s: float,
    stall_s: float,
) -> tuple[Backend, Target]:
    """Start llama-server with the model's serving spec (raises ServerFailed when it will not)."""
    rc = serving_spec(store, model, host).runtime
    mgr = ManagedLlamaServer(runtime, model, rc, cfg.data_dir / "logs", timeout_s=timeout_s, stall_s=stall_s)
    be = stack.enter_context(mgr)
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    return be, Target(
        label=model.name,
        mode="chat" if model.chat_template else "completion",
        provenance=prov,
        backend_id=f"llama-server|{rc.key()}",
    )


def remote_target(
    cfg: Config, name: str, host: HostInfo, *, timeout_s: float, stall_s: float
) -> tuple[Backend, Target]:
    spec: BackendConfig | None = next((b for b in cfg.backends if b.name == name), None)
    if spec is None:
        known = ", ".join(b.name for b in cfg.backends) or "none configured"
        raise ConfigError(f"--backend {name!r}: not in the config's [[backends]] (known: {known})")
    key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
    backend = make_backend(spec, api_key=key, timeout_s=timeout_s, stall_s=stall_s)
    ident = hashlib.sha256(f"{spec.kind}|{spec.url}|{spec.model}".encode()).hexdigest()
    prov = Provenance(build_id=f"remote:{spec.kind}", host_fingerprint=host.fingerprint, model_sha256=ident)
    label = f"{spec.name}:{spec.model}" if spec.model else spec.name
    return backend, Target(label=label, mode="chat", provenance=prov, backend_id=f"{spec.name}|{spec.url}")


def _suite_run(
    store: Store, be: Backend, target: Target, suite: Suite, settings: QualitySettings, emit: Emit
) -> list[QualityResult]:
    prompts = sum(len(i.prompts()) if settings.variants else 1 for i in suite.items)
    task = f"quality:{target.backend_id}"
    emit(
        TaskStarted(task=task, label=f"{target.label} · {suite.name}", total=prompts * (settings.samples + 1))
    )
    try:
        return run_suite(
            store,
            be,
            target,
            suite,
            settings,
            on_result=lambda r: emit(
                TaskProgress(task=task, label=f"{target.label} · {r.item} v{r.variant} s{r.sample}"[:70])
            ),
        )
    finally:
        emit(TaskFinished(task=task))


def _start_failure(
    store: Store, runtime: Runtime, host: HostInfo, model: ModelInfo, rc: RuntimeConfig, exc: ServerFailed
) -> StartFailure:
    f = StartFailure(
        model=model.name,
        model_sha256=model.sha256,
        config=rc,
        cause=exc.cause.value,
        detail=exc.detail,
        log_tail=exc.log_tail[-2000:],
        transient=exc.cause in TRANSIENT,
        build_id=runtime.build_id,
        host_fingerprint=host.fingerprint,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    prov = Provenance(build_id=runtime.build_id, host_fingerprint=host.fingerprint, model_sha256=model.sha256)
    params = {"runtime": rc.model_dump(mode="json")}
    store.put(START_STAGE, prov, params, f, status=f.cause, version=START_VERSION)
    return f


def run_quality(
    cfg: Config,
    store: Store,
    host: HostInfo,
    suite: Suite,
    settings: QualitySettings,
    *,
    runtime: Runtime | None,
    models: list[ModelInfo],
    backends: Sequence[str] = (),
    timeout_s: float = 300.0,
    stall_s: float = 60.0,
    emit: Emit = silent,
) -> QualityRun:
    """Every model (managed llama-server) and remote backend through the suite. A model whose
    server will not start is stored as a StartFailure with llama.cpp's reason; the others run."""
    scores: list[SuiteScore] = []
    failed: list[StartFailure] = []
    for m in models:
        assert runtime is not None
        with ExitStack() as stack:
            try:
                be, target = managed_target(
                    stack, cfg, store, host, runtime, m, timeout_s=timeout_s, stall_s=stall_s
                )
            except ServerFailed as exc:
                rc = serving_spec(store, m, host).runtime
                failed.append(_start_failure(store, runtime, host, m, rc, exc))
                continue
            scores.append(score(_suite_run(store, be, target, suite, settings, emit)))
    for name in backends:
        with ExitStack() as stack:
            be, target = remote_target(cfg, name, host, timeout_s=timeout_s, stall_s=stall_s)
            stack.callback(be.close)
            scores.append(score(_suite_run(store, be, target, suite, settings, emit)))
    return QualityRun(suite=suite.name, digest=suite.digest, settings=settings, scores=scores, failed=failed)
