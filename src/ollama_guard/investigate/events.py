"""The normalised record every log source is turned into, and how a client address is classified."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

# Event kinds
REQUEST = "request"  # gin access line or gateway audit row
CONFIG = "config"  # the server's startup "server config" line
LISTENING = "listening"  # "Listening on ADDR (version V)"
TRANSFER = "transfer"  # "uploading/downloading <hex> in N <size> part(s)"
CRASH = "crash"  # panic / fatal error / SIGSEGV / service exit

# Client classes
LOOPBACK = "loopback"
TRUSTED = "trusted"
PRIVATE = "private"
PUBLIC = "public"
UNKNOWN = "unknown"  # empty or unparseable address column


@dataclass(slots=True)
class Event:
    kind: str
    time: datetime | None  # aware
    source: str  # log file name, "stdin", "journal", "docker:NAME", "audit-db"
    line: int  # 1-based line number in the source (row sequence for the audit log)
    raw: str  # the line as read (prefixes and colours removed), for evidence
    client: str = ""
    method: str = ""
    path: str = ""
    query: str = ""
    status: int = 0
    latency: float = 0.0  # seconds
    model: str = ""
    key_id: str = ""
    decision: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    bind: str = ""  # requests: the server's bind per its last config/Listening line (loopback, exposed)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


# Site-local address space (RFC 1918, CGNAT, link-local, ULA). Documentation ranges such as
# 203.0.113.0/24 are deliberately *not* here: in a log they stand for someone on the Internet.
_LOCAL_NETWORKS = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
              "fc00::/7", "fe80::/10")
]


class ClientClassifier:
    """Loopback / --trusted / private / public for a client address (cached per distinct address)."""

    def __init__(self, trusted: list[str] | None = None, *, untrusted_loopback: bool = False) -> None:
        self.trusted = [ipaddress.ip_network(c, strict=False) for c in (trusted or [])]
        # investigate --untrusted-loopback: a reverse proxy on this host makes every client 127.0.0.1, so
        # a loopback address says nothing about who the client is (classified as unknown: remote).
        self.loopback = UNKNOWN if untrusted_loopback else LOOPBACK
        self._classify = lru_cache(maxsize=65536)(self._classify_uncached)

    def classify(self, client: str) -> str:
        return self._classify(client)

    def is_owner(self, client: str) -> bool:
        """The owner's own traffic: loopback or a --trusted network."""
        return self._classify(client) in (LOOPBACK, TRUSTED)

    def _classify_uncached(self, client: str) -> str:
        text = client.strip()
        if text.startswith("[") and "]" in text:
            text = text[1 : text.index("]")]
        if text.lower() == "localhost":
            return self.loopback
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return UNKNOWN
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_loopback:
            return self.loopback
        if any(addr in net for net in self.trusted if net.version == addr.version):
            return TRUSTED
        if any(addr in net for net in _LOCAL_NETWORKS if net.version == addr.version):
            return PRIVATE
        return PUBLIC
