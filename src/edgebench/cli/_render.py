"""Rich renderings of the records the foundation commands print."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgebench.host.probe import HostInfo
from edgebench.models.gguf import ModelInfo
from edgebench.runtime.flags import cpu_list
from edgebench.runtime.locate import Runtime
from edgebench.textsafe import one_line

__all__ = ["gib", "render_host", "render_model", "render_models", "render_runtime"]


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.2f} MiB"


def render_host(c: Console, h: HostInfo) -> None:
    t = Table(title="host", show_header=False, title_justify="left")
    t.add_row("cpu", f"{h.cpu_model} ({h.arch}, {h.n_cpus} cpus)")
    if h.board:
        t.add_row("board", h.board)
    for cl in h.clusters:
        mhz = f"{cl.max_khz / 1000:.0f} MHz" if cl.max_khz else "max freq unknown"
        cap = f", capacity {cl.capacity}" if cl.capacity is not None else ""
        core = f"{cl.core}, " if cl.core else ""
        t.add_row("cluster", f"cpus {cpu_list(tuple(cl.cpus))}: {core}{mhz}{cap}")
    if h.little_cpus:
        t.add_row(
            "big.LITTLE", f"big {cpu_list(tuple(h.big_cpus))} · little {cpu_list(tuple(h.little_cpus))}"
        )
    t.add_row("ram", f"{h.ram_total_mib} MiB total, {h.ram_available_mib} MiB available")
    swap_used = h.swap_total_mib - h.swap_free_mib
    t.add_row("swap", f"{h.swap_total_mib} MiB total, {swap_used} MiB used" if h.swap_total_mib else "none")
    t.add_row("governor", h.governor or "unknown (no cpufreq)")
    if h.thermal:
        hottest = max(h.thermal, key=lambda z: z.temp_c)
        t.add_row("thermal", f"max {hottest.temp_c:.1f} °C ({hottest.name}); {len(h.thermal)} zones")
    acc = ", ".join(f"{a.kind} {a.name}" for a in h.accelerators) or "none found"
    t.add_row("accelerators", acc)
    if h.bandwidth_gbs is not None:
        t.add_row("bandwidth", f"{h.bandwidth_gbs:.1f} GB/s measured ({h.bandwidth_method})")
    else:
        t.add_row("bandwidth", "not measured")
    t.add_row("fingerprint", h.fingerprint)
    c.print(t)


def render_runtime(c: Console, rt: Runtime | None, problem: str | None = None) -> None:
    t = Table(title="llama.cpp", show_header=False, title_justify="left")
    if rt is None:
        t.add_row("status", f"[red]not found[/red]: {problem}")
        c.print(t)
        return
    t.add_row("bin dir", f"{rt.bin_dir} (found via {rt.found_via})")
    t.add_row("build", f"{rt.build_number} ({rt.commit}), {rt.compiler}, {rt.target}")
    t.add_row("build id", rt.build_id)
    if rt.preset:
        t.add_row("preset", rt.preset)
    t.add_row("backends", ", ".join(rt.backends))
    t.add_row("binaries", ", ".join(sorted(rt.binaries)))
    if rt.missing:
        t.add_row("missing", "[yellow]" + ", ".join(rt.missing) + "[/yellow]")
    c.print(t)


def render_models(c: Console, models: list[ModelInfo]) -> None:
    t = Table(title="models", title_justify="left")
    for col in ("name", "arch", "params", "quant", "size", "ctx_train", "chat template", "sha256"):
        t.add_column(col)
    for m in models:
        t.add_row(
            m.name,
            m.arch,
            _params(m.params),
            m.quant,
            f"{gib(m.file_size)} ({m.bpw:.2f} BPW)",
            str(m.ctx_train),
            _template(m),
            m.sha256[:12],
        )
    if not models:
        t.add_row("(none)", "", "", "", "", "", "", "")
    c.print(t)


def render_model(c: Console, m: ModelInfo) -> None:
    t = Table(title=m.name, show_header=False, title_justify="left")
    t.add_row("path", escape(one_line(m.path)))  # a file name is untrusted text, and [..] is markup
    t.add_row("sha256", m.sha256)
    t.add_row("arch", m.arch)
    t.add_row("params", f"{_params(m.params)} ({m.params:,})")
    t.add_row("file", f"{gib(m.file_size)}, {m.bpw:.2f} bits per weight, {m.quant}")
    t.add_row("context", f"{m.ctx_train} trained")
    heads = sorted(set(m.n_head_kv))
    t.add_row(
        "layers",
        f"{m.n_layer} × (n_embd {m.n_embd}, heads {m.n_head}, kv heads "
        f"{'/'.join(map(str, heads))}, head dim {m.head_dim_k}/{m.head_dim_v})",
    )
    if m.swa_window:
        n_swa = sum(m.swa_layers)
        t.add_row("sliding window", f"{m.swa_window} tokens on {n_swa} of {m.n_layer} layers")
    if m.recurrent_layers:
        t.add_row("recurrent", f"{len(m.recurrent_layers)} layers with state that does not grow with context")
    if m.n_expert:
        t.add_row("experts", f"{m.n_expert_used} of {m.n_expert} active")
    t.add_row("chat template", _template(m))
    c.print(t)
    if not m.chat_template:
        c.print(
            "[yellow]base model: no chat template.[/yellow] Chat-style quality items cannot be "
            "scored as chat; edgebench runs them in an explicit completion mode or marks them "
            "template_missing."
        )


def _template(m: ModelInfo) -> str:
    if not m.chat_template:
        return "none (base model)"
    return "yes, with tools" if m.tool_template else "yes"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.0f} M"
