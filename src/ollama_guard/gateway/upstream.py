"""The upstream side: a small pooled HTTP/1.1 client for Ollama.

The client is ours rather than aiohttp's because on the proxied hot path aiohttp's request machinery
cost more CPU than everything else the gateway does together (measured: ~300 µs of ~670 µs per
request). Responses are parsed by httptools (llhttp, the same parser the server side uses); bodies
are handed over chunk by chunk with read-side flow control. Which headers cross the gateway is decided
in `gateway/proxy.py`, not here.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol
from urllib.parse import urlsplit

import httptools

from ollama_guard.gateway.config import GatewayConfig


class HandOver(Protocol):
    """A request body that hands its bytes over once (and forgets them)."""

    def take(self) -> bytes: ...


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the connection / the protocol."""


class UpstreamBusy(Exception):
    """Every upstream slot (global_concurrency) stayed busy for the connect timeout."""


_JOIN_LIMIT = 64 * 1024  # request bodies up to this size go out in the same write as the head
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
_IDLE_LIMIT = 30.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection to the upstream; parses responses with httptools."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self.head_request = False
        self._read_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # transport events ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"invalid response from upstream: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        self.closed = True  # never pooled again
        response = self.response
        if response is not None and response.headers_done and response.close_delimited:
            response._complete()  # a body delimited by the end of the connection
        self._fail(UpstreamError("upstream closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = f"upstream connection lost: {exc}" if exc else "upstream closed the connection"
        self._fail(UpstreamError(reason))
        self._wake_writer()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamError("upstream closed the connection")
        if self._write_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain
            self._drain = None
            if self.closed:
                raise UpstreamError("upstream closed the connection")

    def _fail(self, exc: BaseException) -> None:
        response = self.response
        if response is not None and not response.complete:
            response._error(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.closed:
            self._read_paused = False
            self.transport.resume_reading()

    # parser callbacks ----------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response._headers_complete(self.parser.get_status_code(), self.parser.should_keep_alive())
        if self.head_request:  # httptools cannot be told that a HEAD answer has no body
            response.keep_alive = False
            response._complete()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response._complete()


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read with `iter_chunks()` or `read()`."""

    def __init__(self, upstream: Upstream, conn: _Connection, timeout: float) -> None:
        self._upstream = upstream
        self._conn = conn
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.content_type = b""
        self.close_delimited = False
        self.keep_alive = False
        self.headers_done = False
        self.complete = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # fed by the connection -------------------------------------------------------------------------
    def _headers_complete(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        chunked = False
        for name, value in self.raw_headers:
            lname = name.lower()
            if lname == b"content-length":
                try:
                    self.content_length = int(value)
                except ValueError:
                    self.content_length = None
            elif lname == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif lname == b"content-type":
                self.content_type = value.lower()
        self.close_delimited = self.content_length is None and not chunked
        self.headers_done = True
        self._wake()

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _complete(self) -> None:
        if self.complete:
            return
        self.complete = True
        conn = self._conn
        conn.response = None
        conn.resume_reading()
        if self.keep_alive and not conn.closed:
            self._upstream._put_idle(conn)
        else:
            conn.close()
        self._wake()

    def _error(self, exc: BaseException) -> None:
        if self._exc is None:
            self._exc = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(self._timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    # used by the app -----------------------------------------------------------------------------
    async def _wait_headers(self) -> None:
        while not self.headers_done:
            if self._exc is not None:
                raise self._exc
            await self._wait()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (raises UpstreamError / TimeoutError if the upstream fails)."""
        chunks = self._chunks
        while True:
            if chunks:
                chunk = chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _LOW_WATER:
                    self._conn.resume_reading()
                yield chunk
            elif self.complete:
                return
            elif self._exc is not None:
                raise self._exc
            else:
                await self._wait()

    def header(self, name: bytes) -> bytes | None:
        """The value of a response header (lower-case `name`; the last one if repeated)."""
        found = None
        for key, value in self.raw_headers:
            if key.lower() == name:
                found = value
        return found

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def close(self) -> None:
        """Give the slot back; an unfinished exchange closes its connection (Ollama then stops work)."""
        if self._released:
            return
        self._released = True
        if not self.complete:
            self._conn.response = None
            self._conn.close()
        self._upstream._release()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Upstream:
    """A pool of keep-alive connections to one Ollama server, at most `global_concurrency` in use."""

    def __init__(self, config: GatewayConfig) -> None:
        parts = urlsplit(config.upstream)
        self.base = config.upstream
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        host_text = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = f"{host_text}:{self._port}".encode("ascii")
        self._connect_timeout = config.upstream_connect_timeout
        self._timeout = config.upstream_timeout
        self._limit = config.global_concurrency
        self._idle: list[_Connection] = []
        self._sem: asyncio.Semaphore | None = None

    async def start(self) -> None:
        self._sem = asyncio.Semaphore(self._limit)

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _put_idle(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _release(self) -> None:
        if self._sem is not None:
            self._sem.release()

    async def _connection(self) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_LIMIT:
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _transport, conn = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            raise
        except OSError as exc:
            raise UpstreamError(f"cannot connect to upstream: {exc.strerror or exc}") from None
        return conn, False

    async def open(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[bytes, bytes]],
        data: bytes | AsyncIterable[bytes] | HandOver | None,
    ) -> UpstreamResponse:
        """Send the request and return the response once its headers arrived (body not read yet).

        A `HandOver` body (a judged JSON body) gives its bytes up when they are written, so they
        are not kept while the answer is awaited."""
        sem = self._sem
        if sem is None:
            raise RuntimeError("upstream not started")
        if sem.locked():
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await sem.acquire()
            except TimeoutError:
                raise UpstreamBusy("all upstream connections are busy") from None
        else:
            await sem.acquire()
        try:
            return await self._exchange(method, raw_path, headers, data, retry=method in ("GET", "HEAD"))
        except BaseException:
            sem.release()
            raise

    async def _exchange(
        self,
        method: str,
        raw_path: str,
        headers: list[tuple[bytes, bytes]],
        data: bytes | AsyncIterable[bytes] | HandOver | None,
        *,
        retry: bool,
    ) -> UpstreamResponse:
        conn, reused = await self._connection()
        response = UpstreamResponse(self, conn, self._timeout)
        conn.response = response
        conn.head_request = method == "HEAD"
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method.encode("ascii"), raw_path.encode("latin-1"),
                                                       self._host_header)]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        try:
            transport = conn.transport
            assert transport is not None
            if data is None or isinstance(data, bytes | bytearray) or hasattr(data, "take"):
                body = data.take() if hasattr(data, "take") else data or b""
                if body or method not in ("GET", "HEAD"):
                    head.append(b"Content-Length: %d\r\n" % len(body))
                head.append(b"\r\n")
                if len(body) > _JOIN_LIMIT:  # no copy of a large body: head and body written apart
                    transport.write(b"".join(head))
                    transport.write(body)
                else:
                    head.append(body)
                    transport.write(b"".join(head))
                head = body = None  # type: ignore[assignment]  # not kept while the answer is awaited
            else:
                declared = any(name.lower() == b"content-length" for name, _ in headers)
                if not declared:
                    head.append(b"Transfer-Encoding: chunked\r\n")
                head.append(b"\r\n")
                transport.write(b"".join(head))
                async for chunk in data:
                    if conn.closed:
                        raise UpstreamError("upstream closed the connection during the upload")
                    transport.write(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    await conn.drain()
                if not declared:
                    transport.write(b"0\r\n\r\n")
            await response._wait_headers()
        except UpstreamError:
            conn.response = None
            conn.close()
            if retry and reused:  # a kept-alive connection the upstream had already closed
                return await self._exchange(method, raw_path, headers, data, retry=False)
            raise
        except BaseException:
            conn.response = None
            conn.close()
            raise
        return response
