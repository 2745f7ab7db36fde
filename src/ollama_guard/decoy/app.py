"""The decoy as a pure ASGI application: request log → CORS → Host guard → router → handler."""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from typing import Any

from ollama_guard.decoy.bodies import BadRequest
from ollama_guard.decoy.cors import CorsPolicy, allowed_headers, legacy_wildcard
from ollama_guard.decoy.hostguard import check_host
from ollama_guard.decoy.http import (
    BodyTooLarge,
    ClientGone,
    Message,
    Receive,
    Request,
    Scope,
    Send,
    send_bytes,
    send_error,
)
from ollama_guard.decoy.limits import TOO_LARGE_TEXT, body_limit
from ollama_guard.decoy.redirects import SERVEMUX_SINCE, Redirect, servemux_redirect, trailing_slash_redirect
from ollama_guard.decoy.requestlog import BodyRecorder, RequestLog, bounded_headers, now_iso
from ollama_guard.decoy.router import Router
from ollama_guard.decoy.routes import build_router
from ollama_guard.decoy.serverlog import ServerLog, gin_client_ip
from ollama_guard.decoy.state import DecoyState
from ollama_guard.decoy.transport.request import BodyError

GIN_PLAIN = "text/plain"


class _LoggedExchange:
    """Wraps receive/send of one request so its log lines are written just before the response's last byte."""

    def __init__(
        self,
        log: RequestLog | None,
        server_log: ServerLog | None,
        req: Request,
        receive: Receive,
        send: Send,
        version: str = "",
    ) -> None:
        self.version = version
        self.log = log
        self.server_log = server_log
        self.req = req
        self._receive = receive
        self._send = send
        self.status: int | None = None
        self._pending_start: Message | None = None
        self.written = False
        self.started = time.perf_counter()
        self.time = now_iso()
        self.body = BodyRecorder(digest_only=req.path.startswith("/api/blobs/"))

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request" and self.log is not None:
            self.body.feed(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        # The start message is held back until the first body message: with an empty body the client
        # would otherwise have the whole response (headers + Content-Length: 0) before the log line exists.
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self._pending_start = message
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.write()
        if self._pending_start is not None:
            start, self._pending_start = self._pending_start, None
            await self._send(start)
        await self._send(message)

    def write(self) -> None:
        if self.written:
            return
        self.written = True
        elapsed = time.perf_counter() - self.started
        if self.server_log is not None:
            path = self.req.path + (f"?{self.req.query}" if self.req.query else "")
            peer = self.req.client.rsplit(":", 1)[0].strip("[]")
            self.server_log.access(
                status=self.status or 500,
                latency_ns=int(elapsed * 1e9),
                client_ip=gin_client_ip(self.req.headers, peer),
                method=self.req.method,
                path=path,
            )
        if self.log is None:
            return
        headers, cut = bounded_headers(self.req.headers)
        entry: dict[str, Any] = {
            "time": self.time,
            "client": self.req.client,
            "method": self.req.method,
            "path": self.req.raw_path,
            "query": self.req.query,
            "headers": headers,
            **({"headers_truncated": True} if cut else {}),
            **self.body.entry(),
            "status": self.status,
            "duration_ms": round(elapsed * 1000, 3),
            "http_version": self.req.scope.get("http_version", "1.1"),
        }
        self.log.add_ecs(entry, self.version)
        self.log.write(entry)


class DecoyApp:
    """ASGI callable serving one DecoyState."""

    def __init__(
        self, state: DecoyState, request_log: RequestLog | None = None, server_log: ServerLog | None = None
    ) -> None:
        self.state = state
        self.request_log = request_log
        self.server_log = server_log
        self.router: Router = build_router(state)
        self.cors = CorsPolicy(
            state.settings.origins,
            legacy_wildcard=legacy_wildcard(state.settings.version),
            headers=allowed_headers(state.settings.version),
        )
        self.method_not_allowed = state.at_least("0.7.0")  # r.HandleMethodNotAllowed = true (with Allow)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        req = Request.from_scope(scope, receive)
        req.body_limit = body_limit(req.path)
        req.budget = self.state.budget
        exchange: _LoggedExchange | None = None
        if self.request_log is not None or self.server_log is not None:
            exchange = _LoggedExchange(
                self.request_log, self.server_log, req, receive, send, self.state.settings.version
            )
            req.receive = exchange.receive
            send = exchange.send
        try:
            await self._handle(req, send)
        except ClientGone:
            pass
        except Exception:  # a decoy bug: answer like gin's Recovery (500, empty body) and say why on stderr
            traceback.print_exc(file=sys.stderr)
            with contextlib.suppress(Exception):
                await send_bytes(send, 500, b"", None)
        finally:
            req.release()
            if exchange is not None and not exchange.written:
                exchange.write()

    def record_rejection(self, peer: Any, status_line: bytes, sample: bytes) -> None:
        """A request the transport refused before any handler ran (431, 400, 501, 505): one event."""
        if self.request_log is None:
            return
        parts = status_line.split(b" ", 2)
        client = f"{peer[0]}:{peer[1]}" if peer else ""
        entry: dict[str, Any] = {
            "time": now_iso(),
            "client": client,
            "method": "",
            "path": "",
            "query": "",
            "headers": [],
            "body": None,
            "body_size": 0,
            "status": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 400,
            "duration_ms": 0.0,
            "action": "http-rejected",
            "raw_head": sample.decode("latin-1"),
        }
        self.request_log.add_ecs(entry, self.state.settings.version)
        self.request_log.write(entry)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, req: Request, send: Send) -> None:
        host_header = req.header("host", "") or ""
        decision = self.cors.decide(req.method, req.header("origin"), host_header)
        if decision.action == "deny":
            await send_bytes(send, 403, b"", None)
            return
        cors_headers = list(decision.headers)  # a list: the preflight's Vary comes three times
        if decision.action == "preflight":
            await send_bytes(send, 204, b"", None, cors_headers)
            return
        if cors_headers:
            send = _with_headers(send, cors_headers)
        if self.state.settings.host_guard:
            verdict = check_host(host_header, req.method)
            if verdict is not None:
                await send_bytes(send, verdict, b"", None)
                return
        if self.state.at_least(SERVEMUX_SINCE):
            moved = servemux_redirect(req.method, req.path, req.query)
            if moved is not None:
                await _send_redirect(send, moved)
                return
        resolution = self.router.resolve(req.method, req.path)
        if resolution.handler is not None:
            req.path_params = resolution.params
            try:
                await resolution.handler(self.state, req, send)
            except BadRequest as exc:
                await send_error(send, exc.status, exc.message)
            except BodyError as exc:  # gin's ShouldBindJSON hands Ollama the body reader's error text
                await send_error(send, 400, str(exc))
            except BodyTooLarge:
                await send_error(send, 400, TOO_LARGE_TEXT)
            return
        if resolution.location is not None:
            redirect = trailing_slash_redirect(
                req.method, resolution.location, req.query, req.header("x-forwarded-prefix")
            )
            await _send_redirect(send, redirect)
            return
        if resolution.status == 405 and self.method_not_allowed:
            await send_bytes(
                send, 405, b"405 method not allowed", GIN_PLAIN, {"Allow": ", ".join(resolution.allowed)}
            )
        else:  # gin without HandleMethodNotAllowed (Ollama before 0.7.0) answers a wrong method with 404
            await send_bytes(send, 404, b"404 page not found", GIN_PLAIN)


async def _send_redirect(send: Send, redirect: Redirect) -> None:
    await send_bytes(send, redirect.status, redirect.body, redirect.content_type, redirect.headers)


def _with_headers(send: Send, headers: list[tuple[str, str]]) -> Send:
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = list(message.get("headers", [])) + extra
        await send(message)

    return wrapped
