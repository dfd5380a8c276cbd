"""Network namespaces joined to this one by veth pairs, with the link shaped by tc netem: several
"boards" on one machine, for RPC tests that see what a LAN does (needs root and iproute2).

Each namespace i gets 10.231.i.2, its host-side veth 10.231.i.1; `shape()` sets rate and one-way
delay on both ends of every pair (a round trip is twice the delay)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from types import TracebackType

from edgebench.runtime import proc

__all__ = ["Link", "NetnsLab", "netns_available"]


@dataclass(frozen=True)
class Link:
    name: str
    rate: str  # tc syntax: 1gbit, 100mbit
    delay_ms: float  # one way

    def label(self) -> str:
        return f"{self.name} ({self.rate}, {self.delay_ms:g} ms each way)"


def _run(*argv: str) -> None:
    res = proc.run(list(argv), timeout_s=30)
    if not res.ok:
        raise RuntimeError(f"{' '.join(argv)}: {res.stderr.strip() or res.detail}")


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "iproute2 (ip, tc) is not installed"
    probe = f"ebprobe{os.getpid() % 100000}"
    res = proc.run(["ip", "netns", "add", probe], timeout_s=30)
    if not res.ok:
        return f"ip netns add failed: {res.stderr.strip() or res.detail}"
    proc.run(["ip", "netns", "del", probe], timeout_s=30)
    return None


class NetnsLab:
    _made = 0

    def __init__(self, n: int) -> None:
        NetnsLab._made += 1
        tag = (os.getpid() * 10 + NetnsLab._made) % 100000  # names stay unique while one is torn down
        self.names = [f"eb{tag}w{i}" for i in range(1, n + 1)]
        self.host_if = [f"ebh{tag}{i}" for i in range(1, n + 1)]
        self.ns_if = [f"ebw{tag}{i}" for i in range(1, n + 1)]

    def addr(self, i: int) -> str:
        return f"10.231.{i + 1}.2"

    def prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.names[i]]

    def __enter__(self) -> NetnsLab:
        try:
            for i, ns in enumerate(self.names):
                h, w = self.host_if[i], self.ns_if[i]
                _run("ip", "netns", "add", ns)
                _run("ip", "link", "add", h, "type", "veth", "peer", "name", w)
                _run("ip", "link", "set", w, "netns", ns)
                _run("ip", "addr", "add", f"10.231.{i + 1}.1/24", "dev", h)
                _run("ip", "link", "set", h, "up")
                _run(*self.prefix(i), "ip", "addr", "add", f"{self.addr(i)}/24", "dev", w)
                _run(*self.prefix(i), "ip", "link", "set", w, "up")
                _run(*self.prefix(i), "ip", "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def shape(self, link: Link) -> str:
        """Rate and delay with netem where the kernel has it; else the rate with tbf and the delay
        left to the caller (testing.linkproxy.DelayProxy). Returns "netem" or "tbf"."""
        netem = ["root", "netem", "rate", link.rate, "delay", f"{link.delay_ms}ms"]
        tbf = ["root", "tbf", "rate", link.rate, "burst", "256kbit", "latency", "50ms"]
        for kind, spec in (("netem", netem), ("tbf", tbf)):
            try:
                for i in range(len(self.names)):
                    _run("tc", "qdisc", "replace", "dev", self.host_if[i], *spec)
                    _run(*self.prefix(i), "tc", "qdisc", "replace", "dev", self.ns_if[i], *spec)
                return kind
            except RuntimeError as e:
                if kind == "tbf" or "unknown" not in str(e):
                    raise
        raise AssertionError("unreachable")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # the host end first: it takes its peer with it at once (a namespace is torn down later)
        for h in self.host_if:
            proc.run(["ip", "link", "del", h], timeout_s=30)
        for ns in self.names:
            proc.run(["ip", "netns", "del", ns], timeout_s=30)
