"""Stage 8, `forward`: relay the judged request to Ollama and its answer back.

* Only a fixed set of request headers goes upstream (`proxy.forward_headers`); the JSON body goes out
  as the exact bytes that were judged (for a key with a token budget and a request without an output
  cap, followed by the cap its reservation assumed: `account.bound_output`), a blob streams through.
* Upstream down → 502, slow → 504, every upstream slot busy → 503.
* Model listings are filtered to the key's models (`listing.py`) and always go out uncompressed; a
  HEAD of a listing is a GET upstream, answered with the filtered listing's Content-Length.
* Small answers are relayed whole; streams chunk by chunk. A client that hangs up during a long
  request cancels it, which closes the upstream connection (Ollama stops generating); so does a
  client that reads nothing of a streamed answer for `write_timeout` seconds (its upstream
  connection and its key's concurrency slot are freed).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from ollama_guard.gateway.body import BodyStream, ClientGone, JsonBody
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.listing import decode_listing, filter_listing
from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.patterns import ModelMatcher, allow_all
from ollama_guard.gateway.proxy import forward_headers, is_streaming, response_headers
from ollama_guard.gateway.ratelog import GATEWAY_LOG
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, HeaderList, Receive, Request
from ollama_guard.gateway.routes import Route
from ollama_guard.gateway.upstream import Upstream, UpstreamBusy, UpstreamError, UpstreamResponse
from ollama_guard.gateway.usage import TokenCounter

SMALL_RESPONSE = 256 * 1024


class ForwardStage:
    def __init__(self, config: GatewayConfig, upstream: Upstream, metrics: GatewayMetrics) -> None:
        self._allow_cloud = config.allow_cloud
        self.url = config.upstream
        self.write_timeout = config.write_timeout
        self.upstream = upstream
        self.metrics = metrics

    async def __call__(
        self, req: Request, route: Route, matcher: ModelMatcher, body: JsonBody | BodyStream | None,
        counter: TokenCounter | None,
    ) -> None:
        headers = req.headers
        assert headers is not None
        upstream_headers = forward_headers(
            headers.content_type, headers.accept, headers.user_agent, req.facts.request_id
        )
        if isinstance(body, BodyStream) and body.declared_length is not None:
            upstream_headers.append((b"Content-Length", str(body.declared_length).encode()))
        watcher: asyncio.Task[None] | None = None
        self.metrics.proxying += 1
        try:
            if route.long_running and route.body != "blob":
                task = asyncio.current_task()
                watcher = asyncio.create_task(_watch_disconnect(req.receive, task, req.facts))
            await self._exchange(req, route, matcher, upstream_headers, body, counter)
        finally:
            self.metrics.proxying -= 1
            if watcher is not None:
                watcher.cancel()

    async def _open(
        self, req: Request, upstream_headers: HeaderList, data: Any, method: str
    ) -> UpstreamResponse:
        facts = req.facts
        try:
            return await self.upstream.open(method, req.path, upstream_headers, data)
        except Refusal:
            raise
        except Exception as exc:
            if isinstance(data, BodyStream) and data.error is not None:
                facts.bytes_in = data.size
                raise data.error from None
            if isinstance(exc, TimeoutError):
                self.metrics.upstream_errors.labels("timeout").inc()
                GATEWAY_LOG.warning("upstream-timeout", "upstream %s did not answer in time", self.url)
                raise Refusal(504, "upstream did not answer in time", "upstream-timeout") from None
            if isinstance(exc, UpstreamBusy):
                self.metrics.upstream_errors.labels("busy").inc()
                GATEWAY_LOG.warning("upstream-busy", "every upstream connection is busy (global_concurrency)")
                raise Refusal(503, "gateway busy, try again", "upstream-busy", retry_after=1) from None
            if isinstance(exc, UpstreamError):
                self.metrics.upstream_errors.labels("unavailable").inc()
                GATEWAY_LOG.error("upstream-down", "upstream unavailable: %s (%s)", self.url, exc)
                raise Refusal(502, "upstream unavailable", "upstream-unavailable") from None
            raise

    async def _exchange(
        self, req: Request, route: Route, matcher: ModelMatcher, upstream_headers: HeaderList,
        body: JsonBody | BodyStream | None, counter: TokenCounter | None,
    ) -> None:
        facts = req.facts
        listing_head = route.listing is not None and req.method == "HEAD"
        method = "GET" if listing_head else req.method
        resp = await self._open(req, upstream_headers, body, method)  # a JsonBody hands its bytes over
        if isinstance(body, BodyStream):
            facts.bytes_in = body.size
        facts.decision, facts.reason = "allow", "ok"
        try:
            facts.status = resp.status
            extra = [(b"x-request-id", facts.request_id.encode()), *req.cors_headers]
            if route.listing is not None and resp.status == 200 and method == "GET":
                raw = await resp.read()
                encoding = resp.header(b"content-encoding")
                if encoding is not None or matcher is not allow_all or not self._allow_cloud:
                    # a compressed answer (the gateway asked for identity) is decoded, bounded, first:
                    # the filtered listing always goes out plain, without Content-Encoding
                    raw = filter_listing(
                        route.listing, decode_listing(raw, encoding), matcher, self._allow_cloud
                    )
                headers = [
                    h for h in response_headers(resp, drop_length=True) if h[0] != b"content-encoding"
                ]
                headers.append((b"content-length", str(len(raw)).encode()))
                await _relay_whole(req, resp.status, headers + extra, b"" if listing_head else raw, None)
                return
            streaming = is_streaming(resp)
            headers = response_headers(resp, drop_length=False) + extra
            if not streaming and (resp.content_length or 0) <= SMALL_RESPONSE:
                raw = await resp.read()
                await _relay_whole(req, resp.status, headers, raw, counter)
                return
            await self._relay_stream(req, resp, headers, counter)
        finally:
            resp.close()

    async def _relay_stream(
        self, req: Request, resp: UpstreamResponse, headers: HeaderList, counter: TokenCounter | None
    ) -> None:
        facts, send = req.facts, req.send
        facts.started_response = True
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        sent = 0
        watch = _StallWatch(self.write_timeout)
        try:
            async for chunk in resp.iter_chunks():
                if counter is not None:
                    counter.feed(chunk)
                watch.sending_since = watch.loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                watch.sending_since = None
                sent += len(chunk)
                facts.bytes_out = sent  # up to date when a hang-up cancels this task
        except asyncio.CancelledError:
            if watch.stalled and watch.task.uncancel() == 0:  # our cancellation, and nobody else's
                # the client reads nothing: let go of Ollama and of the slots
                facts.reason = "client-too-slow"
                GATEWAY_LOG.warning("slow-client", "cut off a client that read nothing for %g s",
                                    self.write_timeout)
                raise ClientGone from None
            raise
        except (UpstreamError, TimeoutError):
            self.metrics.upstream_errors.labels("broken").inc()
            facts.reason = "upstream-broken"
            facts.bytes_out = sent
            if resp.content_length is not None:
                raise  # a Content-Length response cannot be ended cleanly: drop the connection
        finally:
            watch.close()
        facts.bytes_out = sent
        facts.responded = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StallWatch:
    """The write timeout of a streamed answer as one timer per answer, not an `asyncio.timeout` per
    chunk (which cost more than relaying a small chunk): a send to the client that has not returned
    `limit` seconds after it started cancels the relaying task and sets `stalled`. The timer looks
    again every `limit` seconds while the answer flows."""

    __slots__ = ("_timer", "limit", "loop", "sending_since", "stalled", "task")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.sending_since: float | None = None  # loop time the send in progress started
        self.stalled = False
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(limit, self._check)

    def _check(self) -> None:
        since, now = self.sending_since, self.loop.time()
        if since is not None and now - since >= self.limit - 0.001:
            self._timer = None
            self.stalled = True
            self.task.cancel()
            return
        self._timer = self.loop.call_at((now if since is None else since) + self.limit, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def _relay_whole(
    req: Request, status: int, headers: HeaderList, body: bytes, counter: TokenCounter | None
) -> None:
    if counter is not None:
        counter.feed(body)
    req.facts.responded = True
    await req.send({"type": "http.response.start", "status": status, "headers": headers})
    await req.send({"type": "http.response.body", "body": body, "more_body": False})
    req.facts.bytes_out = len(body)


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any] | None, facts: AuditFacts) -> None:
    """Cancel the request's task when the client goes away (the upstream request is then closed,
    which makes Ollama stop generating)."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if task is not None and not task.done() and not facts.responded:
                    facts.client_gone = True
                    task.cancel()
                return
