"""How Ollama reads its own settings: OLLAMA_HOST, OLLAMA_ORIGINS and boolean variables.

Mirrors `envconfig` in Ollama's source (Host(), AllowedOrigins(), Var(), Bool()) so the audit judges a
value the way the server will, not the way a person might read it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_PORT = 11434
LOOPBACK_BIND = f"127.0.0.1:{DEFAULT_PORT}"
# The official image sets this inside the container (Dockerfile `ENV OLLAMA_HOST=0.0.0.0:11434`).
DOCKER_IMAGE_BIND = f"0.0.0.0:{DEFAULT_PORT}"

_LOCALHOST_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def ollama_var(raw: str | None) -> str:
    """envconfig.Var: the value with surrounding spaces, then surrounding quotes, removed."""
    if raw is None:
        return ""
    return raw.strip().strip("\"'")


def go_parse_bool(text: str) -> bool | None:
    """strconv.ParseBool: the accepted spellings, or None when Go would return an error."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def ollama_bool(raw: str | None) -> bool:
    """envconfig.Bool: unset/empty → false; unparsable non-empty → true (Ollama's own rule)."""
    value = ollama_var(raw)
    if not value:
        return False
    parsed = go_parse_bool(value)
    return True if parsed is None else parsed


@dataclass(frozen=True)
class BindAddress:
    """Where `ollama serve` listens for a given OLLAMA_HOST value."""

    scheme: str
    host: str  # "" means every interface, as Go's net.Listen(":port")
    port: int

    @property
    def hostport(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        return parse_ip(self.host)

    @property
    def all_interfaces(self) -> bool:
        ip = self.ip
        return self.host == "" or (ip is not None and ip.is_unspecified)


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """net.ParseIP: a literal IPv4/IPv6 address (no zone), else None."""
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _go_split_host_port(hostport: str) -> tuple[str, str]:
    """net.SplitHostPort; raises ValueError where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        raise ValueError("missing port in address")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("missing ']' in address")
        if end + 1 == len(hostport):
            raise ValueError("missing port in address")
        if end + 1 != i:
            raise ValueError("too many colons" if hostport[end + 1] == ":" else "missing port in address")
        host = hostport[1:end]
        if "[" in hostport[1:] or "]" in hostport[end + 1 :]:
            raise ValueError("unexpected bracket")
    else:
        host = hostport[:i]
        if ":" in host:
            raise ValueError("too many colons in address")
        if "[" in host or "]" in host:
            raise ValueError("unexpected bracket")
    return host, hostport[i + 1 :]


def _go_parse_port(text: str) -> int | None:
    """strconv.ParseInt(port, 10, 32) plus Ollama's 0..65535 range check."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    value = int(text)
    if value < 0 or value > 65535:
        return None
    return value


def parse_ollama_host(raw: str | None) -> BindAddress:
    """envconfig.Host(): scheme optional, default port 11434 (80/443 when a scheme is given)."""
    text = ollama_var(raw)
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.partition("/")[0]
    try:
        host, port_text = _go_split_host_port(hostport)
    except ValueError:
        host, port_text = "127.0.0.1", str(default_port)
        ip = parse_ip(hostport.strip("[]"))
        if ip is not None:
            host = str(ip)
        elif hostport:
            host = hostport
    port = _go_parse_port(port_text)
    return BindAddress(scheme=scheme, host=host, port=default_port if port is None else port)


def name_is_loopback(host: str, hosts_file: dict[str, list[str]] | None = None) -> bool:
    """True when binding to `host` only listens on loopback.

    Unspecified addresses (0.0.0.0, ::, empty) and every other address are exposed. A host name counts
    as loopback only if it is a localhost name or every address the hosts file gives it is loopback.
    """
    if host == "":
        return False
    ip = parse_ip(host)
    if ip is not None:
        mapped = getattr(ip, "ipv4_mapped", None)
        return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))
    name = host.lower().rstrip(".")
    if name in _LOCALHOST_NAMES or name.endswith(".localhost"):
        return True
    addresses = (hosts_file or {}).get(name, [])
    return bool(addresses) and all(name_is_loopback(a) for a in addresses)


def is_exposed(bind: BindAddress, hosts_file: dict[str, list[str]] | None = None) -> bool:
    return not name_is_loopback(bind.host, hosts_file)


def parse_hosts_file(text: str) -> dict[str, list[str]]:
    """/etc/hosts → lower-cased name → addresses."""
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or parse_ip(fields[0]) is None:
            continue
        for name in fields[1:]:
            table.setdefault(name.lower().rstrip("."), []).append(fields[0])
    return table


def loopback_bind_for(bind: BindAddress) -> str:
    """The OLLAMA_HOST value that keeps the port but listens on loopback only."""
    return f"127.0.0.1:{bind.port}"


@dataclass(frozen=True)
class OriginsVerdict:
    entries: list[str]
    any_origin: list[str]  # entries that let every web page in ("*", "http://*", "https://*")
    scoped_wildcards: list[str]  # other entries with a wildcard (e.g. "https://*.example.com")
    safe_value: str  # the value with the any-origin entries removed


def judge_origins(raw: str | None) -> OriginsVerdict:
    """OLLAMA_ORIGINS is split on commas (Ollama does not trim entries; we trim to judge)."""
    value = ollama_var(raw)
    entries = value.split(",") if value else []
    any_origin: list[str] = []
    scoped: list[str] = []
    kept: list[str] = []
    for entry in entries:
        item = entry.strip()
        if not item:
            continue
        if item == "*" or item.lower() in ("http://*", "https://*"):
            any_origin.append(item)
            continue
        if "*" in item:
            scoped.append(item)
        kept.append(item)
    return OriginsVerdict(
        entries=entries, any_origin=any_origin, scoped_wildcards=scoped, safe_value=",".join(kept)
    )
