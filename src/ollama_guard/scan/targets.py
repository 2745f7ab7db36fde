"""What to scan: target specifications expanded lazily into (address, port) pairs.

A /16 is 65,536 addresses and a /8 sixteen million: nothing here ever builds such a list. Every
specification is an iterable that produces `Target`s on demand and can say how many it will produce
without producing them (`count()`), so the engine and the progress bar work in constant memory.

Accepted specifications (command line, `-iL` files and `--exclude`):
  IPv4/IPv6 address, hostname, CIDR (`10.0.0.0/24`, `fd00::/120`), ranges (`10.0.0.1-10.0.0.50`,
  `10.0.0.1-50`, `fd00::1-fd00::20`), `host:port`, `[v6]:port`, `http(s)://host[:port][/path]`.
`-iL FILE` files are plain lists (one or more targets per line, `#` comments) or scanner output, detected
by content: masscan `-oL`/`-oJ`/`-oD`/`-oX`/`-oG`, nmap `-oX`/`-oG`.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from ollama_guard.errors import InputError

DEFAULT_PORTS: tuple[int, ...] = (11434,)
# Largest single specification we expand (a /8); anything bigger is almost certainly a typo.
MAX_ADDRESSES_PER_SPEC = 1 << 24

_HOSTNAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*\.?$")


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


# --------------------------------------------------------------------------------------------- ports


@lru_cache(maxsize=1)
def ai_ports() -> tuple[int, ...]:
    """Default ports of every self-hosted AI server we fingerprint (`--ports ai`)."""
    from ollama_guard.scan.fingerprints import load_fingerprints

    seen: dict[int, None] = {}
    for fp in load_fingerprints():
        for port in fp.ports:
            seen.setdefault(port, None)
    return tuple(seen)


def parse_ports(text: str | None) -> tuple[int, ...]:
    """`11434,8000-8010,ai` → ordered unique ports. None or empty → the default (11434)."""
    if text is None or not text.strip():
        return DEFAULT_PORTS
    out: dict[int, None] = {}
    for raw in text.split(","):
        part = raw.strip().lower()
        if not part:
            continue
        if part == "ai":
            for port in ai_ports():
                out.setdefault(port, None)
            continue
        if part == "default":
            for port in DEFAULT_PORTS:
                out.setdefault(port, None)
            continue
        lo_text, sep, hi_text = part.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise InputError(f"bad port {raw.strip()!r} in --ports (expected N, N-M or 'ai')") from None
        if not (1 <= lo <= 65535 and 1 <= hi <= 65535) or hi < lo:
            raise InputError(f"bad port range {raw.strip()!r} in --ports (ports are 1-65535)")
        for port in range(lo, hi + 1):
            out.setdefault(port, None)
    if not out:
        raise InputError("--ports is empty")
    return tuple(out)


# ------------------------------------------------------------------------------------ address blocks


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


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
    single = _ip(text)
    if single is not None:
        return AddressBlock(single.version, int(single), int(single))
    if "-" in text:
        start_text, _, end_text = text.partition("-")
        start = _ip(start_text.strip())
        if start is None:
            return None
        end_text = end_text.strip()
        end = _ip(end_text)
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


# ----------------------------------------------------------------------------------- one target spec


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
        if _ip(host) is None or _ip(host).version != 6:  # type: ignore[union-attr]
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
    single = _ip(host)
    if single is not None:
        return HostSpec(AddressBlock(single.version, int(single), int(single)), None, port, scheme, base_path)
    if not _HOSTNAME.match(host):
        raise InputError(f"bad URL target {text!r}: bad host name")
    return HostSpec(None, host.rstrip(".").lower(), port, scheme, base_path)


def _redact_userinfo(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


# ------------------------------------------------------------------------------------------ exclusions


class Exclusions:
    """Addresses, blocks and names never to be scanned (`--exclude`)."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self.blocks: list[AddressBlock] = []
        self.names: set[str] = set()
        for raw in specs:
            for token in re.split(r"[,\s]+", raw):
                if token:
                    self._add(token)

    def _add(self, token: str) -> None:
        spec = parse_spec(token, size_limit=None)
        if spec.block is not None:
            self.blocks.append(spec.block)
        elif spec.name is not None:
            self.names.add(spec.name)
            # A name also excludes what it resolves to now, so `--exclude db.lan` covers a scan of its CIDR.
            try:
                infos = socket.getaddrinfo(spec.name, None, type=socket.SOCK_STREAM)
            except OSError:
                return
            for info in infos:
                ip = _ip(str(info[4][0]).split("%")[0])
                if ip is not None:
                    self.blocks.append(AddressBlock(ip.version, int(ip), int(ip)))

    def __bool__(self) -> bool:
        return bool(self.blocks or self.names)

    def excludes_address(self, address: str) -> bool:
        if not self.blocks:
            return False
        ip = _ip(address.split("%")[0])
        if ip is None:
            return False
        key = (ip.version, int(ip))
        return any(key in block for block in self.blocks)

    def excludes_name(self, name: str) -> bool:
        return name.lower().rstrip(".") in self.names


# ------------------------------------------------------------------------------------------ -iL files


def _open_text(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read target file {path}: {exc.strerror or exc}") from None


def sniff_format(head: str) -> str:
    """Which kind of target file this is, from its first few kilobytes."""
    stripped = head.lstrip("\ufeff \t\r\n")
    if stripped.startswith("<?xml") or stripped.startswith("<nmaprun") or "<nmaprun" in head[:2048]:
        return "xml"
    if stripped.startswith("#masscan") or re.search(r"^open\s+tcp\s+\d+\s+\S+", stripped, re.M):
        return "masscan-list"
    if stripped.startswith("[") or stripped.startswith("{"):
        return "masscan-json"
    if re.search(r"^(?:Timestamp:\s*\d+\s+)?Host:\s+\S+", stripped, re.M):
        return "grepable"
    return "list"


def file_specs(path: str, ports: tuple[int, ...]) -> Iterator[Target]:
    """Targets from an `-iL` file, read lazily line by line (or element by element for XML)."""
    handle = _open_text(path)
    try:
        head = handle.read(8192)
        kind = sniff_format(head)
        lines = _chain_head(head, handle)
        if kind == "xml":
            yield from _xml_targets(head, handle, path)
        elif kind == "masscan-list":
            yield from _masscan_list_targets(lines)
        elif kind == "masscan-json":
            yield from _masscan_json_targets(lines, path)
        elif kind == "grepable":
            yield from _grepable_targets(lines, ports)
        else:
            yield from _list_targets(lines, ports, path)
    finally:
        if handle is not sys.stdin:
            handle.close()


def _chain_head(head: str, handle: IO[str]) -> Iterator[str]:
    """Lines of the file, given the already-read head and the rest of the handle."""
    pending = head
    for chunk in iter(lambda: handle.read(65536), ""):
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from complete
    if pending:
        yield from pending.split("\n")


def _list_targets(lines: Iterable[str], ports: tuple[int, ...], path: str) -> Iterator[Target]:
    for number, line in enumerate(lines, 1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        for token in content.replace(",", " ").split():
            try:
                spec = parse_spec(token)
            except InputError as exc:
                raise InputError(f"{path}:{number}: {exc}") from None
            yield from spec.targets(ports)


def _ip_target(address: str, port: int) -> Target | None:
    ip = _ip(address)
    if ip is None or not 1 <= port <= 65535:
        return None
    return Target(str(ip), port)


def _masscan_list_targets(lines: Iterable[str]) -> Iterator[Target]:
    # "open tcp 11434 10.0.0.5 1700000000"
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[0] == "open" and fields[1] == "tcp" and fields[2].isdigit():
            target = _ip_target(fields[3], int(fields[2]))
            if target is not None:
                yield target


def _masscan_json_targets(lines: Iterable[str], path: str) -> Iterator[Target]:
    """masscan -oJ (an array, one object per line, trailing commas) and -oD (NDJSON)."""
    for line in lines:
        text = line.strip().rstrip(",").strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue  # e.g. old masscan's "{finished: 1}" trailer
        if not isinstance(record, dict) or "ip" not in record:
            continue
        address = str(record["ip"])
        port_records = record.get("ports")
        if isinstance(port_records, list):
            for entry in port_records:
                if not isinstance(entry, dict):
                    continue
                if entry.get("proto", "tcp") != "tcp" or entry.get("status", "open") != "open":
                    continue
                target = _ip_target(address, _as_int(entry.get("port")))
                if target is not None:
                    yield target
        elif "port" in record:  # -oD
            data = record.get("data") if isinstance(record.get("data"), dict) else {}
            if record.get("proto", "tcp") == "tcp" and data.get("status", "open") == "open":
                target = _ip_target(address, _as_int(record.get("port")))
                if target is not None:
                    yield target


def _as_int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


_GREP_HOST = re.compile(r"Host:\s+(\S+)\s+\(([^)]*)\)")


def _grepable_targets(lines: Iterable[str], ports: tuple[int, ...]) -> Iterator[Target]:
    """nmap/masscan -oG. `Ports:` lines give open TCP ports; hosts only seen as `Status: Up` (a ping scan)
    get the --ports list."""
    up_only: dict[str, None] = {}
    with_ports: set[str] = set()
    for line in lines:
        match = _GREP_HOST.search(line)
        if not match:
            continue
        address = match.group(1)
        if _ip(address) is None:
            continue
        if "Ports:" in line:
            with_ports.add(address)
            up_only.pop(address, None)
            port_field = line.split("Ports:", 1)[1].split("\t")[0]
            for entry in port_field.split(","):
                parts = entry.strip().split("/")
                if len(parts) >= 3 and parts[1] == "open" and parts[2] == "tcp" and parts[0].isdigit():
                    target = _ip_target(address, int(parts[0]))
                    if target is not None:
                        yield target
        elif re.search(r"Status:\s+Up", line) and address not in with_ports:
            up_only.setdefault(address, None)
    for address in up_only:
        for port in ports:
            yield Target(address, port)


def _xml_targets(head: str, handle: IO[str], path: str) -> Iterator[Target]:
    """nmap -oX / masscan -oX: `<host><address addr=…/><ports><port protocol=tcp portid=…>` with
    `<state state=open/>`."""

    class _Feed:
        def __init__(self) -> None:
            self.first: str | None = head

        def read(self, size: int = -1) -> str:
            if self.first is not None:
                data, self.first = self.first, None
                return data
            return handle.read(size if size and size > 0 else 65536)

    try:
        for _event, element in ET.iterparse(_Feed(), events=("end",)):  # noqa: S314
            if element.tag != "host":
                continue
            address = None
            for addr in element.findall("address"):
                if addr.get("addrtype") in ("ipv4", "ipv6"):
                    address = addr.get("addr")
                    break
            if address:
                for port in element.iter("port"):
                    state = port.find("state")
                    if port.get("protocol", "tcp") != "tcp" or state is None or state.get("state") != "open":
                        continue
                    target = _ip_target(address, _as_int(port.get("portid")))
                    if target is not None:
                        yield target
            element.clear()
    except ET.ParseError as exc:
        raise InputError(f"{path}: bad XML scan output: {exc}") from None


# ------------------------------------------------------------------------------------------ the set


class TargetSet:
    """Everything a scan will visit, expanded lazily; iterate it for `Target`s."""

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        files: Iterable[str] = (),
        ports: tuple[int, ...] = DEFAULT_PORTS,
        exclusions: Exclusions | None = None,
    ) -> None:
        self.ports = ports
        self.specs: list[HostSpec] = [parse_spec(t) for t in tokens]
        self.files = list(files)
        self.exclusions = exclusions or Exclusions()
        for path in self.files:
            # Pipes count (`-iL <(masscan …)`, /dev/stdin): only a missing path or a directory is refused.
            if path != "-" and not Path(path).exists():
                raise InputError(f"cannot read target file {path}: no such file")
            if path != "-" and Path(path).is_dir():
                raise InputError(f"cannot read target file {path}: it is a directory")
        if not self.specs and not self.files:
            raise InputError("no targets given (name at least one TARGET or use -iL FILE)")

    def count(self) -> int | None:
        """How many address:port pairs the command-line specs produce (before exclusions); None when
        files are involved (their length is not known without reading them)."""
        if self.files:
            return None
        return sum(spec.count(self.ports) for spec in self.specs)

    def __iter__(self) -> Iterator[Target]:
        excl = self.exclusions
        for spec in self.specs:
            if excl and spec.name is not None and excl.excludes_name(spec.name):
                continue
            if excl and spec.block is not None and self._fully_excluded(spec.block):
                continue
            for target in spec.targets(self.ports):
                if excl and not target.is_name and excl.excludes_address(target.host):
                    continue
                yield target
        for path in self.files:
            for target in file_specs(path, self.ports):
                if excl:
                    if target.is_name and excl.excludes_name(target.host):
                        continue
                    if not target.is_name and excl.excludes_address(target.host):
                        continue
                yield target

    def _fully_excluded(self, block: AddressBlock) -> bool:
        return any(
            b.version == block.version and b.first <= block.first and block.last <= b.last
            for b in self.exclusions.blocks
        )
