"""One thing to connect to (``Target``) and how its endpoint is written (``IP:PORT``, IPv6 in brackets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)  # not frozen: created once per address, and frozen __init__ is 5x slower
class Target:
    """One thing to connect to. `host` is an IP literal unless `is_name` (resolved at scan time)."""

    host: str
    port: int
    is_name: bool = False
    scheme: str | None = None  # "http"/"https" when the user gave a URL
    base_path: str = ""  # URL path prefix, without trailing slash
    hostname: str | None = None  # the name the user gave, kept after resolution (Host header, titles)

    @property
    def endpoint(self) -> str:
        """`IP:PORT` (IPv6 in brackets): the finding target and JSON `target` value."""
        return format_endpoint(self.host, self.port)

    def resolved(self, address: str) -> Target:
        return Target(address, self.port, False, self.scheme, self.base_path, self.hostname or self.host)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
