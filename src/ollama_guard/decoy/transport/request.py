"""Reading one HTTP/1.x request the way Go's net/http server does (Go 1.19: server.go readRequest,
request.go readRequest, textproto.ReadMIMEHeader, transfer.go readTransfer, internal/chunked.go).

Every rejection carries the exact answer Go writes: 431 past the header limit, 501 for a transfer coding
other than chunked, `400 Bad Request: <text>` for Go's statusError texts, a bare `400 Bad Request` for
everything else, and silence for a connection that ends before a request line.

This module reads the request head into a ``GoRequest``; its parts are in ``rejects`` (Go's refusals),
``input`` (the buffer and read limit), ``requestline``, ``headers`` and ``body`` (``BodyReader``).
Everything that was importable from here still is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from ollama_guard.decoy.transport.body import BodyReader
from ollama_guard.decoy.transport.headers import TOKEN, canonical_key, has_token, read_header_lines
from ollama_guard.decoy.transport.input import HeaderBudget, Input
from ollama_guard.decoy.transport.rejects import (
    BAD_REQUEST,
    TOO_LARGE,
    UNSUPPORTED_TE,
    BodyError,
    ExpectationFailed,
    Quiet,
    Reject,
    bad_request,
    status_error,
)
from ollama_guard.decoy.transport.requestline import parse_request_uri, parse_version

MAX_HEADER_BYTES = 1 << 20  # http.DefaultMaxHeaderBytes
READ_LIMIT_SLACK = 4096  # Go reads up to MaxHeaderBytes + 4096 before giving up (initialReadLimitSize)
# httpguts.validHostByte
_HOST_BYTES = frozenset(b"!$%&'()*+,-.0123456789:;=ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_abcdefghijklmnopqrstuvwxyz~")


@dataclass
class GoRequest:
    method: str
    target: str  # the request-URI as sent
    path: str  # url.Path (unescaped)
    raw_path: str  # the escaped path as sent
    query: str
    proto: tuple[int, int]
    headers: list[tuple[str, str]]  # canonical key, value; in arrival order (Host kept for the app)
    content_length: int  # -1: chunked or until close
    chunked: bool = False
    close: bool = False
    wants_10_keep_alive: bool = False
    expect_continue: bool = False
    values: dict[str, list[str]] = field(default_factory=dict)
    host: str = ""  # Request.Host: the absolute URI's host, else the Host header

    def get(self, key: str) -> str:
        found = self.values.get(key)
        return found[0] if found else ""

    def at_least(self, major: int, minor: int) -> bool:
        return self.proto[0] > major or (self.proto[0] == major and self.proto[1] >= minor)


async def read_request(inp: Input, max_header_bytes: int = MAX_HEADER_BYTES) -> GoRequest:
    inp.remain = max_header_bytes + READ_LIMIT_SLACK - len(inp.buf)
    if inp.budget is not None:  # bytes read ahead for this request already count
        inp.held = len(inp.buf)
        inp.budget.used += inp.held
    inp.sample = bytearray(inp.buf[: Input.SAMPLE_BYTES])
    try:
        return await _read_request(inp)
    except Reject:
        if inp.hit_limit:
            raise TOO_LARGE from None
        raise
    finally:
        inp.remain = float("inf")
        if inp.budget is not None:
            inp.budget.used -= inp.held
            inp.held = 0


async def _read_request(inp: Input) -> GoRequest:
    line = await inp.read_line()
    if line is None:
        if inp.hit_limit:
            raise TOO_LARGE
        raise Quiet
    text = line.decode("latin-1")
    method, sp1, rest = text.partition(" ")
    target, sp2, proto = rest.partition(" ")
    if not sp1 or not sp2:
        raise BAD_REQUEST
    version = parse_version(proto)
    if version is None or not method or any(ord(c) not in TOKEN for c in method):
        raise BAD_REQUEST
    try:
        escaped, query, url_host = parse_request_uri(target)
    except ValueError:
        raise BAD_REQUEST from None
    raw_fields = await read_header_lines(inp)
    headers = [(canonical_key(k), v.decode("latin-1")) for k, v in raw_fields]
    values: dict[str, list[str]] = {}
    for key, value in headers:
        values.setdefault(key, []).append(value)
    if len(values.get("Host", [])) > 1:
        raise BAD_REQUEST
    if values.get("Pragma") == ["no-cache"] and "Cache-Control" not in values:  # fixPragmaCacheControl
        values["Cache-Control"] = ["no-cache"]
        headers.append(("Cache-Control", "no-cache"))
    req = GoRequest(
        method=method,
        target=target,
        path=unquote_to_bytes(escaped.encode("latin-1")).decode("utf-8", "surrogateescape"),
        raw_path=escaped,
        query=query,
        proto=version,
        headers=headers,
        content_length=0,
        values=values,
        host=url_host or (values.get("Host") or [""])[0],
    )
    connection = values.get("Connection", [])
    if version[0] < 1:
        req.close = True
    elif version == (1, 0):
        req.close = has_token(connection, "close") or not has_token(connection, "keep-alive")
    else:
        req.close = has_token(connection, "close")
    req.wants_10_keep_alive = version == (1, 0) and has_token(connection, "keep-alive")
    _read_transfer(req)
    if not (version[0] == 1 or (version == (2, 0) and method == "PRI" and target == "*")):
        raise status_error(505, "HTTP Version Not Supported", "unsupported protocol version")
    _check_host_and_fields(req)
    expect = req.get("Expect")
    if has_token([expect], "100-continue"):
        req.expect_continue = req.at_least(1, 1) and req.content_length != 0
    elif expect:
        raise ExpectationFailed(req)
    return req


def _read_transfer(req: GoRequest) -> None:
    """parseTransferEncoding + fixLength + fixTrailer for a request."""
    te = req.values.pop("Transfer-Encoding", None)
    req.headers = [(k, v) for k, v in req.headers if k != "Transfer-Encoding"]
    if te is not None and req.at_least(1, 1):
        if len(te) != 1 or te[0].strip(" \t").lower() != "chunked":
            raise UNSUPPORTED_TE
        req.values.pop("Content-Length", None)
        req.headers = [(k, v) for k, v in req.headers if k not in ("Content-Length", "Transfer-Encoding")]
        req.chunked = True
    lengths = req.values.get("Content-Length", [])
    if len(lengths) > 1:
        first = lengths[0].strip(" \t")
        if any(v.strip(" \t") != first for v in lengths[1:]):
            raise BAD_REQUEST
        lengths = [first]
    if req.chunked:
        req.content_length = -1
    else:
        cl = lengths[0].strip(" \t") if len(lengths) == 1 else ""
        if cl:
            if not cl.isascii() or not cl.isdigit() or int(cl) >= 1 << 63:
                raise BAD_REQUEST
            req.content_length = int(cl)
        else:
            req.content_length = 0
    if req.chunked and "Trailer" in req.values:
        for value in req.values["Trailer"]:
            for key in value.split(","):
                if canonical_key(key.strip(" \t").encode("latin-1")) in (
                    "Transfer-Encoding",
                    "Trailer",
                    "Content-Length",
                ):
                    raise BAD_REQUEST


def _check_host_and_fields(req: GoRequest) -> None:
    hosts = req.values.get("Host")
    if req.at_least(1, 1) and not hosts and req.method != "CONNECT" and not _is_h2_upgrade(req):
        raise bad_request("missing required Host header")
    if (
        hosts
        and len(hosts) == 1
        and not all((ord(c) < 256 and ord(c) in _HOST_BYTES) or ord(c) >= 0x80 for c in hosts[0])
    ):
        raise bad_request("malformed Host header")
    for key, values in req.values.items():
        if not key or any(ord(c) > 127 or ord(c) not in TOKEN for c in key):
            raise bad_request("invalid header name")
        for value in values:
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
                raise bad_request("invalid header value")


def _is_h2_upgrade(req: GoRequest) -> bool:
    return req.method == "PRI" and not req.values and req.target == "*" and req.proto == (2, 0)


__all__ = [
    "BAD_REQUEST",
    "MAX_HEADER_BYTES",
    "TOO_LARGE",
    "UNSUPPORTED_TE",
    "BodyError",
    "BodyReader",
    "ExpectationFailed",
    "GoRequest",
    "HeaderBudget",
    "Input",
    "Quiet",
    "Reject",
    "bad_request",
    "canonical_key",
    "parse_request_uri",
    "parse_version",
    "read_request",
    "status_error",
]
