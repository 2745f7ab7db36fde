"""Ollama's Host-header guard (allowedHostsMiddleware, the DNS-rebinding fix of v0.1.29).

Active only when the server listens on a loopback address. The Host header (port removed) must then be empty,
`localhost`, this machine's hostname, a `*.localhost` / `*.local` / `*.internal` name, or a loopback, private,
unspecified or local-interface IP address; anything else is refused with 403. An OPTIONS request whose Host
passed by name (not by IP) is answered with 204 right away, as Ollama does.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

import psutil

_GO_PRIVATE_NETS = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
)
_LOCAL_TLDS = (".localhost", ".local", ".internal")
# allowedHostsMiddleware arrived in Ollama 0.1.29 (PR #3018, the CVE-2024-28224 fix): older versions
# accept any Host header, which is what makes them DNS-rebindable.
HOST_GUARD_SINCE = "0.1.29"


def split_host_port(host_header: str) -> str:
    """The host part of a Host header, like Go's net.SplitHostPort (falls back to the whole value)."""
    if host_header.startswith("["):
        end = host_header.find("]")
        if end > 0 and host_header[end + 1 :].startswith(":"):
            return host_header[1:end]
        return host_header
    if host_header.count(":") == 1:
        return host_header.split(":", 1)[0]
    return host_header


@lru_cache(maxsize=1)
def _local_interface_ips() -> frozenset[str]:
    ips: set[str] = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                ips.add(addr.address.split("%", 1)[0])
    return frozenset(ips)


def _ip_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if ip.is_loopback or ip.is_unspecified:
        return True
    if any(ip in net for net in _GO_PRIVATE_NETS):
        return True
    return str(ip) in _local_interface_ips()


def _name_allowed(host: str) -> bool:
    host = host.lower()
    if host in ("", "localhost") or host == socket.gethostname().lower():
        return True
    return host.endswith(_LOCAL_TLDS)


def is_loopback_listener(bind_host: str) -> bool:
    """Whether a listening address is loopback (the only case in which the guard is active)."""
    try:
        return ipaddress.ip_address(bind_host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return bind_host.lower() == "localhost"


def check_host(host_header: str, method: str) -> int | None:
    """None to let the request through, else the status that ends it (403, or 204 for OPTIONS)."""
    host = split_host_port(host_header)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and _ip_allowed(ip):
        return None
    if _name_allowed(host):
        return 204 if method == "OPTIONS" else None
    return 403
