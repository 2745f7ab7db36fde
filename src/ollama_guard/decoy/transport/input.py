"""The connection's input buffer (``Input``) with Go's read limit, and the shared bound on unfinished
headers."""

from __future__ import annotations

import asyncio

from ollama_guard.decoy.transport.rejects import TOO_LARGE


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
