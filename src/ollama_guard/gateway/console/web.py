"""The console's HTTP plumbing on plain ASGI: requests with bounded form bodies, HTML responses with
the security headers every console page carries, redirects and cookies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

MAX_FORM_BYTES = 16 * 1024
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class FormError(Exception):
    """A form body the console will not read (too large, wrong type)."""


@dataclass
class Request:
    method: str
    path: str  # below /-/console, "" for the console root
    query: dict[str, str]
    headers: dict[bytes, bytes]
    client: str
    secure: bool
    form: dict[str, str] = field(default_factory=dict)

    @property
    def cookies(self) -> dict[str, str]:
        raw = self.headers.get(b"cookie", b"").decode("latin-1")
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except Exception:  # a malformed cookie header is no cookie
            return {}
        return {name: morsel.value for name, morsel in jar.items()}


def _first_values(raw: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True, max_num_fields=64).items()}


def build_request(scope: Scope, prefix: str, client: str) -> Request:
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.lower(), value)
    query = scope.get("query_string", b"").decode("latin-1")
    try:
        params = _first_values(query)
    except ValueError:
        params = {}
    return Request(
        method=scope["method"],
        path=scope["path"][len(prefix) :].strip("/"),
        query=params,
        headers=headers,
        client=client,
        secure=scope.get("scheme") == "https",
    )


async def read_form(request: Request, receive: Receive) -> None:
    """Fill ``request.form`` from an urlencoded body of at most MAX_FORM_BYTES."""
    ctype = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if ctype != b"application/x-www-form-urlencoded":
        raise FormError("forms must be application/x-www-form-urlencoded")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise FormError("client went away")
        body = message.get("body", b"")
        size += len(body)
        if size > MAX_FORM_BYTES:
            raise FormError("form too large")
        chunks.append(body)
        if not message.get("more_body", False):
            break
    try:
        request.form = _first_values(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError("unreadable form") from exc


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes = b"text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def set_cookie(self, name: str, value: str, *, secure: bool, max_age: int, path: str) -> None:
        attrs = f"{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict"
        if secure:
            attrs += "; Secure"
        self.headers.append((b"set-cookie", attrs.encode("latin-1")))

    def clear_cookie(self, name: str, *, path: str) -> None:
        self.headers.append(
            (b"set-cookie", f"{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict".encode("latin-1"))
        )


def redirect(location: str) -> Response:
    return Response(303, b"", headers=[(b"location", location.encode("latin-1"))])


async def send_response(send: Send, response: Response, request_id: str) -> int:
    headers = [
        (b"content-type", response.content_type),
        *(
            []
            if any(name == b"cache-control" for name, _ in response.headers)
            else [(b"cache-control", b"no-store")]
        ),
        (b"content-length", str(len(response.body)).encode()),
        (b"x-request-id", request_id.encode()),
        *SECURITY_HEADERS,
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})
    return len(response.body)
