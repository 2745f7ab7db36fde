"""An HTTP/1.x server that behaves on the wire as Go's net/http does, driving an ASGI application.

uvicorn's h11/httptools layers answer malformed requests, HTTP/1.0, idle keep-alive and header case in
ways no Go server does; this one reads requests with `request.py` and writes responses with
`response.py`, both modelled on Go 1.19's net/http, and adds what a service on the open internet needs
and Go leaves to the operator: connections per address and in total, and an idle/slow-header timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ollama_guard.decoy.transport.request import (
    MAX_HEADER_BYTES,
    BodyError,
    BodyReader,
    ExpectationFailed,
    GoRequest,
    HeaderBudget,
    Input,
    Quiet,
    Reject,
    read_request,
)
from ollama_guard.decoy.transport.response import DateCache, GoResponse

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
CLOSE_WRITE_WAIT = 0.5  # rstAvoidanceDelay: Go half-closes, then waits before closing


class ResponseAbandoned(Exception):
    """The client went away while the handler was still answering."""


@dataclass(frozen=True)
class Limits:
    """Resource bounds of the transport (Go's defaults where Go has one)."""

    max_header_bytes: int = MAX_HEADER_BYTES
    header_budget: int = 32 << 20  # unfinished headers buffered over all connections
    max_conns_per_ip: int = 64
    max_conns: int = 1024
    idle_timeout: float = 600.0  # Go (as Ollama configures it) waits forever; a honeypot must not
    write_timeout: float = 120.0  # a client that stops reading a response is dropped after this


RejectHook = Callable[[Any, bytes, bytes], None]  # (peer, status line, first bytes of the request)


class GoHTTPServer:
    def __init__(
        self, app: ASGIApp, limits: Limits | None = None, on_reject: RejectHook | None = None
    ) -> None:
        self.app = app
        self.on_reject = on_reject
        self.limits = limits or Limits()
        self.per_ip: Counter[str] = Counter()
        self.total = 0
        self.dates = DateCache()
        self.refused = 0
        self.header_budget = HeaderBudget(self.limits.header_budget)
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self._accept, sock=sock, limit=1 << 16)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("", 0)
        ip = str(peer[0])
        if self.total >= self.limits.max_conns or self.per_ip[ip] >= self.limits.max_conns_per_ip:
            self.refused += 1
            writer.transport.abort()
            return
        self.total += 1
        self.per_ip[ip] += 1
        self._writers.add(writer)
        try:
            await _Connection(self, reader, writer, peer).run()
        except (ConnectionError, ResponseAbandoned, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self.total -= 1
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()
            else:
                writer.close()

    async def close_connections(self) -> None:
        """Drop every open connection (shutdown)."""
        for writer in list(self._writers):
            writer.transport.abort()
        for _ in range(50):
            if not self._writers:
                break
            await asyncio.sleep(0.01)


class _Connection:
    def __init__(
        self, server: GoHTTPServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Any
    ) -> None:
        self.server = server
        self.writer = writer
        self.peer = peer
        self.inp = Input(reader, server.header_budget)
        self.local = writer.get_extra_info("sockname") or ("", 0)

    async def run(self) -> None:
        limits = self.server.limits
        while True:
            try:
                req = await asyncio.wait_for(
                    read_request(self.inp, limits.max_header_bytes), limits.idle_timeout
                )
            except Quiet:
                return
            except Reject as rejection:
                if self.server.on_reject is not None:
                    self.server.on_reject(
                        self.peer, rejection.answer.split(b"\r\n", 1)[0], bytes(self.inp.sample)
                    )
                self.writer.write(rejection.answer)
                await self._drain()
                if rejection.close_write:
                    await self._close_write_and_wait()
                return
            except ExpectationFailed as failed:
                response = GoResponse(
                    self.writer, failed.req, BodyReader(self.inp, failed.req), self.server.dates
                )
                response.start(417, [(b"Connection", b"close")])
                await response.finish()
                return
            response = await self._exchange(req)
            if response.close_after:
                if response.early_close:
                    await self._close_write_and_wait()
                return

    async def _drain(self) -> None:
        await asyncio.wait_for(self.writer.drain(), self.server.limits.write_timeout)

    async def _close_write_and_wait(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            await self._drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
            await asyncio.sleep(CLOSE_WRITE_WAIT)

    async def _exchange(self, req: GoRequest) -> GoResponse:
        body = BodyReader(self.inp, req)
        response = GoResponse(self.writer, req, body, self.server.dates)
        state = {"started": False, "finished": False, "delivered": False}
        closed = asyncio.get_running_loop().create_future()

        async def receive() -> dict[str, Any]:
            if (body.done and state["delivered"]) or body.failed is not None:
                await closed
                return {"type": "http.disconnect"}
            if body.done:
                state["delivered"] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await response.send_continue()
            data = await body.read()  # BodyError reaches the application, as Go's read error does
            state["delivered"] = body.done
            return {"type": "http.request", "body": data, "more_body": not body.done}

        async def send(message: MutableMapping[str, Any]) -> None:
            if state["finished"]:
                return
            if self.writer.is_closing():
                raise ResponseAbandoned
            if message["type"] == "http.response.start":
                response.start(int(message["status"]), list(message.get("headers", [])))
                state["started"] = True
            elif message["type"] == "http.response.body":
                await response.write(bytes(message.get("body", b"")))
                if message.get("more_body", False):
                    if message.get("flush", True) is False:
                        return
                    await asyncio.wait_for(response.flush(), self.server.limits.write_timeout)
                else:
                    state["finished"] = True
                    await asyncio.wait_for(response.finish(), self.server.limits.write_timeout)

        try:
            await self.server.app(_scope(req, self.peer, self.local), receive, send)
        except (ResponseAbandoned, ConnectionError):
            response.close_after = True
            return response
        except BodyError:
            response.close_after = True
        except Exception:  # a handler bug: Go's server would log it; gin's Recovery answers 500
            if not state["started"]:
                response.start(500, [])
            response.close_after = True
        finally:
            if not closed.done():
                closed.set_result(None)
        if not state["finished"]:
            await asyncio.wait_for(response.finish(), self.server.limits.write_timeout)
        return response


def _scope(req: GoRequest, peer: Any, local: Any) -> dict[str, Any]:
    headers = [
        (k.lower().encode("latin-1"), (req.host if k == "Host" else v).encode("latin-1"))
        for k, v in req.headers
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{req.proto[0]}.{req.proto[1]}",
        "method": req.method,
        "scheme": "http",
        "path": req.path,
        "raw_path": req.raw_path.encode("latin-1", "replace"),
        "query_string": req.query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": headers,
        "client": (str(peer[0]), int(peer[1])) if peer else None,
        "server": (str(local[0]), int(local[1])) if local else None,
        "go_request": req,
    }
