"""Reading and judging request bodies.

* The size cap is enforced while the body streams in (a declared Content-Length over the cap is
  refused before reading a byte; chunked bodies are counted as they arrive) → 413.
* The whole body must arrive within `timeout` seconds (slow-body clients) → 408.
* Any Content-Encoding is refused (Ollama's cloud middleware inflates zstd bodies; we would judge
  different bytes than Ollama reads) → 415.
* JSON is decoded with Go semantics (`ollama_guard.ollama.gojson`); a top-level key that reaches the
  same Go struct field as another key (`"model"` + `"MODEL"`, `"stream"` + `"ſtream"`) is refused, so
  the bytes forwarded mean the same thing to Ollama as to us → 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ollama_guard.gateway.refusal import Refusal
from ollama_guard.ollama.gojson import BodyError, go_fold, parse_body

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


async def read_body(receive: Receive, limit: int, deadline_seconds: float) -> bytes:
    """The whole request body, refusing it past `limit` bytes or after `deadline_seconds`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise Refusal(413, f"request body larger than {limit} bytes", "body-too-large")
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise Refusal(408, "request body not received in time", "body-timeout") from None
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

    __slots__ = ("_by_fold", "raw")

    def __init__(self, raw: bytes, by_fold: dict[str, Any]) -> None:
        self.raw = raw
        self._by_fold = by_fold

    def get(self, field: str) -> Any:
        """The value Ollama decodes into the struct field `field` (None when absent or null)."""
        return self._by_fold.get(_fold(field))


def judge_json(raw: bytes, max_depth: int) -> JsonBody:
    """Parse with Go semantics and refuse anything Ollama could read differently from us."""
    try:
        pairs = parse_body(raw, max_depth=max_depth)
    except BodyError as exc:
        raise Refusal(400, str(exc), "malformed-body") from None
    by_fold: dict[str, Any] = {}
    for key, value in pairs:
        folded = _fold(key)
        if folded in by_fold:
            raise Refusal(400, f"duplicate or case-variant JSON key {key!r}", "ambiguous-body")
        by_fold[folded] = value
    return JsonBody(raw, by_fold)
