"""Minimal ASGI plumbing for the decoy: a request view and response senders (no framework)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
SSE_TYPE = "text/event-stream"
TEXT_TYPE = "text/plain; charset=utf-8"


class ClientGone(Exception):
    """The client disconnected while we were reading its body or streaming to it."""


class BodyTooLarge(Exception):
    """The request body is over the route's cap (see decoy/limits.py)."""


_GO_HTML_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


class Float32(float):
    """A value Go holds as float32 (GGUF metadata): marshalled with float32's shortest digits."""


_FLOAT_MARK = "\x00f" + secrets.token_hex(8) + ":"
_FLOAT_MARKED = re.compile('"' + re.escape(json.dumps(_FLOAT_MARK)[1:-1]) + r'([-+.e0-9]+)\\u0000"')


def go_float(value: float, *, bits: int = 64) -> str:
    """encoding/json's float formatting: shortest digits, fixed notation for 1e-6 <= |x| < 1e21
    (no `.0`), else exponent form with e-07 tidied to e-7."""
    if bits == 32:
        import numpy

        shortest = repr(float(str(numpy.float32(value))))
        value = float(shortest)
    else:
        shortest = repr(value)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        if re.search(r"e-0\d$", shortest):  # Go tidies e-07 to e-7
            shortest = shortest[:-2] + shortest[-1]
        return shortest
    text = format(Decimal(shortest), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _mark_floats(obj: Any) -> Any:
    if isinstance(obj, float) and not isinstance(obj, bool):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return obj  # Go refuses to marshal these; callers never produce them
        return _FLOAT_MARK + go_float(obj, bits=32 if isinstance(obj, Float32) else 64) + "\x00"
    if isinstance(obj, dict):
        return {k: _mark_floats(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mark_floats(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes it: no spaces, non-ASCII kept, `<`, `>`, `&`, U+2028,
    U+2029 escaped (json.Marshal's HTML escaping; those characters only occur inside JSON strings), and
    floats in Go's notation (`500000`, `0.00001`, `1e-7`)."""
    text = json.dumps(_mark_floats(obj), separators=(",", ":"), ensure_ascii=False)
    if _FLOAT_MARK[1:3] in text:
        text = _FLOAT_MARKED.sub(lambda m: m.group(1), text)
    for raw, escaped in _GO_HTML_ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text.encode()


@dataclass
class Request:
    """What a handler needs to know about one HTTP request."""

    scope: Scope
    receive: Receive
    method: str
    raw_path: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    client: str
    path_params: dict[str, str] = field(default_factory=dict)
    body_limit: int | None = None  # bytes body() may read (set per route by the app)
    budget: Any = None  # a limits.BodyBudget shared by all requests, or None
    _body: bytes | None = None
    _held: int = 0

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        raw = scope.get("raw_path")
        raw_path = raw.decode("latin-1") if raw else scope["path"]
        raw_path = raw_path.split("?", 1)[0]
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]
        client = scope.get("client")
        client_text = f"{client[0]}:{client[1]}" if client else ""
        return cls(
            scope=scope,
            receive=receive,
            method=scope["method"].upper(),
            raw_path=raw_path,
            path=unquote(raw_path),
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client=client_text,
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of a header (case-insensitive name)."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return default

    async def body(self) -> bytes:
        """The whole request body (read once, then cached)."""
        if self._body is None:
            chunks: list[bytes] = []
            size = 0
            async for chunk in self.stream():
                size += len(chunk)
                if self.body_limit is not None and size > self.body_limit:
                    raise BodyTooLarge
                if self.budget is not None:
                    self.budget.take(len(chunk))
                    self._held += len(chunk)
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    def release(self) -> None:
        """Give the body's bytes back to the shared budget (the app calls this when the request ends)."""
        if self.budget is not None and self._held:
            self.budget.give(self._held)
            self._held = 0

    async def stream(self) -> AsyncIterator[bytes]:
        """The request body chunk by chunk (only usable once, and not after body())."""
        if self._body is not None:
            yield self._body
            return
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def _header_list(
    content_type: str | None, extra: dict[str, str] | list[tuple[str, str]] | None
) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    pairs = extra.items() if isinstance(extra, dict) else (extra or [])
    for key, value in pairs:
        headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
    return headers


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None,
    extra_headers: dict[str, str] | list[tuple[str, str]] | None = None,
) -> None:
    """A complete response written in one go, as gin's c.JSON/c.String do (the transport adds the
    Content-Length, or chunks a body over 2048 bytes, as Go's net/http would)."""
    headers = _header_list(content_type, extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, obj: Any, extra_headers: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, json_bytes(obj), JSON_TYPE, extra_headers)


async def send_text(send: Send, status: int, text: str, extra_headers: dict[str, str] | None = None) -> None:
    await send_bytes(send, status, text.encode(), TEXT_TYPE, extra_headers)


async def send_error(send: Send, status: int, message: str) -> None:
    """Ollama's error shape: {"error": "..."}."""
    await send_json(send, status, {"error": message})


async def send_stream(
    send: Send,
    status: int,
    content_type: str,
    chunks: AsyncIterator[bytes],
    extra_headers: dict[str, str] | None = None,
) -> None:
    """A chunked response; every chunk is handed to the server (and so to the socket) as it is produced."""
    headers = _header_list(content_type, extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    async for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
