"""Reading one HTTP/1.x request the way Go's net/http server does (Go 1.19: server.go readRequest,
request.go readRequest, textproto.ReadMIMEHeader, transfer.go readTransfer, internal/chunked.go).

Every rejection carries the exact answer Go writes: 431 past the header limit, 501 for a transfer coding
other than chunked, `400 Bad Request: <text>` for Go's statusError texts, a bare `400 Bad Request` for
everything else, and silence for a connection that ends before a request line.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

MAX_HEADER_BYTES = 1 << 20  # http.DefaultMaxHeaderBytes
READ_LIMIT_SLACK = 4096  # Go reads up to MaxHeaderBytes + 4096 before giving up (initialReadLimitSize)
MAX_CHUNK_LINE = 4096  # internal/chunked.go maxLineLength
TRAILER_PEEK = 4096  # bufio.Reader size: the limit on a chunked trailer

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# httpguts.validHostByte
_HOST_BYTES = frozenset(b"!$%&'()*+,-.0123456789:;=ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_abcdefghijklmnopqrstuvwxyz~")
_SCHEME_REST = frozenset(b"0123456789+-.")


class Quiet(Exception):
    """The connection ended before a request started: Go closes without answering."""


class Reject(Exception):
    """A request Go refuses before its handler runs; `answer` is the exact bytes Go writes."""

    def __init__(self, answer: bytes, close_write: bool = False) -> None:
        super().__init__(answer[:40])
        self.answer = answer
        self.close_write = close_write


_ERROR_HEADERS = b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
TOO_LARGE = Reject(
    b"HTTP/1.1 431 Request Header Fields Too Large" + _ERROR_HEADERS + b"431 Request Header Fields Too Large",
    close_write=True,
)
BAD_REQUEST = Reject(b"HTTP/1.1 400 Bad Request" + _ERROR_HEADERS + b"400 Bad Request")
UNSUPPORTED_TE = Reject(b"HTTP/1.1 501 Not Implemented" + _ERROR_HEADERS + b"Unsupported transfer encoding")


def status_error(code: int, reason: str, text: str) -> Reject:
    """Go's statusError answer: `HTTP/1.1 400 Bad Request: missing required Host header` …"""
    head = f"{code} {reason}: {text}".encode("latin-1")
    return Reject(b"HTTP/1.1 " + head + _ERROR_HEADERS + head)


def bad_request(text: str) -> Reject:
    return status_error(400, "Bad Request", text)


class BodyError(Exception):
    """Reading the request body failed; the text is Go's error string as a handler would see it."""


class HeaderBudget:
    """Bytes of unfinished request headers buffered over all connections (Go has no such bound; a
    honeypot needs one: a thousand stalled 1 MB headers would otherwise hold a gigabyte)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class Input:
    """A buffered reader over one connection with Go's read limit (counted in bytes taken off the wire)."""

    def __init__(self, reader: asyncio.StreamReader, budget: HeaderBudget | None = None) -> None:
        self.reader = reader
        self.budget = budget
        self.held = 0  # header bytes this connection counts against the budget
        self.buf = bytearray()
        self.eof = False
        self.remain: float = float("inf")
        self.sample = bytearray()  # the first SAMPLE_BYTES of the current request, for the record

    SAMPLE_BYTES = 1024

    @property
    def hit_limit(self) -> bool:
        return self.remain <= 0

    async def fill(self) -> bool:
        """Read more bytes into the buffer; False at EOF or at the read limit."""
        if self.eof or self.remain <= 0:
            return False
        want = 65536 if self.remain == float("inf") else int(min(65536, self.remain))
        data = await self.reader.read(want)
        if not data:
            self.eof = True
            return False
        self.remain -= len(data)
        if self.budget is not None and self.remain != float("inf"):  # header phase only
            self.held += len(data)
            self.budget.used += len(data)
            if self.budget.used > self.budget.limit:
                raise TOO_LARGE
        self.buf += data
        if len(self.sample) < self.SAMPLE_BYTES:
            self.sample += data[: self.SAMPLE_BYTES - len(self.sample)]
        return True

    async def read_line(self) -> bytes | None:
        """bufio.ReadLine: a line without its \\n (and one \\r before it); a partial last line is
        returned as a line; None at EOF with nothing buffered."""
        start = 0
        while True:
            nl = self.buf.find(b"\n", start)
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[: nl + 1]
                return line[:-1] if line.endswith(b"\r") else line
            start = len(self.buf)
            if not await self.fill():
                if not self.buf:
                    return None
                line = bytes(self.buf)
                self.buf.clear()
                return line

    async def peek(self, n: int) -> bytes:
        while len(self.buf) < n and await self.fill():
            pass
        return bytes(self.buf[:n])

    async def read_some(self, limit: int) -> bytes:
        if not self.buf and not await self.fill():
            return b""
        chunk = bytes(self.buf[:limit])
        del self.buf[:limit]
        return chunk


def canonical_key(raw: bytes) -> str:
    """textproto.CanonicalMIMEHeaderKey (Go 1.19): unchanged unless every byte is a token byte."""
    if any(b not in _TOKEN for b in raw):
        return raw.decode("latin-1")
    out = bytearray(raw)
    upper = True
    for i, c in enumerate(out):
        if upper and 97 <= c <= 122:
            c -= 32
        elif not upper and 65 <= c <= 90:
            c += 32
        out[i] = c
        upper = c == 45
    return out.decode("latin-1")


def _ws_trim(data: bytes) -> bytes:
    return data.strip(b" \t\r\n")


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


def _has_token(values: list[str], token: str) -> bool:
    return any(token == part.strip(" \t").lower() for v in values for part in v.split(","))


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


async def _read_header_lines(inp: Input) -> list[tuple[bytes, bytes]]:
    """textproto.ReadMIMEHeader (Go 1.19): continuation lines folded with a space; errors → 400."""
    first = await inp.peek(1)
    if first in (b" ", b"\t"):
        await inp.read_line()
        raise BAD_REQUEST
    fields: list[tuple[bytes, bytes]] = []
    pending: bytearray | None = None
    while True:
        line = await inp.read_line()
        if line is None:
            raise BAD_REQUEST  # io.ErrUnexpectedEOF (or the read limit, checked by the caller)
        if pending is not None and line[:1] in (b" ", b"\t"):
            pending += b" " + _ws_trim(line)
            continue
        if pending is not None:
            fields.append(_split_field(bytes(pending)))
            pending = None
        if not line:
            return [f for f in fields if f[0]]
        if b":" not in line:
            raise BAD_REQUEST
        pending = bytearray(_ws_trim(line))


def _split_field(kv: bytes) -> tuple[bytes, bytes]:
    key, _, value = kv.partition(b":")
    return key, value.lstrip(b" \t")


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
    if version is None or not method or any(ord(c) not in _TOKEN for c in method):
        raise BAD_REQUEST
    try:
        escaped, query, url_host = parse_request_uri(target)
    except ValueError:
        raise BAD_REQUEST from None
    raw_fields = await _read_header_lines(inp)
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
        req.close = _has_token(connection, "close") or not _has_token(connection, "keep-alive")
    else:
        req.close = _has_token(connection, "close")
    req.wants_10_keep_alive = version == (1, 0) and _has_token(connection, "keep-alive")
    _read_transfer(req)
    if not (version[0] == 1 or (version == (2, 0) and method == "PRI" and target == "*")):
        raise status_error(505, "HTTP Version Not Supported", "unsupported protocol version")
    _check_host_and_fields(req)
    expect = req.get("Expect")
    if _has_token([expect], "100-continue"):
        req.expect_continue = req.at_least(1, 1) and req.content_length != 0
    elif expect:
        raise _ExpectationFailed(req)
    return req


class _ExpectationFailed(Exception):
    def __init__(self, req: GoRequest) -> None:
        super().__init__("expectation failed")
        self.req = req


ExpectationFailed = _ExpectationFailed


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
        if not key or any(ord(c) > 127 or ord(c) not in _TOKEN for c in key):
            raise bad_request("invalid header name")
        for value in values:
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
                raise bad_request("invalid header value")


def _is_h2_upgrade(req: GoRequest) -> bool:
    return req.method == "PRI" and not req.values and req.target == "*" and req.proto == (2, 0)


class BodyReader:
    """The request body as Go's handler reads it: Content-Length bytes, chunked, or until EOF (HTTP/1.0
    without a length). `read()` returns b"" at the end and raises BodyError like Go's body reader."""

    def __init__(self, inp: Input, req: GoRequest) -> None:
        self.inp = inp
        self.chunked = req.chunked
        self.left = max(req.content_length, 0)  # a request without a length has none (fixLength)
        self.done = not req.chunked and req.content_length == 0
        self.failed: str | None = None
        self.read_bytes = 0

    async def read(self, limit: int = 65536) -> bytes:
        if self.failed is not None:
            raise BodyError(self.failed)
        if self.done:
            return b""
        try:
            data = await (self._chunked(limit) if self.chunked else self._fixed(limit))
        except BodyError as exc:
            if not self.done:  # a short Content-Length body ends like EOF; broken chunking stays broken
                self.failed = str(exc)
            raise
        self.read_bytes += len(data)
        return data

    async def _fixed(self, limit: int) -> bytes:
        data = await self.inp.read_some(min(limit, self.left))
        if not data:
            self.done = True
            raise BodyError("unexpected EOF")
        self.left -= len(data)
        if self.left == 0:
            self.done = True
        return data

    async def _chunked(self, limit: int) -> bytes:
        while True:
            if self.left > 0:
                data = await self.inp.read_some(min(limit, self.left))
                if not data:
                    raise BodyError("unexpected EOF")
                self.left -= len(data)
                if self.left == 0:
                    await self._chunk_end()
                return data
            size = await self._chunk_size()
            if size == 0:
                await self._trailer()
                self.done = True
                return b""
            self.left = size

    async def _chunk_end(self) -> None:
        crlf = await self.inp.peek(2)
        if len(crlf) < 2:
            raise BodyError("unexpected EOF")
        del self.inp.buf[:2]
        if crlf != b"\r\n":
            raise BodyError("malformed chunked encoding")

    async def _chunk_size(self) -> int:
        while True:
            nl = self.inp.buf.find(b"\n")
            if nl >= 0:
                break
            if len(self.inp.buf) >= TRAILER_PEEK:
                raise BodyError("header line too long")
            if not await self.inp.fill():
                raise BodyError("unexpected EOF")
        line = bytes(self.inp.buf[: nl + 1])
        del self.inp.buf[: nl + 1]
        if len(line) >= MAX_CHUNK_LINE:
            raise BodyError("header line too long")
        line = line.rstrip(b" \t\r\n").split(b";", 1)[0]
        size = 0
        for i, b in enumerate(line):
            if b not in b"0123456789abcdefABCDEF":
                raise BodyError("invalid byte in chunk length")
            if i == 16:
                raise BodyError("http chunk length too large")
            size = size * 16 + int(chr(b), 16)
        return size

    async def _trailer(self) -> None:
        head = await self.inp.peek(2)
        if head == b"\r\n":
            del self.inp.buf[:2]
            return
        if len(head) < 2:
            raise BodyError("http: unexpected EOF reading trailer")
        while b"\r\n\r\n" not in self.inp.buf[:TRAILER_PEEK] and b"\n\n" not in self.inp.buf[:TRAILER_PEEK]:
            if len(self.inp.buf) >= TRAILER_PEEK or not await self.inp.fill():
                raise BodyError("http: suspiciously long trailer after chunked body")
        try:
            await _read_header_lines(self.inp)
        except Reject:
            raise BodyError("malformed MIME header line") from None
