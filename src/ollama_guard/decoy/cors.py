"""Ollama's CORS behaviour (gin-contrib/cors as configured in Ollama's GenerateRoutes).

A request without `Origin`, or whose Origin is the server itself, passes untouched. An Origin that is not
allowed is refused with 403 before any handler runs. An allowed preflight (OPTIONS) is answered with 204 and
the preflight headers; other allowed requests get the CORS response headers and run normally.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ollama_guard.ollama.versions import parse_version


def canonical_header_key(name: str) -> str:
    """http.CanonicalHeaderKey for the token names gin-contrib/cors is given."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@cache
def _header_ranges() -> list[tuple[str, list[str]]]:
    text = (
        resources.files("ollama_guard.decoy").joinpath("data/cors_headers.json").read_text(encoding="utf-8")
    )
    return [(r["since"], r["allow_headers"]) for r in json.loads(text)["ranges"]]


def allowed_headers(version: str | None = None) -> tuple[str, ...]:
    """Access-Control-Allow-Headers of a preflight for an Ollama version (the newest when None):
    gin-contrib/cors normalises (lower-case, first of duplicates) then canonicalises."""
    chosen = _header_ranges()[-1][1]
    if version is not None:
        current = parse_version(version)
        for since, headers in _header_ranges():
            if current >= parse_version(since):
                chosen = headers
    seen: dict[str, None] = {}
    for name in chosen:
        seen.setdefault(name.strip().lower(), None)
    return tuple(canonical_header_key(name) for name in seen)


ALLOWED_HEADERS: tuple[str, ...] = allowed_headers()
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

    def __init__(
        self, origins: Iterable[str], *, legacy_wildcard: bool = False, headers: tuple[str, ...] = ()
    ) -> None:
        self.headers = headers or ALLOWED_HEADERS
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
            headers.append(("Access-Control-Allow-Headers", ",".join(self.headers)))
            headers.append(("Access-Control-Max-Age", PREFLIGHT_MAX_AGE))
        if self.allow_all:
            headers.append(("Access-Control-Allow-Origin", "*"))
        else:
            headers.append(("Vary", "Origin"))
            if method == "OPTIONS":  # the preflight also varies on what it was asked
                headers.append(("Vary", "Access-Control-Request-Method"))
                headers.append(("Vary", "Access-Control-Request-Headers"))
            headers.append(("Access-Control-Allow-Origin", origin))
        return CorsDecision("preflight" if method == "OPTIONS" else "allow", tuple(headers))
