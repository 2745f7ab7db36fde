"""One target specification: an IP, a hostname, a CIDR, a range, ``host:port``, ``[v6]:port`` or a URL.

Addresses are held as blocks of two integers (``AddressBlock``) and expanded only when iterated.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from ollama_guard.errors import InputError
from ollama_guard.scan.targets.target import Target

# Largest single specification we expand (a /8); anything bigger is almost certainly a typo.
MAX_ADDRESSES_PER_SPEC = 1 << 24

_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")


@dataclass(frozen=True, slots=True)
class AddressBlock:
    """An inclusive run of addresses of one IP version, held as two integers."""

    version: int
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, value: tuple[int, int]) -> bool:
        version, number = value
        return version == self.version and self.first <= number <= self.last

    def addresses(self) -> Iterator[str]:
        if self.version == 4:
            pack = _v4_text
        else:
            pack = _v6_text
        for number in range(self.first, self.last + 1):
            yield pack(number)


def _v4_text(number: int) -> str:
    return socket.inet_ntop(socket.AF_INET, number.to_bytes(4, "big"))


def _v6_text(number: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, number.to_bytes(16, "big"))


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_block(text: str) -> AddressBlock | None:
    """A CIDR, a range or a single IP as an AddressBlock; None when `text` is none of those."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise InputError(f"bad network {text!r}") from None
        return AddressBlock(net.version, int(net.network_address), int(net.broadcast_address))
    single = ip_of(text)
    if single is not None:
        return AddressBlock(single.version, int(single), int(single))
    if "-" in text:
        start_text, _, end_text = text.partition("-")
        start = ip_of(start_text.strip())
        if start is None:
            return None
        end_text = end_text.strip()
        end = ip_of(end_text)
        if end is None and start.version == 4 and end_text.isdigit():
            last_octet = int(end_text)
            if last_octet > 255:
                raise InputError(f"bad range {text!r}: last octet {last_octet} is above 255")
            end = ipaddress.IPv4Address((int(start) & 0xFFFFFF00) | last_octet)
        if end is None or end.version != start.version:
            raise InputError(f"bad range {text!r} (expected 10.0.0.1-10.0.0.50 or 10.0.0.1-50)")
        if int(end) < int(start):
            raise InputError(f"bad range {text!r}: the end is before the start")
        return AddressBlock(start.version, int(start), int(end))
    return None


@dataclass(frozen=True, slots=True)
class HostSpec:
    """A parsed target token before the port list is applied."""

    block: AddressBlock | None  # addresses, or None for a hostname
    name: str | None
    port: int | None  # explicit port (host:port, URL) overrides --ports
    scheme: str | None
    base_path: str

    def count(self, ports: tuple[int, ...]) -> int:
        hosts = self.block.size if self.block else 1
        return hosts * (1 if self.port is not None else len(ports))

    def targets(self, ports: tuple[int, ...]) -> Iterator[Target]:
        port_list = (self.port,) if self.port is not None else ports
        if self.block is None:
            assert self.name is not None
            for port in port_list:
                yield Target(self.name, port, True, self.scheme, self.base_path, self.name)
            return
        for address in self.block.addresses():
            for port in port_list:
                yield Target(address, port, False, self.scheme, self.base_path, None)


def _port_number(text: str, token: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InputError(f"bad port in target {token!r}")
    return int(text)


def parse_spec(token: str, *, size_limit: int | None = MAX_ADDRESSES_PER_SPEC) -> HostSpec:
    """Parse one target token (see the module doc). Raises InputError on anything unusable, including a
    block larger than `size_limit` addresses (None: no limit, for exclusions)."""
    text = token.strip()
    if not text:
        raise InputError("empty target")
    if "://" in text:
        return _parse_url(text)
    port: int | None = None
    host = text
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise InputError(f"bad target {token!r}: missing ']'")
        host = text[1:close]
        rest = text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise InputError(f"bad target {token!r}")
            port = _port_number(rest[1:], token)
        if ip_of(host) is None or ip_of(host).version != 6:  # type: ignore[union-attr]
            raise InputError(f"bad target {token!r}: [..] must hold an IPv6 address")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port_number(port_text, token)
    block = parse_block(host)
    if block is not None:
        if size_limit is not None and block.size > size_limit:
            raise InputError(
                f"target {token!r} has {block.size:,} addresses; the limit per target is "
                f"{size_limit:,} — split it"
            )
        return HostSpec(block, None, port, None, "")
    if _HOSTNAME.match(host) and not host.replace(".", "").isdigit():
        return HostSpec(None, host.rstrip(".").lower(), port, None, "")
    raise InputError(f"bad target {token!r} (expected IP, hostname, CIDR, range, host:port or URL)")


def _parse_url(text: str) -> HostSpec:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"bad URL target {text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(f"bad URL target {text!r}: only http:// and https:// are scanned")
    host = parts.hostname
    if not host:
        raise InputError(f"bad URL target {text!r}: no host")
    if parts.username or parts.password:
        raise InputError(f"URL target {_redact_userinfo(text)!r} carries credentials; remove them")
    base_path = parts.path.rstrip("/")
    if port is None:
        port = 443 if scheme == "https" else 80
    single = ip_of(host)
    if single is not None:
        return HostSpec(AddressBlock(single.version, int(single), int(single)), None, port, scheme, base_path)
    if not _HOSTNAME.match(host):
        raise InputError(f"bad URL target {text!r}: bad host name")
    return HostSpec(None, host.rstrip(".").lower(), port, scheme, base_path)


def _redact_userinfo(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)
