"""What one request carries through the stages: its headers (parsed once), its audit facts and the
ASGI channels. Stages read and fill a `Request`; none of them keeps per-request state of its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ollama_guard.gateway.body import BodyLease
from ollama_guard.gateway.refusal import Refusal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HeaderList = list[tuple[bytes, bytes]]

_OVERRIDE_HEADERS = (b"x-http-method-override", b"x-http-method", b"x-method-override")

# request header → attribute of `RequestHeaders`
_HEADER_FIELDS: dict[bytes, str] = {
    b"authorization": "authorization",
    b"x-api-key": "api_key",
    b"content-length": "content_length",
    b"transfer-encoding": "transfer_encoding",
    b"content-encoding": "content_encoding",
    b"origin": "origin",
    b"x-forwarded-for": "forwarded_for",
    b"content-type": "content_type",
    b"accept": "accept",
    b"user-agent": "user_agent",
    b"access-control-request-method": "cors_method",
    b"access-control-request-headers": "cors_headers",
    **dict.fromkeys(_OVERRIDE_HEADERS, "method_override"),
}
# a second copy of one of these is refused (two keys, two lengths: parser differences live there)
_SINGLE_VALUED = frozenset(
    {"authorization", "api_key", "content_length", "transfer_encoding", "content_encoding", "origin",
     "content_type"}
)


class RequestHeaders:
    """The request headers the gateway looks at (raw bytes, None when absent); others are ignored."""

    __slots__ = tuple(sorted(set(_HEADER_FIELDS.values())))

    authorization: bytes | None
    api_key: bytes | None
    content_length: bytes | None
    transfer_encoding: bytes | None
    content_encoding: bytes | None
    origin: bytes | None
    forwarded_for: bytes | None
    content_type: bytes | None
    accept: bytes | None
    user_agent: bytes | None
    cors_method: bytes | None
    cors_headers: bytes | None
    method_override: bytes | None

    def __init__(self, raw_headers: HeaderList) -> None:
        """One pass over the request headers; a repeated security-relevant header is refused."""
        for name in self.__slots__:
            setattr(self, name, None)
        for name, value in raw_headers:
            attr = _HEADER_FIELDS.get(name)
            if attr is None:
                continue
            current = getattr(self, attr)
            if current is None:
                setattr(self, attr, value)
            elif attr in _SINGLE_VALUED:
                raise Refusal(400, f"repeated {name.decode('latin-1')} header", "repeated-header")
            else:
                setattr(self, attr, current + b"," + value)

    @property
    def announces_body(self) -> bool:
        return self.transfer_encoding is not None or self.content_length not in (None, b"0")


@dataclass(slots=True)
class AuditFacts:
    """What the audit record of one request will say (filled by the stages as they decide)."""

    method: str
    path: str
    client: str
    request_id: str
    route: str = "unmatched"
    key_id: str | None = None
    key_name: str | None = None
    model: str | None = None
    status: int = 0
    decision: str = "deny"
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0
    client_gone: bool = False
    responded: bool = False  # the last response byte has been handed to the server
    started_response: bool = False  # the status line has been sent
    body_pending: bool = False  # the client announced a body we have not read


@dataclass(slots=True)
class Request:
    """One request on its way through the stages."""

    scope: Scope
    receive: Receive
    send: Send
    method: str
    path: str  # the raw path (latin-1), never decoded or normalised
    facts: AuditFacts
    started: float
    headers: RequestHeaders | None = None  # parsed by the `client` stage
    cors_headers: HeaderList = field(default_factory=list)  # added to every answer (CORS)
    lease: BodyLease | None = None  # body bytes held in the in-flight budget (`judge_body`)
