"""Reading and judging request bodies.

* The size cap is enforced while the body streams in (a declared Content-Length over the cap is
  refused before reading a byte; chunked bodies are counted as they arrive) → 413.
* The whole body must arrive within `timeout` seconds (slow-body clients) → 408.
* Any Content-Encoding is refused (Ollama's cloud middleware inflates zstd bodies; we would judge
  different bytes than Ollama reads) → 415.
* JSON is decoded with Go semantics (`ollama_guard.ollama.gojson`); a top-level key that reaches the
  same Go struct field as another key (`"model"` + `"MODEL"`, `"stream"` + `"ſtream"`) is refused, so
  the bytes forwarded mean the same thing to Ollama as to us → 400.

Work per request is bounded:

* every route has its own size cap, from what the endpoint catalog says its body carries (a
  `/api/show` body is a model name, a chat may carry megabytes of images: `GatewayConfig.body_limit`);
* the number of JSON values and the nesting depth are capped before anything is built from the
  body (`gojson.count_values`; deep nesting stops the parser) → 400;
* bodies above `INLINE_JUDGE_BYTES` are parsed in worker processes (`gateway/judges.py`), never on
  the event loop nor under its GIL;
* all requests together hold at most the in-flight body budget, in two lanes (small bodies never
  wait for large ones) of which no key and no client address holds more than a share
  (`gateway/bodybudget.py`): a body that does not fit waits up to `BUDGET_WAIT` seconds for room,
  then gets 503 with Retry-After (a chunked body that does not fit gets 503 at once). A body's
  bytes are given back once they have been handed to the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ollama_guard.gateway.bodybudget import BUDGET_WAIT, BodyBudget, BodyLease
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.ollama.gojson import BodyError, go_fold, parse_body

__all__ = [
    "BUDGET_WAIT", "BodyBudget", "BodyHeaders", "BodyLease", "BodyStream", "ClientGone", "JsonBody",
    "check_body_headers", "judge_json", "read_body",
]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientGone(Exception):
    """The client disconnected while we were reading its request."""


@dataclass(frozen=True, slots=True)
class BodyHeaders:
    """What the request headers say about the body."""

    content_length: int | None
    chunked: bool
    encoding: bytes | None

    @property
    def present(self) -> bool:
        return self.chunked or bool(self.content_length)


def check_body_headers(info: BodyHeaders, limit: int) -> None:
    if info.encoding is not None and info.encoding.strip().lower() not in (b"", b"identity"):
        raise Refusal(
            415, "compressed request bodies (Content-Encoding) are not accepted", "content-encoding"
        )
    if info.content_length is not None and info.content_length > limit:
        raise Refusal(413, f"request body larger than {limit} bytes", "body-too-large")


_BUFFER_FROM = 64 * 1024  # declared bodies above this size are read into one preallocated buffer


_NO_DEADLINE = contextlib.nullcontext()


def _at_once(receive: Receive) -> tuple[MutableMapping[str, Any] | None, Awaitable[Any] | None]:
    """The next ASGI message if the server hands it over without waiting. Otherwise nothing was taken:
    a receive coroutine is abandoned where it waits, before it takes a message (uvicorn waits for its
    message event first; a queue-based receive waits in `get`); any other awaitable is returned, to
    be awaited under the deadline."""
    call = receive()
    if not isinstance(call, types.CoroutineType):
        return None, call
    try:
        call.send(None)
    except StopIteration as done:
        return done.value, None
    call.close()
    return None, None


async def read_body(
    receive: Receive, limit: int, deadline_seconds: float, lease: BodyLease | None = None,
    declared: int | None = None,
) -> bytes:
    """The whole request body, refusing it past `limit` bytes or after `deadline_seconds`. With a
    `lease`, the bytes are held in the in-flight budget: the declared length up front, otherwise
    chunk by chunk."""
    if lease is not None and declared:
        await lease.take(declared)
    grow = lease is not None and declared is None
    # a declared length is read into one buffer as it arrives (no joining copy of a large body)
    buffer = bytearray(declared) if declared and declared > _BUFFER_FROM else None
    chunks: list[bytes] = []
    size = 0
    # A small body is usually complete before the request reaches us: taken without waiting, it needs
    # no deadline timer (asyncio.timeout cost more than the rest of reading it). Anything that has to be
    # waited for is read under the deadline.
    message, pending = _at_once(receive)
    deadline = _NO_DEADLINE if message is not None and not message.get("more_body", False) \
        else asyncio.timeout(deadline_seconds)
    try:
        async with deadline:
            while True:
                if message is None:
                    message = await (receive() if pending is None else pending)
                    pending = None
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    end = size + len(chunk)
                    if end > limit:
                        raise Refusal(413, f"request body larger than {limit} bytes", "body-too-large")
                    if grow:
                        lease.grow(len(chunk))  # type: ignore[union-attr]
                    if buffer is not None and end <= len(buffer):
                        buffer[size:end] = chunk
                    else:
                        if buffer is not None:  # more than declared: the server's framing forbids it
                            chunks.append(bytes(buffer[:size]))
                            buffer = None
                        chunks.append(chunk)
                    size = end
                if not message.get("more_body", False):
                    break
                message = None
    except TimeoutError:
        raise Refusal(408, "request body not received in time", "body-timeout") from None
    if buffer is not None:
        if size < len(buffer):
            del buffer[size:]
        return buffer  # type: ignore[return-value]  # bytes-like: judged, then written upstream
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


class BodyStream:
    """A request body relayed chunk by chunk (blob uploads), with the size cap and a per-chunk timeout.

    Iterated by the upstream client; a refusal raised while relaying is kept in `error`, because the
    HTTP client reports it wrapped in its own exception.
    """

    def __init__(
        self, receive: Receive, limit: int, idle_timeout: float, *, declared_length: int | None = None
    ) -> None:
        self._receive = receive
        self.declared_length = declared_length  # the request's Content-Length, relayed upstream
        self._limit = limit
        self._idle_timeout = idle_timeout
        self.size = 0
        self.error: BaseException | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        message = await self._receive()
                except TimeoutError:
                    raise Refusal(408, "request body not received in time", "body-timeout") from None
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    self.size += len(chunk)
                    if self.size > self._limit:
                        raise Refusal(413, f"request body larger than {self._limit} bytes", "body-too-large")
                    yield chunk
                if not message.get("more_body", False):
                    return
        except (Refusal, ClientGone) as exc:
            self.error = exc
            raise


_FOLD_CACHE: dict[str, str] = {}


def _fold(key: str) -> str:
    folded = _FOLD_CACHE.get(key)
    if folded is None:
        folded = go_fold(key)
        if len(_FOLD_CACHE) < 4096:
            _FOLD_CACHE[key] = folded
    return folded


class JsonBody:
    """A judged JSON body: every top-level key reaches a distinct Go field; `get` reads like Go does."""

    __slots__ = ("_by_fold", "lease", "raw")

    def __init__(self, raw: bytes, by_fold: dict[str, Any]) -> None:
        self.raw = raw
        self._by_fold = by_fold
        self.lease: BodyLease | None = None  # its bytes in the in-flight budget

    def get(self, field: str) -> Any:
        """The value Ollama decodes into the struct field `field` (None when absent or null)."""
        return self._by_fold.get(_fold(field))

    def fields(self, names: frozenset[str]) -> dict[str, Any]:
        """The decoded values of the fields `names` only (by folded name)."""
        folded = {_fold(name) for name in names}
        return {k: v for k, v in self._by_fold.items() if k in folded}

    def take(self) -> bytes:
        """Hand the bytes over for sending: the body forgets them and its decoded values, and gives
        its bytes back to the in-flight budget (the upstream client writes them at once)."""
        raw, self.raw, self._by_fold = self.raw, b"", {}
        if self.lease is not None:
            self.lease.release()
        return raw


def judge_json(raw: bytes, max_depth: int, max_values: int | None = None) -> JsonBody:
    """Parse with Go semantics and refuse anything Ollama could read differently from us."""
    try:
        pairs = parse_body(raw, max_depth=max_depth, max_values=max_values)
    except BodyError as exc:
        raise Refusal(400, str(exc), "malformed-body") from None
    by_fold: dict[str, Any] = {}
    for key, value in pairs:
        folded = _fold(key)
        if folded in by_fold:
            raise Refusal(400, f"duplicate or case-variant JSON key {key!r}", "ambiguous-body")
        by_fold[folded] = value
    return JsonBody(raw, by_fold)
