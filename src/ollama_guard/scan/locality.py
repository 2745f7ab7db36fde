"""Is a scanned service reachable from this host only?

A target on a loopback address (127.0.0.0/8, ::1) was reached over loopback, but that alone does not make
the service loopback-only: a server bound to 0.0.0.0 or [::] (or also to a LAN address) answers on
127.0.0.1 too. For a loopback target the scanner runs on the same machine, so it reads this host's table
of listening sockets (no traffic is sent) and looks for the same port on any other address:

- a socket bound to every interface that serves the target → reachable from the network;
- another socket on the same port on a non-loopback address, owned by the same process (or by a process
  we cannot see) → the same service is reachable from the network too;
- otherwise → loopback-only.

When the socket table cannot be read (e.g. macOS without root), the target is judged on its address alone
and the result says it was not confirmed.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

import psutil

from ollama_guard.findings import Finding, Severity

_CACHE_SECONDS = 2.0
_cache: tuple[float, list[tuple[str, int, int | None]] | None] = (float("-inf"), None)


@dataclass(frozen=True)
class Locality:
    loopback_target: bool  # the scanned address is a loopback address
    also_on: tuple[str, ...] = ()  # non-loopback local addresses where the same service listens
    confirmed: bool = True  # the local socket table was read

    @property
    def loopback_only(self) -> bool:
        return self.loopback_target and not self.also_on


def _is_loopback(ip: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def _listening() -> list[tuple[str, int, int | None]] | None:
    """(ip, port, pid) of every listening TCP socket on this host; None when it cannot be read."""
    global _cache
    now = time.monotonic()
    stamp, table = _cache
    if now - stamp < _CACHE_SECONDS:
        return table
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        table = None
    else:
        table = [
            (c.laddr.ip, c.laddr.port, c.pid) for c in conns if c.status == psutil.CONN_LISTEN and c.laddr
        ]
    _cache = (now, table)
    return table


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def locality_of(host: str, port: int) -> Locality:
    """How far the service scanned at host:port can be reached (see the module docstring)."""
    if not _is_loopback(host):
        return Locality(loopback_target=False)
    table = _listening()
    if table is None:
        return Locality(loopback_target=True, confirmed=False)
    on_port = [(ip, pid) for ip, p, pid in table if p == port]
    target_v6 = ":" in host and not host.startswith("::ffff:")
    exact = [(ip, pid) for ip, pid in on_port if ip == host]
    wildcard = [(ip, pid) for ip, pid in on_port if ip in ("0.0.0.0", "::", "")]
    if exact:
        served_by = exact
    else:  # nothing bound to the address itself: a socket on every interface answered
        served_by = [(ip, pid) for ip, pid in wildcard if ip == "::" or not target_v6]
    if not served_by:
        return Locality(loopback_target=True, confirmed=False)
    pids = {pid for _ip, pid in served_by}
    also = sorted(
        {
            _hostport(ip, port)
            for ip, pid in on_port
            if not _is_loopback(ip) and (pid is None or None in pids or pid in pids)
        }
    )
    return Locality(loopback_target=True, also_on=tuple(also))


# A loopback-only service (see scan/locality.py) is reachable from this host only: the risks left are
# other local accounts (and containers sharing the host network) and web pages in a local browser.
LOOPBACK_RISK = (
    "It listens on loopback only, so it is reachable from this host alone: any local account or process "
    "(including containers on the host network) can use it without credentials, and a web page opened in "
    "a local browser can reach it if the server trusts browser origins or Host names it should not "
    "(a permissive CORS policy such as OLLAMA_ORIGINS=*; DNS rebinding against servers that do not "
    "check the Host header)."
)
LOOPBACK_REMEDIATION = (
    "It is already bound to loopback; nothing on the network reaches it. If other local users, services "
    "or containers must not use it, put `ollama-guard serve` in front of it (one key per client: "
    "`ollama-guard keys create NAME --role inference`) and make Ollama reachable by the gateway only "
    "(a dedicated user and network namespace, or a container network with no published port). Keep "
    "OLLAMA_ORIGINS unset so browsers on other sites are refused."
)
LOOPBACK_REMEDIATION_OTHER = (
    "It is already bound to loopback; nothing on the network reaches it. If other local users, services "
    "or containers must not use it, turn on its own authentication (an API key or password option) or "
    "put an authenticating proxy in front, and allow no browser origins it does not need."
)
# Ceilings for findings whose risk is "anyone who reaches the port", when only this host reaches it.
LOOPBACK_CEILING = {
    "unauthenticated-api": Severity.MEDIUM,
    "unauthenticated-admin": Severity.MEDIUM,
    "model-enumeration": Severity.LOW,
    "system-prompt-exposed": Severity.LOW,
    "store-path-leak": Severity.LOW,
    "cloud-enabled": Severity.LOW,
    "plaintext-http": Severity.INFO,
}


def judge_reach(finding: Finding, local: Locality, *, ollama: bool = True) -> Finding:
    """Findings for a loopback target: lowered when it is loopback-only, else say where else it listens."""
    if not local.loopback_only:
        finding.evidence["also_listening_on"] = list(local.also_on)
        finding.detail += (
            f" Scanned on loopback, but the same service also listens on {', '.join(local.also_on)}, "
            "so it is reachable from the network."
        )
        return finding
    finding.evidence["reachable_from"] = "this host only (loopback)"
    if not local.confirmed:
        finding.evidence["reachable_from"] += "; this host's listening sockets could not be read to confirm"
    ceiling = LOOPBACK_CEILING.get(finding.rule)
    if ceiling is not None and finding.severity.rank > ceiling.rank:
        finding.severity = ceiling
    if finding.rule in ("unauthenticated-api", "unauthenticated-admin"):
        finding.title += " (reachable from this host only)"
        finding.detail += " " + LOOPBACK_RISK
        if not ollama:
            finding.remediation = LOOPBACK_REMEDIATION_OTHER
        else:
            finding.remediation = LOOPBACK_REMEDIATION + (
                " Through the gateway only the `admin` role reaches /api/pull, /api/push, /api/create, "
                "/api/copy, /api/delete and /api/blobs."
                if finding.rule == "unauthenticated-admin"
                else ""
            )
    return finding
