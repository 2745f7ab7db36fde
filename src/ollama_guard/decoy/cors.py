"""Ollama's CORS behaviour (gin-contrib/cors as configured in Ollama's GenerateRoutes).

A request without `Origin`, or whose Origin is the server itself, passes untouched. An Origin that is not
allowed is refused with 403 before any handler runs. An allowed preflight (OPTIONS) is answered with 204 and
the preflight headers; other allowed requests get the CORS response headers and run normally.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ollama_guard.ollama.versions import parse_version

ALLOWED_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    "Openai-Beta",
    "X-Stainless-Arch",
    "X-Stainless-Async",
    "X-Stainless-Custom-Poll-Interval",
    "X-Stainless-Helper-Method",
    "X-Stainless-Lang",
    "X-Stainless-Os",
    "X-Stainless-Package-Version",
    "X-Stainless-Poll-Helper",
    "X-Stainless-Retry-Count",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Timeout",
)
ALLOWED_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
PREFLIGHT_MAX_AGE = "43200"


# Built-in origins beyond localhost/127.0.0.1/0.0.0.0, with the Ollama release that added each.
_EXTRA_ORIGINS: tuple[tuple[str, str], ...] = (
    ("app://*", "0.1.42"),
    ("file://*", "0.1.42"),
    ("tauri://*", "0.1.42"),
    ("vscode-webview://*", "0.4.0"),
    ("vscode-file://*", "0.5.13"),
)
# gin-contrib/cors before v1.6 (Ollama < 0.1.36) cut one character too many off a trailing-`*` rule, so
# `http://localhost:*` matched every origin starting with `http://localhost` (`http://localhost.evil.tld`).
LEGACY_WILDCARD_BEFORE = "0.1.36"


def default_origins(user_origins: Iterable[str] = (), version: str | None = None) -> list[str]:
    """Ollama's allowed-origin list: the user's entries first, then the built-in local ones (for
    `version`, or the newest set when None)."""
    origins = [o.strip() for o in user_origins if o.strip()]
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        origins += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    current = parse_version(version) if version is not None else None
    origins += [o for o, since in _EXTRA_ORIGINS if current is None or current >= parse_version(since)]
    return origins


def legacy_wildcard(version: str) -> bool:
    return parse_version(version) < parse_version(LEGACY_WILDCARD_BEFORE)


def origins_from_env() -> list[str]:
    """OLLAMA_ORIGINS split on commas (empty when unset)."""
    raw = os.environ.get("OLLAMA_ORIGINS", "")
    return [part for part in raw.split(",") if part.strip()] if raw else []


@dataclass(frozen=True)
class CorsDecision:
    """What the CORS layer does with one request."""

    action: str  # "pass" (not a CORS request), "deny" (403), "preflight" (204), "allow" (continue + headers)
    headers: tuple[tuple[str, str], ...] = ()


class CorsPolicy:
    """Allowed origins, matched like gin-contrib/cors: exact entries, one `*` wildcard per entry,
    or `*` = all."""

    def __init__(self, origins: Iterable[str], *, legacy_wildcard: bool = False) -> None:
        entries = [o.strip().lower() for o in origins if o.strip()]
        self.allow_all = "*" in entries
        self.exact = {o for o in entries if "*" not in o}
        self.wildcards: list[tuple[str, str]] = []
        for entry in entries:
            if "*" in entry and entry != "*":
                prefix, _, suffix = entry.partition("*")
                if legacy_wildcard and not suffix and prefix:
                    prefix = prefix[:-1]  # gin-contrib/cors v1.4.0's o[:i-1]
                self.wildcards.append((prefix, suffix))

    def origin_allowed(self, origin: str) -> bool:
        if self.allow_all or origin in self.exact:
            return True
        return any(origin.startswith(p) and origin.endswith(s) for p, s in self.wildcards)

    def decide(self, method: str, origin: str | None, host: str) -> CorsDecision:
        if not origin:
            return CorsDecision("pass")
        if origin in (f"http://{host}", f"https://{host}"):
            return CorsDecision("pass")
        if not self.origin_allowed(origin):
            return CorsDecision("deny")
        headers: list[tuple[str, str]] = []
        if method == "OPTIONS":
            headers.append(("Access-Control-Allow-Methods", ALLOWED_METHODS))
            headers.append(("Access-Control-Allow-Headers", ",".join(ALLOWED_HEADERS)))
            headers.append(("Access-Control-Max-Age", PREFLIGHT_MAX_AGE))
        if self.allow_all:
            headers.append(("Access-Control-Allow-Origin", "*"))
        else:
            headers.append(("Vary", "Origin"))
            headers.append(("Access-Control-Allow-Origin", origin))
        return CorsDecision("preflight" if method == "OPTIONS" else "allow", tuple(headers))
