"""The request line as Go 1.19 reads it: the HTTP version (http.ParseHTTPVersion) and the request-URI
(url.ParseRequestURI)."""

from __future__ import annotations

import re

_SCHEME_REST = frozenset(b"0123456789+-.")


def parse_version(proto: str) -> tuple[int, int] | None:
    """http.ParseHTTPVersion (Go 1.19)."""
    if proto == "HTTP/1.1":
        return (1, 1)
    if proto == "HTTP/1.0":
        return (1, 0)
    if not proto.startswith("HTTP/") or len(proto) != 8 or proto[6] != ".":
        return None
    if not (proto[5].isdigit() and proto[7].isdigit()) or not proto[5].isascii() or not proto[7].isascii():
        return None
    return (int(proto[5]), int(proto[7]))


_PORT = re.compile(r"[0-9]*")


def parse_request_uri(uri: str) -> tuple[str, str, str]:
    """url.ParseRequestURI, enough of it: (escaped path, raw query, host); ValueError where Go fails."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri) or not uri:
        raise ValueError("invalid URL")
    if uri == "*":
        return "*", "", ""
    scheme = ""
    rest = uri
    for i, ch in enumerate(uri):
        b = ord(ch)
        if ch.isascii() and ch.isalpha():
            continue
        if b in _SCHEME_REST:
            if i == 0:
                break
            continue
        if ch == ":":
            if i == 0:
                raise ValueError("missing protocol scheme")
            scheme, rest = uri[:i], uri[i + 1 :]
        break
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    else:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return "", query, ""  # opaque URL: Go serves it with an empty path
        raise ValueError("invalid URI for request")
    host = ""
    if scheme and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        host = authority.rpartition("@")[2]
        if host.startswith("["):
            if "]" not in host:
                raise ValueError("missing ']' in host")
            port = host[host.index("]") + 1 :]
            if port and (not port.startswith(":") or not _PORT.fullmatch(port[1:])):
                raise ValueError("invalid port")
        elif ":" in host and not _PORT.fullmatch(host.rpartition(":")[2]):
            raise ValueError("invalid port")
    _check_escapes(rest)
    return rest, query, host


def _check_escapes(path: str) -> None:
    i = path.find("%")
    while i >= 0:
        hexpart = path[i + 1 : i + 3]
        if len(hexpart) < 2 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
            raise ValueError("invalid URL escape")
        i = path.find("%", i + 3)
