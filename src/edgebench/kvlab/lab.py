"""The KV lab run: capture the model's real f16 cache on the shipped text, then measure every
scheme's effect on it, keeping llama.cpp's own kernels (native) and numpy simulations injected
into an f16 cache (simulated) apart, and checking the injection against native before trusting it.

One f16 llama-server scores every injected cache (restore → read positions, see score.py); each
native KV type gets its own server, scored the same way; llama-perplexity adds the full-vocabulary
native KLD over the whole text (native.py)."""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

import gguf
import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict

from edgebench.errors import EdgebenchError
from edgebench.host.busy import quality_threads
from edgebench.kvlab.fidelity import attention_error
from edgebench.kvlab.inject import LayerError, LayerRef, apply_plan, layer_refs, native_to_f16
from edgebench.kvlab.native import KldResult, NativeError, kld_base, native_kld
from edgebench.kvlab.schemes import Scheme, parse_scheme
from edgebench.kvlab.score import N_PROBS, Dist, Divergence, compare, read_positions, restore
from edgebench.kvlab.sequential import fill_sequentially
from edgebench.kvlab.state import SeqState, parse_seq_state, write_seq_state
from edgebench.models.gguf import ModelInfo
from edgebench.models.memory import plan_memory
from edgebench.runtime.bench import run_bench
from edgebench.runtime.flags import KV_TYPES, BenchTest, FlashAttn, RuntimeConfig
from edgebench.runtime.locate import Runtime
from edgebench.runtime.memlog import read_memory_log
from edgebench.runtime.server import ServerFailed, ServerProcess

__all__ = [
    "DEFAULT_SIMULATED",
    "LabError",
    "LabResult",
    "LabRow",
    "Validation",
    "load_text",
    "parse_native",
    "run_lab",
]

DEFAULT_SIMULATED = (
    "q8_0",
    "q4_0",
    "q8_0+rot",
    "q4_0+rot",
    "iq4_nl",
    "tq2",
    "tq3",
    "tq4",
    "tq3+qjl",
    "kivi2",
    "kivi4",
)
# the quantized types -ctk/-ctv offer, and the common asymmetric pair (f32/bf16 can be named: bf16 has no
# fast CPU kernel and takes minutes)
DEFAULT_NATIVE = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl", "q8_0/q4_0")
# Injected vs native: (simulated scheme, native type, llama.cpp's rotation on)
VALIDATIONS = (("q8_0", "q8_0", False), ("q4_0", "q4_0", False), ("q4_0+rot", "q4_0", True))
# Agreement: the injected mean KLD within this fraction of the native one, or their paired
# difference within 2 standard errors (positions are the pairs).
TOLERANCE_REL = 0.25
SEED_HIGH_FRACTION = 11 / 32  # seed 000's hybrid: layers 0-10 of 32 at q8_0, the rest q4_0
TEXT = "public-domain-en.txt"
MARGIN = 16  # context cells left free after the captured text


class LabError(EdgebenchError):
    """The lab cannot run as asked (the cause in one line)."""


class LabRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str  # "q4_0", "q8_0/q4_0" (K/V), "tq3", "hybrid …"
    # native: llama.cpp's kernels end to end; native cache: the cache llama.cpp quantized, scored
    # in an f16 server like the simulated rows (the injection check compares these two)
    source: Literal["native", "native cache", "simulated"]
    bits_k: float  # stored bits per element, scales and norms included (measured on this cache)
    bits_v: float
    rel_mse_k: float | None = None  # simulated: Σ(x̂−x)² / Σx² over every layer
    rel_mse_v: float | None = None
    score_rel_rmse: float | None = None  # proxy queries (fidelity.py)
    attn_tv: float | None = None
    kld: Divergence | None = None  # server protocol, vs the f16 cache
    ppl: KldResult | None = None  # llama-perplexity, native only
    ctx_fit: int | None = None  # planner: largest context within the RAM budget (predicted)
    kv_mib_per_1k: float | None = None  # native: llama.cpp's KV buffer per 1024 cells (measured, its log)
    decode_ts: float | None = None  # native: llama-bench tg32 at depth ctx/2, mean ± sd of its reps
    decode_sd: float | None = None
    kv_layers: str | None = None  # a hybrid's per-layer types (edgebench plan --kv-layers)
    validated: bool | None = None  # simulated rows: did the injection check pass

    @property
    def bits(self) -> float:
        return (self.bits_k + self.bits_v) / 2

    @property
    def vs_f16(self) -> float:
        return 16 / self.bits

    @property
    def vs_f32(self) -> float:
        return 32 / self.bits


class Validation(BaseModel):
    simulated: str
    native: str
    rotation: bool
    kld_simulated: float
    kld_native: float
    diff: float
    diff_se: float
    agree: bool


class LabResult(BaseModel):
    model: str
    model_sha256: str
    build_id: str
    host_fingerprint: str
    text_sha256: str
    ctx: int
    tokens: int
    positions: int
    flash_attn: FlashAttn
    n_probs: int
    budget_mib: float
    roundtrip_kld_max: float  # restoring the unmodified cache: must be 0
    validations: list[Validation]
    rows: list[LabRow]
    sensitivity: dict[int, float]  # model layer → mean KLD, that layer alone at the low type (one pass)
    step: int  # tokens per round of the sequential fill
    sensitivity_scheme: str
    recommendation: str
    wall_s: float
    notes: list[str] = []  # what could not be measured (e.g. a llama-perplexity run), one line each


def load_text(path: Path | None = None) -> str:
    if path is None:
        return resources.files("edgebench").joinpath("data", "texts", TEXT).read_text(encoding="utf-8")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"text {path}: {exc}") from exc


def _bits(errors: Sequence[LayerError], role: str) -> float:
    mine = [e for e in errors if e.role == role]
    return sum(e.bits for e in mine) / max(sum(e.elements for e in mine), 1)


def _rel_mse(errors: Sequence[LayerError], role: str) -> float:
    mine = [e for e in errors if e.role == role]
    return sum(e.sq_err for e in mine) / max(sum(e.sq_ref for e in mine), 1e-30)


def _native_bits(kv: str) -> float:
    """Bits per element of a llama.cpp cache type (its block size and bytes per block)."""
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[kv.upper()]]
    return 8 * size / block


def _layers_spec(plan: dict[int, tuple[Scheme, Scheme]]) -> str:
    """{layer: (k, v)} → '0-4:q8_0,5-17:q4_0' (the planner's --kv-layers syntax)."""
    parts, start = [], None
    layers = sorted(plan)
    for i, il in enumerate(layers):
        name = plan[il][0].name if plan[il][0] == plan[il][1] else f"{plan[il][0].name}/{plan[il][1].name}"
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if start is None:
            start = il
        nxt_name = None
        if nxt is not None and nxt == il + 1:
            k, v = plan[nxt]
            nxt_name = k.name if k == v else f"{k.name}/{v.name}"
        if nxt_name != name:
            parts.append(f"{start}-{il}:{name}" if start != il else f"{il}:{name}")
            start = None
    return ",".join(parts)


class _Fit:
    """Largest context (multiple of 256, ≤ ctx_train) whose predicted host total fits the budget
    with K and V at the given bits per element: the planner's f16 plan with its KV scaled."""

    def __init__(self, info: ModelInfo, cfg: RuntimeConfig, budget_mib: float) -> None:
        self.info, self.cfg, self.budget = info, cfg, budget_mib
        self._plans: dict[int, tuple[float, float]] = {}

    def _parts(self, ctx: int) -> tuple[float, float]:
        if ctx not in self._plans:
            p = plan_memory(self.info, self.cfg.model_copy(update={"ctx": ctx}))
            self._plans[ctx] = (p.host_total_mib - p.kv_mib, p.kv_mib)
        return self._plans[ctx]

    def __call__(self, bits_k: float, bits_v: float) -> int:
        scale = (bits_k + bits_v) / 32

        def fits(ctx: int) -> bool:
            rest, kv = self._parts(ctx)
            return rest + kv * scale <= self.budget

        lo, hi = 0, self.info.ctx_train // 256
        while lo < hi:  # largest multiple of 256 that fits
            mid = (lo + hi + 1) // 2
            if fits(mid * 256):
                lo = mid
            else:
                hi = mid - 1
        return lo * 256


def parse_native(native: Sequence[str]) -> list[tuple[str, str]]:
    """'q8_0' or 'q8_0/q4_0' (K/V) → (k, v); a type llama.cpp does not offer is one line."""
    out = []
    for spec in native:
        k, _, v = spec.partition("/")
        v = v or k
        for t in (k, v):
            if t not in KV_TYPES:
                raise LabError(f"KV type {t!r}: this llama.cpp build offers {', '.join(KV_TYPES)}")
        out.append((k, v))
    return out


class _Scorer:
    """The f16 server that restores caches and reads the scored positions."""

    def __init__(
        self, srv: ServerProcess, slot_dir: Path, tokens: list[int], positions: list[int], step: int
    ) -> None:
        self.srv, self.dir, self.tokens, self.positions, self.step = srv, slot_dir, tokens, positions, step

    def read(self, state: SeqState, name: str = "kv.bin") -> list[Dist]:
        (self.dir / name).write_bytes(write_seq_state(state))
        restore(self.srv, name)
        return read_positions(self.srv, self.tokens, self.positions)


def _kv_per_1k(log: Path) -> float | None:
    """llama.cpp's KV buffer per 1024 cells, from the server's own log (every layer holds every
    cell here: the lab runs --swa-full)."""
    try:
        mem = read_memory_log(log)
    except OSError:
        return None
    host, cells = mem.host, mem.n_ctx
    if host is None or not host.kv_mib or not cells:
        return None
    return host.kv_mib * 1024 / cells


def _decode(
    runtime: Runtime, info: ModelInfo, cfg: RuntimeConfig, k: str, v: str, notes: list[str]
) -> tuple[float, float] | None:
    """Decode t/s with this cache type at half the lab's context (llama-bench tg32, 3 reps, as
    the sweep runs it); a failure is a note, not the end of the lab."""
    bcfg = cfg.model_copy(update={"cache_type_k": k, "cache_type_v": v, "swa_full": False})
    out = run_bench(runtime, info.path, bcfg, BenchTest(n_prompt=0, n_gen=32, depth=cfg.ctx // 2, reps=3))
    if not out.runs:
        notes.append(f"decode speed, KV {k}/{v}: llama-bench {out.status.value}: {out.detail}")
        return None
    return out.runs[0].avg_ts, out.runs[0].stddev_ts


def _native_name(k: str, v: str, rot: bool) -> str:
    return (k if k == v else f"{k}/{v}") + ("" if rot else " (rotation off)")


def _capture_tokens(srv: ServerProcess, slot_dir: Path, tokens: list[int], name: str) -> SeqState:
    """Process `tokens` in slot 0 and return the cache the server saved for them."""
    try:
        body = {"prompt": tokens, "n_predict": 1, "cache_prompt": True, "id_slot": 0}
        srv.client.post("/completion", json=body).raise_for_status()
        save = {"filename": name}
        srv.client.post("/slots/0", params={"action": "save"}, json=save).raise_for_status()
    except httpx.HTTPError as exc:
        raise LabError(f"llama-server ({srv.log_file.name}): {exc}") from exc
    return parse_seq_state((slot_dir / name).read_bytes())


def _capture(srv: ServerProcess, slot_dir: Path, text: str, ctx: int) -> SeqState:
    try:
        tok = srv.client.post("/tokenize", json={"content": text, "add_special": True}).raise_for_status()
        tokens = [int(t) for t in tok.json()["tokens"]]
    except httpx.HTTPError as exc:
        raise LabError(f"llama-server ({srv.log_file.name}) /tokenize: {exc}") from exc
    if len(tokens) < ctx:
        raise LabError(
            f"the text has {len(tokens)} tokens for this model: too short for --ctx {ctx} "
            "(give a longer --text or a smaller --ctx)"
        )
    # room for the sampled token: a prompt that reaches n_ctx is truncated, and a truncated slot
    # is not reused by the next request
    return _capture_tokens(srv, slot_dir, tokens[: ctx - MARGIN], "base.bin")


def run_lab(
    runtime: Runtime,
    info: ModelInfo,
    *,
    host_fingerprint: str,
    ctx: int = 512,
    text: str | None = None,
    positions: int = 64,
    simulated: Sequence[str] = DEFAULT_SIMULATED,
    native: Sequence[str] = DEFAULT_NATIVE,
    perplexity: bool = True,
    sensitivity_scheme: str = "q4_0",
    step: int = 1,
    budget_mib: float,
    flash_attn: FlashAttn = "on",
    threads: int | None = None,
    log_dir: Path,
    emit: Callable[[str], None] = lambda _msg: None,
) -> LabResult:
    t0 = time.monotonic()
    threads = quality_threads(threads)  # KLD does not depend on it: the spare cores
    if ctx < 64 or ctx > info.ctx_train:
        raise LabError(f"--ctx {ctx}: between 64 and the model's training context {info.ctx_train}")
    if info.recurrent_layers:
        raise LabError(
            f"{info.name}: {len(info.recurrent_layers)} recurrent layers — the KV lab reads attention "
            "caches only, and a slot file of this model also holds recurrent state"
        )
    if not 1 <= step <= 64:
        raise LabError(f"--step {step}: between 1 and 64 tokens per round")
    if not 2 <= positions <= ctx // 2:
        raise LabError(f"--positions {positions}: between 2 and half the context ({ctx // 2})")
    schemes = [parse_scheme(s) for s in simulated]
    low = parse_scheme(sensitivity_scheme)
    pairs = parse_native(native)
    if perplexity and "llama-perplexity" not in runtime.binaries:
        raise LabError("this llama.cpp build has no llama-perplexity (rebuild, or pass --no-perplexity)")
    body = text if text is not None else load_text()
    # --swa-full: llama-server reuses a sliding-window model's cache for a shorter prompt only
    # from a context checkpoint, which a restored slot does not have (server-context.cpp); with
    # the SWA cache at full size every layer holds every token and the prefix is reused as is.
    base_cfg = RuntimeConfig(threads=threads, ctx=ctx, flash_attn=flash_attn, parallel=1, swa_full=True)
    fit = _Fit(info, base_cfg.model_copy(update={"swa_full": False}), budget_mib)  # as users run it
    log_dir.mkdir(parents=True, exist_ok=True)
    rows: list[LabRow] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgebench-kv-") as d:
        slot_dir = Path(d)
        cfg = base_cfg.model_copy(update={"extra": ("--slot-save-path", str(slot_dir))})
        emit(f"capturing the f16 cache of {info.name} at context {ctx}")
        with _server(runtime, info, cfg, log_dir / "kvlab-f16.log", verbose=True) as srv:
            state = _capture(srv, slot_dir, body, ctx)
        refs = layer_refs(info, state)
        tokens = state.prompt_tokens
        n = len(tokens)
        pos = list(range(n - positions, n))
        # native first (one server at a time: a board holds one model): llama.cpp's kernels
        # scored end to end, and the cache they wrote, kept for the f16 server below
        natives: list[tuple[str, str, bool, list[Dist], SeqState]] = []
        kv_mib: dict[tuple[str, str, bool], float | None] = {}
        speed: dict[tuple[str, str], tuple[float, float] | None] = {}
        speed[("f16", "f16")] = _decode(runtime, info, base_cfg, "f16", "f16", notes)
        for k, v in pairs:
            for rot in (True, False) if (k, v) in {(x, x) for _, x, _ in VALIDATIONS} else (True,):
                emit(f"native {_native_name(k, v, rot)}: llama-server -ctk {k} -ctv {v}")
                ncfg = cfg.model_copy(update={"cache_type_k": k, "cache_type_v": v})
                env = {} if rot else {"LLAMA_ATTN_ROT_DISABLE": "1"}
                log = log_dir / f"kvlab-{k}-{v}-rot{int(rot)}.log"
                with _server(runtime, info, ncfg, log, env, verbose=True) as srv:
                    saved = _capture_tokens(srv, slot_dir, tokens, "native.bin")
                    natives.append((k, v, rot, read_positions(srv, tokens, pos), saved))
                kv_mib[(k, v, rot)] = _kv_per_1k(log)
                if rot:
                    speed[(k, v)] = _decode(runtime, info, base_cfg, k, v, notes)
        native_rows: dict[tuple[str, str, bool], LabRow] = {}
        cache_rows: dict[tuple[str, str, bool], LabRow] = {}
        with _server(runtime, info, cfg, log_dir / "kvlab-f16-score.log") as srv:
            scorer = _Scorer(srv, slot_dir, tokens, pos, step)
            base = scorer.read(state)
            again = compare(base, scorer.read(state))
            f16_ts = speed.get(("f16", "f16"))
            rows.append(
                LabRow(
                    method="f16", source="native", bits_k=16, bits_v=16, kld=again, ctx_fit=fit(16, 16),
                    kv_mib_per_1k=_kv_per_1k(log_dir / "kvlab-f16.log"),
                    decode_ts=f16_ts[0] if f16_ts else None, decode_sd=f16_ts[1] if f16_ts else None,
                )
            )  # fmt: skip
            for k, v, rot, dists, saved in natives:
                bk, bv = _native_bits(k), _native_bits(v)
                name = _native_name(k, v, rot)
                ts = speed.get((k, v))
                native_rows[(k, v, rot)] = LabRow(
                    method=name, source="native", bits_k=bk, bits_v=bv, kld=compare(base, dists),
                    ctx_fit=fit(bk, bv), kv_mib_per_1k=kv_mib.get((k, v, rot)),
                    decode_ts=ts[0] if ts and rot else None, decode_sd=ts[1] if ts and rot else None,
                )  # fmt: skip
                injected = native_to_f16(saved, refs, rotated=rot)
                cache_rows[(k, v, rot)] = LabRow(
                    method=name, source="native cache", bits_k=bk, bits_v=bv,
                    kld=compare(base, scorer.read(injected)), ctx_fit=fit(bk, bv),
                )  # fmt: skip
            by_name: dict[str, LabRow] = {}
            for s in schemes:
                emit(f"simulated {s.name}: quantize the captured K/V, restore, score {positions} positions")
                row = _simulate(scorer, state, refs, {r.layer: (s, s) for r in refs}, s.name, base, fit)
                by_name[s.name] = row
                rows.append(row)
            emit(f"per-layer sensitivity: one layer at a time at {low.name}")
            sens = {}
            for r in refs:
                one = apply_plan(state, refs, {r.layer: (low, low)})[0]
                sens[r.layer] = compare(base, scorer.read(one)).mean_kld
            rows.extend(_hybrids(scorer, state, refs, sens, base, fit))
        validations = _validate(by_name, cache_rows)
        trusted = all(v.agree for v in validations) and bool(validations)
        rows = [r.model_copy(update={"validated": trusted}) if r.source == "simulated" else r for r in rows]
        if perplexity:
            text_file = slot_dir / "text.txt"
            text_file.write_text(body, encoding="utf-8")
            emit("llama-perplexity --kl-divergence: the f16 base logits")
            base_file = kld_base(
                runtime, info.path, text_file, slot_dir / "base.kld", ctx=ctx, threads=threads
            )
            for key, row in list(native_rows.items()):
                k, v, rot = key
                emit(f"llama-perplexity --kl-divergence: {row.method}")
                try:
                    ppl = native_kld(
                        runtime,
                        info.path,
                        text_file,
                        base_file,
                        k_type=k,
                        v_type=v,
                        ctx=ctx,
                        threads=threads,
                        flash_attn=flash_attn,
                        rotation=rot,
                    )
                except NativeError as exc:  # the server-scored rows stand; say what is missing
                    notes.append(f"llama-perplexity, {row.method}: {exc}")
                    continue
                native_rows[key] = row.model_copy(update={"ppl": ppl})
        rows[1:1] = [*native_rows.values(), *cache_rows.values()]
    return LabResult(
        model=info.name,
        model_sha256=info.sha256,
        build_id=runtime.build_id,
        host_fingerprint=host_fingerprint,
        text_sha256=hashlib.sha256(body.encode()).hexdigest(),
        ctx=ctx,
        tokens=n,
        positions=positions,
        flash_attn=flash_attn,
        n_probs=N_PROBS,
        budget_mib=budget_mib,
        roundtrip_kld_max=max(again.kld) if again.kld else 0.0,
        validations=validations,
        rows=rows,
        sensitivity=sens,
        sensitivity_scheme=low.name,
        step=step,
        recommendation=recommend(rows),
        notes=notes,
        wall_s=time.monotonic() - t0,
    )


def _server(
    runtime: Runtime,
    info: ModelInfo,
    cfg: RuntimeConfig,
    log: Path,
    env: dict[str, str] | None = None,
    *,
    verbose: bool = False,
) -> ServerProcess:
    return _Started(runtime, info.path, cfg, log, env=env, verbose=verbose)


class _Started(ServerProcess):
    """A ServerProcess whose start failure is the lab's one-line error."""

    def __enter__(self) -> ServerProcess:
        try:
            return super().__enter__()
        except ServerFailed as exc:
            raise LabError(f"llama-server ({self.log_file.name}): {exc}") from exc


def _simulate(
    scorer: _Scorer,
    state: SeqState,
    refs: list[LayerRef],
    plan: dict[int, tuple[Scheme, Scheme]],
    method: str,
    base: list[Dist],
    fit: _Fit,
    kv_layers: str | None = None,
) -> LabRow:
    new, errors = apply_plan(state, refs, plan)  # one pass: the error on the captured K/V
    filled = fill_sequentially(scorer.srv, scorer.dir, state, refs, plan, scorer.tokens, step=scorer.step)
    div = compare(base, scorer.read(filled))
    scores = [
        attention_error(
            state.caches[r.cache].layers[r.index].k_values(),
            new.caches[r.cache].layers[r.index].k_values(),
            r.head_dim_k,
        )
        for r in refs
        if r.layer in plan
    ]
    bk, bv = _bits(errors, "k"), _bits(errors, "v")
    return LabRow(
        method=method,
        source="simulated",
        bits_k=bk,
        bits_v=bv,
        rel_mse_k=_rel_mse(errors, "k"),
        rel_mse_v=_rel_mse(errors, "v"),
        score_rel_rmse=float(np.mean([s.score_rel_rmse for s in scores])),
        attn_tv=float(np.mean([s.attn_tv for s in scores])),
        kld=div,
        ctx_fit=fit(bk, bv),
        kv_layers=kv_layers,
    )


def _hybrids(
    scorer: _Scorer,
    state: SeqState,
    refs: list[LayerRef],
    sens: dict[int, float],
    base: list[Dist],
    fit: _Fit,
) -> list[LabRow]:
    """Seed 000's layout (the first 11/32 of the layers at q8_0, the rest q4_0) and the same
    number of q8_0 layers given to the layers the sensitivity pass found most sensitive: equal
    memory, so the KLDs compare the placement alone."""
    hi, lo = parse_scheme("q8_0"), parse_scheme("q4_0")
    layers = sorted(r.layer for r in refs)
    n_hi = max(1, round(SEED_HIGH_FRACTION * len(layers)))
    seed_hi = set(layers[:n_hi])
    sens_hi = set(sorted(layers, key=lambda il: -sens[il])[:n_hi])
    out = []
    for label, chosen in (("seed layout", seed_hi), ("by sensitivity", sens_hi)):
        plan = {il: (hi, hi) if il in chosen else (lo, lo) for il in layers}
        spec = _layers_spec(plan)
        out.append(_simulate(scorer, state, refs, plan, f"hybrid {label}", base, fit, kv_layers=spec))
    return out


def _validate(sim: dict[str, LabRow], native: dict[tuple[str, str, bool], LabRow]) -> list[Validation]:
    out = []
    for s_name, n_type, rot in VALIDATIONS:
        s, n = sim.get(s_name), native.get((n_type, n_type, rot))
        if s is None or n is None or s.kld is None or n.kld is None:
            continue
        d = np.array(s.kld.kld) - np.array(n.kld.kld)
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        rel_ok = abs(s.kld.mean_kld - n.kld.mean_kld) <= TOLERANCE_REL * max(n.kld.mean_kld, 1e-12)
        out.append(
            Validation(
                simulated=s_name,
                native=n_type + ("" if rot else " (rotation off)"),
                rotation=rot,
                kld_simulated=s.kld.mean_kld,
                kld_native=n.kld.mean_kld,
                diff=float(d.mean()),
                diff_se=se,
                agree=rel_ok or abs(float(d.mean())) <= 2 * se,
            )
        )
    return out


def recommend(rows: Sequence[LabRow], max_kld: float = 0.01, min_top_pct: float = 99.0) -> str:
    """The quantized native type with the fewest bits whose measured KLD (+ 2 SE) and top-1
    agreement stay within the thresholds (llama.cpp can run it today), with its evidence; else
    keep f16, naming the closest."""
    quantized = [
        r for r in rows
        if r.source == "native" and "rotation off" not in r.method and r.kld is not None and r.bits < 16
    ]  # fmt: skip
    ok = [
        r for r in quantized
        if r.kld is not None and r.kld.mean_kld + 2 * r.kld.kld_se <= max_kld
        and r.kld.same_top_pct >= min_top_pct
    ]  # fmt: skip

    def evidence(r: LabRow) -> str:
        assert r.kld is not None
        return (
            f"KLD {r.kld.mean_kld:.4f} ± {r.kld.kld_se:.4f}, top-1 agreement {r.kld.same_top_pct:.1f}% "
            f"over {r.kld.positions} positions"
        )

    if not ok:
        if not quantized:
            return "keep an f16 cache: no quantized KV type was measured"
        close = min(quantized, key=lambda r: r.kld.mean_kld if r.kld else math.inf)
        return (
            f"keep an f16 cache: no KV type stayed within KLD {max_kld} and {min_top_pct:g}% top-1; "
            f"the closest, {close.method} ({close.bits:.1f} bits), has {evidence(close)}"
        )
    best = min(ok, key=lambda r: (r.bits, r.kld.mean_kld if r.kld else 0))
    k, _, v = best.method.partition("/")
    return (
        f"-ctk {k} -ctv {v or k}: {best.bits:.1f} bits/element ({best.vs_f16:.2f}× smaller than f16), "
        + evidence(best)
        + (f"; context in budget {best.ctx_fit}" if best.ctx_fit else "")
    )
