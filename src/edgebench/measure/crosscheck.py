"""Cross-check the best config through llama-server: its own `timings` beside llama-bench's.

Users see llama-bench say one thing and the server another. Here the same RuntimeConfig is
served, a fixed prompt of random token ids (no tokenizer, no cache: `cache_prompt: false`) is
sent with a fixed generation length and greedy top-k 1 sampling, and the server's
prompt_per_second / predicted_per_second are stored beside the bench figures with their ratio.
The server decodes after the prompt, i.e. at depth n_prompt; llama-bench's tg128 runs at depth 0.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict

from edgebench.models.gguf import ModelInfo
from edgebench.runtime.flags import RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.server import ServerFailed, ServerProcess, fixed_completion
from edgebench.stats import summarize

__all__ = ["ServerCheck", "server_crosscheck"]

STAGE = "server_check"
VERSION = 1  # record schema version (edgebench.stages)


class ServerCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    config: RuntimeConfig
    n_prompt: int
    n_gen: int
    status: str
    cause: str
    startup_s: float | None
    pp_samples: list[float]
    tg_samples: list[float]
    pp_mean: float | None
    tg_mean: float | None
    bench_pp: float | None
    bench_tg: float | None
    pp_ratio: float | None  # server / bench
    tg_ratio: float | None
    peak_rss_mib: float


def server_crosscheck(
    runtime: Runtime,
    model: ModelInfo,
    cfg: RuntimeConfig,
    *,
    n_prompt: int,
    n_gen: int,
    reps: int,
    log_dir: Path,
    bench_pp: float | None,
    bench_tg: float | None,
) -> ServerCheck:
    ctx = ((n_prompt + n_gen + 64) // 256 + 1) * 256
    serve_cfg = cfg.model_copy(update={"ctx": ctx, "parallel": 1, "jinja": False})
    log_dir.mkdir(parents=True, exist_ok=True)
    srv = ServerProcess(
        runtime, model.path, serve_cfg, log_dir / f"server-check-{model.sha256[:12]}-{cfg.key()}.log"
    )
    pp: list[float] = []
    tg: list[float] = []
    status, cause, startup = "ok", "ok", None
    try:
        with srv:
            startup = srv.startup_s
            for i in range(reps + 1):  # the first request warms caches and is not counted
                body = fixed_completion(n_prompt, n_gen, model.n_vocab, seed=i)
                r = srv.client.post("/completion", json=body)
                r.raise_for_status()
                t = r.json()["timings"]
                if i > 0:
                    pp.append(float(t["prompt_per_second"]))
                    tg.append(float(t["predicted_per_second"]))
    except ServerFailed as exc:
        status, cause = exc.cause.value, exc.detail
    except httpx.TimeoutException:  # our limit, not the config's: retried next run (proc.TRANSIENT)
        status, cause = "timeout", "no answer within edgebench's request timeout"
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        status, cause = "failed", f"request failed: {exc}"[:240]
    ppm = summarize(pp).mean if pp else None
    tgm = summarize(tg).mean if tg else None
    return ServerCheck(
        model=model.name,
        config=serve_cfg,
        n_prompt=n_prompt,
        n_gen=n_gen,
        status=status,
        cause=cause,
        startup_s=round(startup, 2) if startup is not None else None,
        pp_samples=pp,
        tg_samples=tg,
        pp_mean=ppm,
        tg_mean=tgm,
        bench_pp=bench_pp,
        bench_tg=bench_tg,
        pp_ratio=ppm / bench_pp if ppm and bench_pp else None,
        tg_ratio=tgm / bench_tg if tgm and bench_tg else None,
        peak_rss_mib=round(srv.peak_rss_mib, 1),
    )
