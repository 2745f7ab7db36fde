"""Redirects the way Ollama's stack makes them.

* Since 0.1.46 Ollama serves through Go's http.DefaultServeMux (for net/http/pprof), which cleans every
  path first: `//api/tags`, `/api//tags`, `/api/./tags` get a 301 to the clean path, query kept.
* gin's RedirectTrailingSlash: `/api/tags/` → 301 (GET) or 307 (other methods) to `/api/tags`, query
  kept, honouring an X-Forwarded-Prefix header as gin does.
* Both end in Go's http.Redirect: `Location` (non-ASCII hex-escaped), `text/html; charset=utf-8` for
  GET and HEAD, and for GET the body `<a href="…">Moved Permanently</a>.` plus two newlines.
"""

from __future__ import annotations

import html
import posixpath
import re
from dataclasses import dataclass, field

SERVEMUX_SINCE = "0.1.46"
_SAFE_PREFIX = re.compile(r"[^a-zA-Z0-9/-]+")
_REPEATED_SLASH = re.compile(r"/{2,}")
_STATUS_TEXT = {301: "Moved Permanently", 307: "Temporary Redirect"}


@dataclass(frozen=True)
class Redirect:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str | None = None


def go_clean_path(p: str) -> str:
    """net/http cleanPath: path.Clean, rooted, keeping a trailing slash."""
    if not p:
        return "/"
    if not p.startswith("/"):
        p = "/" + p
    cleaned = posixpath.normpath(p)
    if cleaned.startswith("//"):  # normpath keeps a leading double slash (POSIX); Go does not
        cleaned = "/" + cleaned.lstrip("/")
    if p.endswith("/") and cleaned != "/":
        cleaned += "/"
    return cleaned


def _html_escape(text: str) -> str:
    """Go's htmlEscape (html.EscapeString): & ' < > \" as &amp; &#39; &lt; &gt; &#34;."""
    return html.escape(text, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")


def _hex_escape_non_ascii(text: str) -> str:
    return "".join(c if ord(c) < 0x80 else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def go_redirect(method: str, url: str, status: int) -> Redirect:
    """http.Redirect for a path-absolute `url` (cleaned again as Go does, query kept)."""
    path, sep, query = url.partition("?")
    trailing = path.endswith("/")
    path = go_clean_path(path)
    if trailing and not path.endswith("/"):
        path += "/"
    url = path + (sep + query if sep else "")
    headers = {"Location": _hex_escape_non_ascii(url)}
    content_type = "text/html; charset=utf-8" if method in ("GET", "HEAD") else None
    body = b""
    if method == "GET":
        body = f'<a href="{_html_escape(url)}">{_STATUS_TEXT[status]}</a>.\n\n'.encode()
    return Redirect(status, headers, body, content_type)


def servemux_redirect(method: str, path: str, query: str) -> Redirect | None:
    """DefaultServeMux's 301 for a path that is not clean (not for CONNECT)."""
    if method == "CONNECT":
        return None
    cleaned = go_clean_path(path)
    if cleaned == path:
        return None
    return go_redirect(method, cleaned + (f"?{query}" if query else ""), 301)


def trailing_slash_redirect(method: str, location: str, query: str, forwarded_prefix: str | None) -> Redirect:
    """gin's redirectTrailingSlash to `location` (the path with the slash added or removed)."""
    prefix = posixpath.normpath(forwarded_prefix) if forwarded_prefix else "."
    if prefix != ".":
        prefix = _REPEATED_SLASH.sub("/", _SAFE_PREFIX.sub("", prefix))
        location = prefix + "/" + location
    status = 301 if method == "GET" else 307
    return go_redirect(method, location + (f"?{query}" if query else ""), status)
