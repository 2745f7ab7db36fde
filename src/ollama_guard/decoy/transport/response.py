"""Writing one HTTP/1.x response the way Go's net/http does (Go 1.19 server.go: response, chunkWriter,
extraHeader): canonical header names, handler headers sorted by name then Date, Content-Length,
Content-Type, Connection, Transfer-Encoding; a Content-Length only when the whole body fits the 2048-byte
buffer before the handler returns, chunked framing otherwise (HTTP/1.1) or close-delimited (HTTP/1.0);
keep-alive and Connection: close decided as Go decides them.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from http import HTTPStatus

from ollama_guard.decoy.transport.request import BodyError, BodyReader, GoRequest, canonical_key

BUFFER_BEFORE_CHUNKING = 2048  # bufferBeforeChunkingSize
MAX_POST_HANDLER_READ = 256 << 10  # maxPostHandlerReadBytes

# Go's statusText where Python's phrase differs (Go 1.19).
_GO_STATUS_TEXT = {
    413: "Request Entity Too Large",
    414: "Request URI Too Long",
    416: "Requested Range Not Satisfiable",
    418: "I'm a teapot",
    422: "Unprocessable Entity",
    425: "Too Early",
}
_NO_TEXT = frozenset({306})  # known to Python, unnamed in Go


def status_line(code: int, http11: bool) -> bytes:
    """writeStatusLine: `HTTP/1.1 404 Not Found`, or `HTTP/1.1 599 status code 599` for unknown codes."""
    proto = "HTTP/1.1 " if http11 else "HTTP/1.0 "
    text = _GO_STATUS_TEXT.get(code)
    if text is None:
        try:
            text = HTTPStatus(code).phrase
        except ValueError:
            text = ""
    if not text or code in _NO_TEXT:
        return f"{proto}{code:03d} status code {code}\r\n".encode()
    return f"{proto}{code} {text}\r\n".encode()


def body_allowed(code: int) -> bool:
    return not (100 <= code <= 199 or code in (204, 304))


_HTML_SIGNATURES = (
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
)
_BINARY = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])


def sniff(data: bytes) -> str:
    """http.DetectContentType, the part a decoy can produce: HTML, text, or binary."""
    head = data[:512].lstrip(b"\t\n\x0c\r ")
    upper = head.upper()
    for sig in _HTML_SIGNATURES:
        if upper.startswith(sig) and len(head) > len(sig) and head[len(sig)] in b" >":
            return "text/html; charset=utf-8"
    if any(b in _BINARY for b in data[:512]):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


class DateCache:
    """http.TimeFormat of the current second."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = formatdate(second, usegmt=True).encode()
        return self._text


def _token(value: str, token: str) -> bool:
    return any(part.strip(" \t").lower() == token for part in value.split(","))


class GoResponse:
    """One response writer; the transport feeds it the ASGI messages of one request."""

    def __init__(self, writer: asyncio.StreamWriter, req: GoRequest, body: BodyReader, dates: DateCache):
        self.writer = writer
        self.req = req
        self.body = body
        self.dates = dates
        self.status = 200
        self.header: dict[str, list[str]] = {}
        self.buf = bytearray()
        self.wrote_header = False
        self.handler_done = False
        self.content_length = -1
        self.chunking = False
        self.close_after = False
        self.early_close = False
        self.written = 0
        self.sent_continue = False
        self.out = bytearray()  # Go's 4 KiB connection buffer: one segment for header and small body

    # --- the handler side ------------------------------------------------------------------------
    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        for raw_key, raw_value in headers:
            key = canonical_key(raw_key)
            value = raw_value.decode("latin-1").replace("\r", " ").replace("\n", " ").strip(" \t")
            self.header.setdefault(key, []).append(value)
        declared = self._get("Content-Length")
        if declared:
            if declared.isascii() and declared.isdigit():
                self.content_length = int(declared)
            else:
                self.header.pop("Content-Length", None)

    async def write(self, data: bytes) -> None:
        """response.Write through the 2048-byte bufio.Writer."""
        if not data or not body_allowed(self.status):
            return
        self.written += len(data)
        if self.content_length != -1 and self.written > self.content_length:
            return  # ErrContentLength: the write is dropped
        while len(data) > BUFFER_BEFORE_CHUNKING - len(self.buf):
            if not self.buf:
                await self._chunk_write(data)
                return
            room = BUFFER_BEFORE_CHUNKING - len(self.buf)
            self.buf += data[:room]
            data = data[room:]
            await self._flush_buffer()
        self.buf += data

    async def flush(self) -> None:
        """http.Flusher: what a streaming handler calls after every chunk."""
        await self._flush_buffer()
        if not self.wrote_header:
            await self._write_header(b"")
        await self._push()

    async def _push(self) -> None:
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
        await self.writer.drain()

    async def finish(self) -> None:
        """finishRequest: the handler returned."""
        self.handler_done = True
        await self._flush_buffer()
        if not self.wrote_header:
            await self._write_header(b"")
        if self.chunking:
            self.out += b"0\r\n\r\n"
        await self._push()
        if self.content_length != -1 and self.written != self.content_length and self.req.method != "HEAD":
            self.close_after = True
        if not self.close_after and not self.body.done and self.body.failed is None:
            await self._close_body()
        if self.early_close:
            self.close_after = True

    # --- the chunkWriter side --------------------------------------------------------------------
    async def _flush_buffer(self) -> None:
        if self.buf:
            data, self.buf = bytes(self.buf), bytearray()
            await self._chunk_write(data)

    async def _chunk_write(self, data: bytes) -> None:
        if not self.wrote_header:
            await self._write_header(data)
        if self.req.method == "HEAD":
            return
        if self.chunking:
            self.out += b"%x\r\n%s\r\n" % (len(data), data)
        else:
            self.out += data

    def _get(self, key: str) -> str:
        values = self.header.get(key)
        return values[0] if values else ""

    async def _drain_body(self, limit: int) -> bool:
        """Read and drop up to `limit` bytes of what the handler left of the body; True when the body
        ended within them. A broken body closes the connection."""
        try:
            while limit > 0 and not self.body.done:
                chunk = await self.body.read(min(65536, limit))
                limit -= len(chunk)
        except BodyError:
            self.close_after = True
            return True
        return self.body.done

    async def _close_body(self) -> None:
        """body.Close with doEarlyClose after the handler: at most 256 KiB more are read to reuse the
        connection; past that it is closed."""
        if not self.body.chunked and self.body.left > MAX_POST_HANDLER_READ:
            self.early_close = True
        elif not await self._drain_body(MAX_POST_HANDLER_READ):
            self.early_close = True

    async def _write_header(self, p: bytes) -> None:
        self.wrote_header = True
        req, header, code = self.req, self.header, self.status
        is_head = req.method == "HEAD"
        te = self._get("Transfer-Encoding")
        extra: dict[str, str] = {}
        if (
            self.handler_done
            and not te
            and body_allowed(code)
            and not self._get("Content-Length")
            and (not is_head or p)
        ):
            self.content_length = len(p)
            extra["Content-Length"] = str(len(p))
        if (
            req.wants_10_keep_alive
            and self._get("Content-Length")
            and self._get("Connection") == "keep-alive"
        ):
            self.close_after = False
        has_cl = self.content_length != -1
        if req.wants_10_keep_alive and (is_head or has_cl or not body_allowed(code)):
            if "Connection" not in header:
                extra["Connection"] = "keep-alive"
        elif not req.at_least(1, 1) or req.close:
            self.close_after = True
        if self._get("Connection") == "close":
            self.close_after = True
        if req.expect_continue and not self.sent_continue and not self.body.done:
            self.close_after = True
        if req.content_length != 0 and not self.close_after:
            too_big = not self.body.chunked and self.body.left >= MAX_POST_HANDLER_READ
            if self.body.failed is not None:
                self.close_after = True
            elif not too_big:
                too_big = not await self._drain_body(MAX_POST_HANDLER_READ + 1)
            if too_big:  # requestTooLarge
                self.close_after = self.early_close = True
                header.pop("Connection", None)
                extra["Connection"] = "close"
        if body_allowed(code):
            if not self._get("Content-Encoding") and "Content-Type" not in header and not te and p:
                extra["Content-Type"] = sniff(p)
        else:
            suppressed = (
                ("Content-Type", "Content-Length", "Transfer-Encoding")
                if code == 304
                else ("Content-Length", "Transfer-Encoding")
            )
            for key in suppressed:
                header.pop(key, None)
        if "Date" not in header:
            extra["Date"] = self.dates.now().decode()
        if has_cl and te and te != "identity":
            header.pop("Content-Length", None)
            extra.pop("Content-Length", None)
            has_cl = False
        if is_head or not body_allowed(code):
            header.pop("Transfer-Encoding", None)
        elif has_cl:
            header.pop("Transfer-Encoding", None)
        elif req.at_least(1, 1):
            if te == "identity":
                self.chunking = False
                self.close_after = True
                header.pop("Transfer-Encoding", None)
            else:
                self.chunking = True
                extra["Transfer-Encoding"] = "chunked"
                if te == "chunked":
                    header.pop("Transfer-Encoding", None)
        else:
            self.close_after = True
            header.pop("Transfer-Encoding", None)
        if self.chunking:
            header.pop("Content-Length", None)
            extra.pop("Content-Length", None)
        if self.close_after and not _token(self._get("Connection"), "close") and code != 101:
            header.pop("Connection", None)
            extra.pop("Connection", None)
            if req.at_least(1, 1):
                extra["Connection"] = "close"
        out = bytearray(status_line(code, req.at_least(1, 1)))
        for key in sorted(header):
            for value in header[key]:
                out += f"{key}: {value}\r\n".encode("latin-1", "replace")
        for key in ("Date", "Content-Length", "Content-Type", "Connection", "Transfer-Encoding"):
            if key in extra:
                out += f"{key}: {extra[key]}\r\n".encode("latin-1")
        out += b"\r\n"
        self.out += out

    async def send_continue(self) -> None:
        """The interim 100 Continue Go writes when a handler first reads an Expect: 100-continue body."""
        if self.req.expect_continue and not self.sent_continue and not self.wrote_header:
            self.sent_continue = True
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await self.writer.drain()
