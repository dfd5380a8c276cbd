"""Native truth for a KV cache type: llama.cpp's own kernels, measured by `llama-perplexity
--kl-divergence` against the f16-cache logits of the same model on the same text.

A base run writes the f16 logits once (`--kl-divergence-base FILE`); each KV type (or asymmetric
K/V pair) then reads them back and prints mean KLD, the top-token agreement and the perplexity
ratio, each with its ± (llama.cpp's standard error over the scored tokens). Quantized K/V are
Hadamard-rotated by llama.cpp (src/llama-kv-cache.cpp); `rotation=False` sets
LLAMA_ATTN_ROT_DISABLE=1 to measure them without it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime import proc
from edgebench.runtime.flags import KV_TYPES, FlashAttn
from edgebench.runtime.locate import Runtime
from edgebench.textsafe import one_line

__all__ = ["KldResult", "NativeError", "kld_base", "native_kld", "parse_chunks", "parse_kld"]


# llama.cpp's logger is a leaked singleton whose worker thread may not have printed the last lines
# when the process exits (llama.cpp issue #22142): llama-perplexity's statistics block, which comes
# last, goes missing (here: 1 run in 10 for q4_0, 4 in 6 for f16, from a plain shell pipe too). The
# chunk lines before it carry the same running figures: the last one printed stands in, and a run
# is repeated (up to ATTEMPTS) until the figures cover every chunk; the count covered is recorded.
ATTEMPTS = 4


class NativeError(EdgebenchError):
    """llama-perplexity could not measure this configuration (the cause in one line)."""


@dataclass(frozen=True)
class KldResult:
    k_type: str
    v_type: str
    flash_attn: FlashAttn
    rotation: bool
    mean_kld: float
    mean_kld_pm: float
    same_top_pct: float | None  # None: llama-perplexity printed no token statistics (Q equal to the base)
    same_top_pm: float | None
    ppl: float
    ppl_base: float
    ln_ppl_ratio: float
    ln_ppl_ratio_pm: float
    chunks: int  # chunks the figures cover
    chunks_total: int  # chunks of the text (fewer covered: the last lines were lost, see ATTEMPTS)

    @property
    def dppl_pct(self) -> float:
        return 100.0 * (self.ppl / self.ppl_base - 1.0)


_NUM = r"([-+]?(?:nan|inf|\d+(?:\.\d+)?(?:e[-+]?\d+)?))"  # a ± is -nan when Q equals the base
_FIELDS = {
    "mean_kld": re.compile(rf"^Mean\s+KLD:\s*{_NUM}\s*±\s*{_NUM}", re.M),
    "same_top": re.compile(rf"^Same top p:\s*{_NUM}\s*±\s*{_NUM}\s*%", re.M),
    "ppl": re.compile(rf"^Mean PPL\(Q\)\s*:\s*{_NUM}", re.M),
    "ppl_base": re.compile(rf"^Mean PPL\(base\)\s*:\s*{_NUM}", re.M),
    "ln_ratio": re.compile(rf"^Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*{_NUM}\s*±\s*{_NUM}", re.M),
}


_OPTIONAL = ("same_top",)  # left out by llama-perplexity when every token's probability is unchanged


# a chunk line: running PPL ±, ln(PPL(Q)/PPL(base)) ±, KLD ±, Δp RMS ± %, same top p ± %
_CHUNK = re.compile(
    rf"^\s*(\d+)\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+{_NUM}\s*±\s*{_NUM}\s+"
    rf"{_NUM}\s*±\s*{_NUM}\s*%\s+{_NUM}\s*±\s*{_NUM}\s*%\s*$",
    re.M,
)
_TOTAL = re.compile(r"computing over (\d+) chunks")


def parse_chunks(text: str) -> tuple[int, int, dict[str, tuple[float, ...]]] | None:
    """(chunks covered, chunks in the text, figures) from the last chunk line printed: each line
    carries the running statistics of every chunk so far, so the last one stands for the summary
    when the summary itself was lost (see ATTEMPTS). None without a chunk line."""
    lines = _CHUNK.findall(text)
    total = _TOTAL.search(text)
    if not lines or total is None:
        return None
    n, ppl, _, ln, ln_pm, kld, kld_pm, _, _, same, same_pm = lines[-1]
    figures = {
        "mean_kld": (float(kld), float(kld_pm)),
        "same_top": (float(same), float(same_pm)),
        "ppl": (float(ppl),),
        "ppl_base": (float(ppl) / math.exp(float(ln)),),
        "ln_ratio": (float(ln), float(ln_pm)),
    }
    return int(n), int(total.group(1)), figures


def parse_kld(stdout: str) -> dict[str, tuple[float, ...]]:
    """The statistics block llama-perplexity prints after a --kl-divergence run."""
    out: dict[str, tuple[float, ...]] = {}
    for key, rx in _FIELDS.items():
        m = rx.search(stdout)
        if m is None and key in _OPTIONAL:
            continue
        if m is None:
            raise NativeError(f"llama-perplexity: no {key.replace('_', ' ')} line in its output")
        out[key] = tuple(float(g) for g in m.groups())
    return out


def _argv(runtime: Runtime, model: str, text: Path, ctx: int, threads: int) -> list[str]:
    return [runtime.binary("llama-perplexity"), "-m", model, "-f", str(text), "-c", str(ctx), "-b", str(ctx),
            "-t", str(threads)]  # fmt: skip


def _check(res: proc.ProcResult, what: str) -> None:
    """llama-perplexity exits 0 after refusing a text too short for the context: read what it says."""
    text = res.stdout + res.stderr
    m = re.search(r"you need at least (\d+) tokens[^\n]*", text)
    if m:
        raise NativeError(f"{what}: the text is too short: {one_line(m.group(0), 160)}")
    if not res.ok:
        lines = [ln for ln in text.splitlines() if " E " in ln or "error" in ln.lower()]
        why = lines[-1] if lines else (res.detail or f"exit {res.returncode}")
        raise NativeError(f"{what}: {one_line(why, 200)}")


def kld_base(runtime: Runtime, model: str, text: Path, out: Path, *, ctx: int, threads: int = 2) -> Path:
    """The f16-cache logits every KV type is compared with."""
    argv = [*_argv(runtime, model, text, ctx, threads), "--kl-divergence-base", str(out)]
    _check(proc.run(argv, timeout_s=3600), "KLD base (f16 KV)")
    # a refused text leaves a 12-byte header and an error line that may itself be lost at exit
    if not out.is_file() or out.stat().st_size <= 64:
        raise NativeError(
            f"KLD base (f16 KV): no logits written: the text is too short (llama-perplexity needs "
            f"at least {2 * ctx} tokens for a context of {ctx})"
        )
    return out


def native_kld(
    runtime: Runtime,
    model: str,
    text: Path,
    base: Path,
    *,
    k_type: str,
    v_type: str,
    ctx: int,
    flash_attn: FlashAttn = "on",
    rotation: bool = True,
    threads: int = 2,
    label: str | None = None,
) -> KldResult:
    """`label` names the run in errors (default: the KV types)."""
    what = label or f"KV {k_type}/{v_type} fa {flash_attn}"
    for t in (k_type, v_type):
        if t not in KV_TYPES:
            raise NativeError(f"KV type {t!r}: not one llama.cpp offers ({', '.join(KV_TYPES)})")
    argv = [*_argv(runtime, model, text, ctx, threads), "-ctk", k_type, "-ctv", v_type, "-fa", flash_attn,
            "--kl-divergence-base", str(base), "--kl-divergence"]  # fmt: skip
    env = {} if rotation else {"LLAMA_ATTN_ROT_DISABLE": "1"}
    best: tuple[int, int, dict[str, tuple[float, ...]]] | None = None
    for _ in range(ATTEMPTS):
        res = proc.run(argv, timeout_s=3600, env=env)
        _check(res, what)
        output = res.stdout + res.stderr
        total = _TOTAL.search(output)
        try:
            n = int(total.group(1)) if total else 0
            best = (n, n, parse_kld(res.stdout))
            break
        except NativeError:  # the summary was lost at exit (see ATTEMPTS): the chunk lines remain
            got = parse_chunks(output)
            if got is not None and (best is None or got[0] > best[0]):
                best = got
            if best is not None and best[0] == best[1]:
                break
    if best is None:
        raise NativeError(f"{what}: no statistics in {ATTEMPTS} runs of llama-perplexity")
    chunks, chunks_total, f = best
    return KldResult(
        k_type=k_type,
        v_type=v_type,
        flash_attn=flash_attn,
        rotation=rotation,
        mean_kld=f["mean_kld"][0],
        mean_kld_pm=f["mean_kld"][1],
        same_top_pct=f["same_top"][0] if "same_top" in f else None,
        same_top_pm=f["same_top"][1] if "same_top" in f else None,
        ppl=f["ppl"][0],
        ppl_base=f["ppl_base"][0],
        ln_ppl_ratio=f["ln_ratio"][0],
        ln_ppl_ratio_pm=f["ln_ratio"][1],
        chunks=chunks,
        chunks_total=chunks_total,
    )
