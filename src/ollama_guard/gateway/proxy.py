"""Header hygiene: what crosses the gateway in each direction.

Only a fixed set of request headers is forwarded (Content-Type, Accept, User-Agent, Content-Length of
blob uploads) plus our X-Request-ID; everything else — Authorization, X-API-Key, Cookie, Origin,
X-Forwarded-*, hop-by-hop headers — stays at the gateway. Host is the upstream's own host:port
(`gateway/upstream.py`, the pooled client). Of the answer, hop-by-hop headers, the upstream's CORS
headers, cookies and its server identity are dropped.

The client and the token counter lived here before; their names are still importable from this module.
"""

from __future__ import annotations

from ollama_guard.gateway.upstream import (
    HandOver,
    Upstream,
    UpstreamBusy,
    UpstreamError,
    UpstreamResponse,
)
from ollama_guard.gateway.usage import TokenCounter

__all__ = [
    "HandOver", "TokenCounter", "Upstream", "UpstreamBusy", "UpstreamError", "UpstreamResponse",
    "forward_headers", "is_streaming", "response_headers",
]

# Response headers the gateway never relays (hop-by-hop, our own CORS, cookies, server identity).
_DROP_RESPONSE_HEADERS = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
        b"trailers", b"transfer-encoding", b"upgrade", b"date", b"server", b"set-cookie",
        b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-allow-headers",
        b"access-control-allow-methods", b"access-control-expose-headers", b"access-control-max-age",
        b"vary", b"x-request-id",
    }
)


def response_headers(resp: UpstreamResponse, *, drop_length: bool) -> list[tuple[bytes, bytes]]:
    """Upstream response headers fit to relay (hop-by-hop and our own headers removed)."""
    out: list[tuple[bytes, bytes]] = []
    for name, value in resp.raw_headers:
        lname = name.lower()
        if lname in _DROP_RESPONSE_HEADERS:
            continue
        if lname == b"content-length" and drop_length:
            continue
        out.append((lname, value))
    return out


def is_streaming(resp: UpstreamResponse) -> bool:
    return resp.content_type.startswith((b"application/x-ndjson", b"text/event-stream")) or (
        resp.content_length is None
    )


def _clean(value: bytes | None) -> bytes | None:
    if value is None or b"\r" in value or b"\n" in value or b"\x00" in value:
        return None
    return value


def forward_headers(
    content_type: bytes | None, accept: bytes | None, user_agent: bytes | None, request_id: str
) -> list[tuple[bytes, bytes]]:
    headers = [(b"X-Request-ID", request_id.encode("ascii")), (b"Accept-Encoding", b"identity")]
    for name, value in ((b"Content-Type", content_type), (b"Accept", accept), (b"User-Agent", user_agent)):
        value = _clean(value)
        if value is not None:
            headers.append((name, value))
    return headers
