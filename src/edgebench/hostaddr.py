"""Addresses: what counts as loopback (the gateway and the RPC worker both refuse anything else
without the user's say-so), and an RPC worker's host:port."""

from __future__ import annotations

import ipaddress

from edgebench.errors import ConfigError

__all__ = ["is_loopback", "parse_endpoint"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(spec: str) -> tuple[str, int]:
    """ "host:port" (IPv6 as [::1]:50052) → (host, port), or one line saying what is wrong."""
    host, sep, port = spec.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or "," in spec or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"RPC endpoint {spec!r}: write it as host:port (e.g. 192.168.1.20:50052)")
    return host, int(port)
