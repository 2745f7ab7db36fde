"""The gateway as a plain ASGI application (no framework, no middleware stack).

`GatewayApp._pipeline` is the request path: a short list of named stages, one module each in
`gateway/stages/` (read `stages/__init__.py` for the order and what each refuses). A stage refuses
by raising `Refusal`, answered here; nothing refused ever reaches Ollama. Whatever ends a request,
the `record` stage writes its metrics and its audit record (never the key, never the body).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ollama_guard.gateway.body import ClientGone
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.judges import Judges
from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.own_routes import HEALTH, UNAUTHENTICATED, answer_health, answer_own_route
from ollama_guard.gateway.readiness import Readiness
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, Message, Receive, Request, Scope, Send
from ollama_guard.gateway.respond import send_refusal
from ollama_guard.gateway.services import Services
from ollama_guard.gateway.stages import limits
from ollama_guard.gateway.stages.account import (
    account,
    bound_output,
    output_limit,
    reservation,
    token_counter,
)
from ollama_guard.gateway.stages.authenticate import authenticate
from ollama_guard.gateway.stages.authorise import authorise
from ollama_guard.gateway.stages.client import ClientStage
from ollama_guard.gateway.stages.forward import ForwardStage
from ollama_guard.gateway.stages.judge_body import JudgeBodyStage
from ollama_guard.gateway.stages.policy import PolicyStage
from ollama_guard.gateway.stages.record import before_forward, before_last_byte, record
from ollama_guard.gateway.stages.route import RouteStage
from ollama_guard.gateway.upstream import Upstream

__all__ = ["GatewayApp", "Services"]

log = logging.getLogger("ollama_guard.gateway")


def _closing_connection(send: Send) -> Send:
    """From SIGTERM on, every answer closes its connection (`Connection: close`): a balancer's pooled
    connection is retired after its request instead of being closed under the next one when the
    server stops (HTTP/1.1 has no other way to say "going away" on a kept-alive connection)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name.lower() == b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return closing


class GatewayApp:
    """ASGI 3 application. `services` may be injected (tests); otherwise built at lifespan startup."""

    def __init__(self, config: GatewayConfig, services: Services | None = None) -> None:
        self.config = config
        self.services = services
        self.upstream = Upstream(config)
        self.metrics = GatewayMetrics()
        self.client = ClientStage(config)
        self.route = RouteStage(config)
        self.judges = Judges()
        self.judge_body = JudgeBodyStage(config, self.judges)
        self.policy = PolicyStage(config)
        self.forward = ForwardStage(config, self.upstream, self.metrics)
        self.readiness = Readiness(self.upstream, config.upstream, config.ready_max_audit_backlog)
        self._owns_services = services is None
        # request ids: a random per-process prefix and a counter (unique without a syscall per request)
        self._id_prefix = secrets.token_hex(6) + "-"
        self._id_counter = itertools.count(1)
        self.on_ready: Callable[[], None] | None = None
        self.handle_signals = False  # set by `serve`: SIGTERM drains (see `_drain_on_sigterm`)
        self._previous_handlers: dict[int, Any] = {}
        self._drain_started = float("-inf")
        self.console: Any = None  # the web console, built on its first request (own_routes)

    # --- the request path -------------------------------------------------------------------------
    async def _pipeline(self, req: Request) -> None:
        services = self.services
        assert services is not None
        self.client(req)
        found = await self.route(req)
        if found is None:
            return  # a CORS preflight, answered
        route, params = found
        key = await authenticate(req.headers, req.facts, services.authenticator)
        connection = req.scope.get("ollama_guard.connection")
        if connection is not None:
            connection["authenticated"] = True  # its idle time between requests is no longer short
        authorise(key, route, self.config.allow_cloud)
        body = await self.judge_body(req, route)
        matcher = self.policy(req.facts, route, params, key, body)
        counter = token_counter(route)
        reserve = reservation(route, key, body, self.config.token_reservation, req.facts.bytes_in)
        slot, reserved = await limits.admit(services.limiter, key, req.facts, reserve)
        try:
            if reserve:  # a budgeted request: Ollama generates no more than its reservation assumed
                bound_output(route, body, output_limit(route, key, body, self.config.token_reservation))
            await before_forward(req.facts, route, services.audit)
            await self.forward(req, route, matcher, body, counter)
        finally:
            await limits.release(slot)
            await account(req.facts, route, key, counter, services.limiter, self.metrics, reserved)

    # --- ASGI entry -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websockets and anything else: not served (uvicorn answers 403/closes)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if self.readiness.draining:
            send = _closing_connection(send)
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        peer = scope.get("client")
        facts = AuditFacts(
            method=method[:16], path=path[:1024], client=peer[0] if peer else "",
            request_id=f"{self._id_prefix}{next(self._id_counter):x}",
        )
        if path in UNAUTHENTICATED and method in ("GET", "HEAD"):
            ready = None if path == HEALTH else await self.readiness.ready(self.services)
            await answer_health(Request(scope, receive, send, method, path, facts, started), ready)
            return
        held: list[Message] = []

        async def send_last_after_record(message: Message) -> None:
            # the answer's last message leaves only once its audit record is spooled (`record` below)
            # and, with audit_sync = "answer", fsynced (`before_last_byte`): no client holds a complete
            # answer whose record a crash (or then a power loss) could still lose
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                held.append(message)
                return
            await send(message)

        req = Request(scope, receive, send_last_after_record, method, path, facts, started)
        try:
            if path.startswith("/-/"):
                await answer_own_route(self, req)
            else:
                await self._pipeline(req)
        except Refusal as refusal:
            facts.status, facts.reason, facts.decision = refusal.status, refusal.reason, "deny"
            self.metrics.refusals.labels(refusal.reason).inc()
            autoban = getattr(self.services, "autoban", None)
            if autoban is not None:
                autoban.refused(req, refusal)
            await send_refusal(req.send, refusal, facts, req.cors_headers)
        except ClientGone:
            facts.client_gone = True
        except asyncio.CancelledError:
            if not facts.client_gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            log.exception("request %s failed", facts.request_id)
            facts.status, facts.reason = 500, "internal-error"
            if facts.started_response:
                raise  # the server drops the connection; nothing else can be said
            failure = Refusal(500, "internal gateway error", "internal-error")
            await send_refusal(req.send, failure, facts, [])
        finally:
            if req.lease is not None:
                req.lease.release()
            audit = self.services.audit if self.services else None
            try:
                record(facts, started, self.metrics, audit)
            finally:
                if held and await before_last_byte(audit):
                    await send(held[0])

    # --- lifespan ---------------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.services is None:
            self.services = await Services.build(self.config)
        bans = getattr(self.services, "bans", None)
        if bans is not None:
            self.client.banned = bans.is_banned
            self.metrics.bans_active.set_function(lambda: bans.count)
        autoban = getattr(self.services, "autoban", None)
        if autoban is not None:
            autoban.on_ban = self.metrics.auto_bans.inc
        stats = getattr(self.services.audit, "stats", None)
        if stats is not None:
            self.metrics.watch_audit(stats)
        await self.upstream.start()
        await self.judges.start()
        await self.readiness.start()
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            self._drain_on_sigterm()
        # Long-lived start-up objects need no more cyclic-GC passes; the request path allocates many
        # short-lived objects, so young-generation collections run less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)

    def _drain_on_sigterm(self) -> None:
        """SIGTERM: not ready at once (`/-/ready` 503), still serving for `shutdown_delay` seconds so
        a load balancer takes this process out of rotation, then the server's own graceful shutdown
        (stop accepting, finish the requests in flight). SIGINT, or a second signal: at once."""
        delay = self.config.shutdown_delay
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous):
                continue
            self._previous_handlers[sig] = previous

            def handler(signum: int, frame: Any, previous: Any = previous) -> None:
                first = not self.readiness.draining
                now = time.monotonic()
                if not first and signum == signal.SIGTERM and now - self._drain_started < 1.0:
                    return  # the same shutdown told twice (to the process group and by the supervisor)
                self.readiness.draining = True
                if first:
                    self._drain_started = now
                if first and signum == signal.SIGTERM and delay > 0:
                    log.warning("SIGTERM: not ready from now on; closing the listener in %g s", delay)
                    timer = threading.Timer(delay, previous, (signum, None))
                    timer.daemon = True
                    timer.start()
                else:
                    previous(signum, frame)

            signal.signal(sig, handler)

    async def shutdown(self) -> None:
        for sig, previous in self._previous_handlers.items():
            signal.signal(sig, previous)
        self._previous_handlers.clear()
        self.readiness.draining = True
        await self.readiness.close()
        self.judges.close()
        await self.upstream.close()
        if self.services is not None and self._owns_services:
            await self.services.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
                if self.on_ready is not None:
                    self.on_ready()
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return
