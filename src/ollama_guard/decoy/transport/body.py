"""The request body as Go's handler reads it (``BodyReader``): Content-Length bytes, chunked
(internal/chunked.go), or until EOF."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ollama_guard.decoy.transport.headers import read_header_lines
from ollama_guard.decoy.transport.input import Input
from ollama_guard.decoy.transport.rejects import BodyError, Reject

if TYPE_CHECKING:
    from ollama_guard.decoy.transport.request import GoRequest


MAX_CHUNK_LINE = 4096  # internal/chunked.go maxLineLength
TRAILER_PEEK = 4096  # bufio.Reader size: the limit on a chunked trailer


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
            await read_header_lines(self.inp)
        except Reject:
            raise BodyError("malformed MIME header line") from None
