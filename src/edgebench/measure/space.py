"""The sweep space: which threads / KV types / flash-attn / ubatch / CPU sets to try on this host.

Defaults follow the host class, as users sweep by hand (seeds 000, 002): an RK3588 tries 2/4/6
threads on the big cores and on all cores; a 2-core x86 box never tries 6 threads.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict

from edgebench.config import SweepConfig
from edgebench.errors import ConfigError
from edgebench.host.probe import HostInfo, host_class
from edgebench.runtime.flags import KV_TYPES, BenchTest, RuntimeConfig, cpu_list, parse_cpus

__all__ = ["CpuSet", "Point", "SweepSpace", "default_space", "resolve_cpus"]

FA = Literal["on", "off", "auto"]


class CpuSet(BaseModel):
    """A named CPU set: 'all' means no pinning at all (the OS schedules)."""

    model_config = ConfigDict(frozen=True)

    name: str
    cpus: tuple[int, ...] | None


class Point(BaseModel):
    """One coordinate of the space, before it becomes a RuntimeConfig."""

    model_config = ConfigDict(frozen=True)

    threads: int
    kv: str
    fa: FA
    ubatch: int
    cpus: CpuSet
    # llama.cpp RPC workers the layers are split over (every layer offloaded: -ngl 999)
    rpc: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] | None = None

    def runtime(self, batch: int = 2048) -> RuntimeConfig:
        return RuntimeConfig(
            threads=self.threads,
            cache_type_k=self.kv,
            cache_type_v=self.kv,
            flash_attn=self.fa,
            ubatch=self.ubatch,
            batch=max(batch, self.ubatch),
            cpus=self.cpus.cpus,
            ctx=0,
            ngl=-1 if self.rpc else 0,
            rpc=self.rpc,
            tensor_split=self.tensor_split,
        )


class SweepSpace(BaseModel):
    model_config = ConfigDict(frozen=True)

    threads: list[int]
    kv: list[str]
    fa: list[FA]
    ubatch: list[int]
    cpus: list[CpuSet]
    depth: list[int]
    n_prompt: int
    n_gen: int
    # which tests are repeated at the deeper depths: each repetition refills the whole context
    # there, so a run that only plots decode vs depth ("tg") saves the deep prefill's minutes
    depth_kinds: tuple[Literal["pp", "tg"], ...] = ("pp", "tg")
    rpc: tuple[str, ...] = ()
    tensor_split: tuple[float, ...] | None = None

    def points(self) -> Iterator[Point]:
        """The full cartesian grid, minus points that ask for more threads than pinned CPUs."""
        for t, kv, fa, ub, cs in itertools.product(self.threads, self.kv, self.fa, self.ubatch, self.cpus):
            if cs.cpus is not None and t > len(cs.cpus):
                continue
            yield Point(
                threads=t, kv=kv, fa=fa, ubatch=ub, cpus=cs, rpc=self.rpc, tensor_split=self.tensor_split
            )

    def tests(self, depth: int) -> tuple[BenchTest, BenchTest]:
        return (
            BenchTest(n_prompt=self.n_prompt, n_gen=0, depth=depth),
            BenchTest(n_prompt=0, n_gen=self.n_gen, depth=depth),
        )

    def size(self) -> int:
        return sum(1 for _ in self.points())


def resolve_cpus(spec: str, host: HostInfo) -> CpuSet:
    """'big' | 'little' | 'all' | an explicit list like '4-7'."""
    if spec == "all":
        return CpuSet(name="all", cpus=None)
    if spec == "big":
        if not host.little_cpus:
            return CpuSet(name="all", cpus=None)  # no big.LITTLE: big = all
        return CpuSet(name="big", cpus=tuple(host.big_cpus))
    if spec == "little":
        if not host.little_cpus:
            raise ConfigError("--cpus little: this host has no little cores")
        return CpuSet(name="little", cpus=tuple(host.little_cpus))
    try:
        cpus = parse_cpus(spec)
    except ValueError as exc:
        raise ConfigError(f"--cpus {spec!r}: {exc}; or big, little, all") from None
    missing = [c for c in cpus if c >= host.n_cpus]
    if missing:
        raise ConfigError(f"--cpus {spec!r}: this host has cpus 0-{host.n_cpus - 1}")
    return CpuSet(name=cpu_list(cpus), cpus=cpus)


def _default_threads(host: HostInfo) -> list[int]:
    cls = host_class(host)
    if cls == "rk3588":
        return [2, 4, 6]
    if cls == "rpi5":
        return [2, 3, 4]
    n = host.n_cpus
    return sorted({t for t in (1, 2, 4, 6, 8, 12, 16, n // 2, n) if 1 <= t <= n})


def default_space(
    host: HostInfo,
    sweep: SweepConfig,
    *,
    threads: list[int] | None = None,
    kv: list[str] | None = None,
    fa: list[FA] | None = None,
    ubatch: list[int] | None = None,
    cpus: list[str] | None = None,
    depth: list[int] | None = None,
    n_prompt: int | None = None,
    n_gen: int | None = None,
    depth_kinds: tuple[Literal["pp", "tg"], ...] = ("pp", "tg"),
    rpc: tuple[str, ...] = (),
    tensor_split: tuple[float, ...] | None = None,
) -> SweepSpace:
    """CLI options over config over host-class defaults; every value checked here, once."""
    th = threads or sweep.threads or _default_threads(host)
    if any(t < 1 for t in th):
        raise ConfigError("--threads: thread counts must be ≥ 1")
    too_many = [t for t in th if t > host.n_cpus]
    if too_many:
        raise ConfigError(f"--threads {too_many[0]}: this host has {host.n_cpus} CPUs")
    kvs = kv or list(sweep.kv)
    bad = [k for k in kvs if k not in KV_TYPES]
    if bad:
        raise ConfigError(f"--kv {bad[0]!r}: unknown KV cache type; one of {', '.join(KV_TYPES)}")
    ub = ubatch or list(sweep.ubatch)
    if any(u < 1 for u in ub):
        raise ConfigError("--ubatch: must be ≥ 1")
    default_cpus = ["big", "all"] if host.little_cpus else ["all"]
    sets = [resolve_cpus(s, host) for s in (cpus or default_cpus)]
    sets = list({s.name: s for s in sets}.values())  # 'big' on a host without LITTLE = 'all'
    deps = depth or list(sweep.depth)
    if any(d < 0 for d in deps):
        raise ConfigError("--depth: must be ≥ 0")
    return SweepSpace(
        threads=sorted(set(th)),
        kv=kvs,
        fa=fa or list(sweep.flash_attn),
        ubatch=ub,
        cpus=sets,
        depth=deps,
        n_prompt=n_prompt or sweep.n_prompt,
        n_gen=n_gen or sweep.n_gen,
        depth_kinds=depth_kinds,
        rpc=rpc,
        tensor_split=tensor_split,
    )
