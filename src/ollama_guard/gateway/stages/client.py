"""Stage 1, `client`: who is asking.

The request headers are parsed once here (a repeated security-relevant header → 400). The client is
the TCP peer, or — only when the peer is one of `trusted_proxies` — the rightmost X-Forwarded-For hop
that is not itself a trusted proxy (hops further left were written by the client and prove nothing).
That address must be inside `allow_cidrs` → 403.

Ban hook: `ClientStage.banned` (None by default) is asked about every address that passed the CIDR
check; a ban list installs its lookup there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from functools import lru_cache

from ollama_guard.gateway.config import GatewayConfig, IPNetwork
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import Request, RequestHeaders

_CACHE_LIMIT = 4096


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `text` (IPv4-mapped IPv6 as IPv4); None when it is not an address."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=4096)
def address_group(text: str) -> str:
    """The unit one client is counted as (body-budget shares, connection caps): an IPv4 address, or
    an IPv6 address's /64 — one host or one customer usually gets a whole /64, so counting per /128
    would let one client count as 2^64 (RFC 6177; what rate limiters such as nginx's users do by hand).
    Text that is not an address counts as itself."""
    address = parse_ip(text)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address) if address is not None else text


def in_networks(text: str, networks: tuple[IPNetwork, ...]) -> bool:
    address = parse_ip(text)
    return address is not None and any(address in net for net in networks)


def client_address(peer: str, forwarded_for: bytes | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The address the gateway treats as the client's."""
    if forwarded_for is None or not trusted or not in_networks(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.decode("latin-1").split(",") if h.strip()]
    client = hops[0] if hops else peer
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return client


class ClientStage:
    def __init__(self, config: GatewayConfig) -> None:
        self._allow_networks = config.allow_networks
        self._allow_everyone = any(net.prefixlen == 0 for net in self._allow_networks) and {
            net.version for net in self._allow_networks if net.prefixlen == 0
        } == {4, 6}
        self._trusted = config.trusted_proxy_networks
        self._allowed: dict[str, bool] = {}  # client address text → allowed (bounded cache)
        self.banned: Callable[[str], bool] | None = None  # the ban hook (see the module docstring)

    def __call__(self, req: Request) -> None:
        headers = RequestHeaders(req.scope["headers"])
        req.headers = headers
        req.facts.body_pending = headers.announces_body
        self.check(req, headers)

    def check(self, req: Request, headers: RequestHeaders) -> None:
        facts = req.facts
        peer = facts.client
        client = client_address(peer, headers.forwarded_for, self._trusted)
        if client is not peer:
            facts.client = client[:64]
        allowed = self._allowed.get(client)
        if allowed is None:
            if self._allow_everyone:
                allowed = parse_ip(client) is not None
            else:
                allowed = in_networks(client, self._allow_networks)
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[client] = allowed
        if not allowed:
            raise Refusal(403, "client address not allowed", "client-not-allowed")
        if self.banned is not None and self.banned(client):
            raise Refusal(403, "client address banned", "client-banned")
