"""Answers the gateway writes itself: refusals (`{"error": "…"}`) and its own small documents."""

from __future__ import annotations

import json

from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, HeaderList, Send

JSON = b"application/json; charset=utf-8"


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


async def send_refusal(send: Send, refusal: Refusal, facts: AuditFacts, extra: HeaderList) -> None:
    body = error_body(refusal.message)
    headers = [
        (b"content-type", JSON),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", facts.request_id.encode()),
        *extra,
    ]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="ollama-guard"'))
    if refusal.retry_after is not None:
        headers.append((b"retry-after", str(refusal.retry_after).encode()))
    if facts.body_pending or refusal.status in (408, 413) or refusal.reason == "repeated-header":
        headers.append((b"connection", b"close"))  # do not drain a body we refused
    facts.started_response = True
    facts.bytes_out = len(body)
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_simple(send: Send, status: int, body: bytes, ctype: bytes, facts: AuditFacts) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", facts.request_id.encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})
    facts.status = status
    facts.bytes_out = len(body)
