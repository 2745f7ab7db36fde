"""Answers the gateway writes itself: refusals and its own small documents.

A refusal speaks the dialect of the route it answers, so each client library shows its reason:
Ollama routes get Ollama's `{"error": "…"}`; OpenAI-compatible routes (`/v1/…`) get OpenAI's
`{"error": {"message", "type", "param", "code"}}` (the `openai` client raises the matching
exception with `.code` = our reason); `/v1/messages` gets Anthropic's `{"type": "error", "error":
{"type", "message"}}`.
"""

from __future__ import annotations

import json

from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, HeaderList, Send

JSON = b"application/json; charset=utf-8"


# OpenAI's error types by status (Anthropic uses the same names for these statuses)
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 415: "invalid_request_error",
    429: "rate_limit_error", 502: "api_error", 503: "overloaded_error", 504: "timeout_error",
}


def error_body(message: str, path: str = "", status: int = 400, reason: str = "") -> bytes:
    if path.startswith("/v1/"):
        kind = _ERROR_TYPES.get(status, "api_error")
        if path == "/v1/messages":
            document: dict = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            document = {"error": {"message": message, "type": kind, "param": None, "code": reason or None}}
    else:
        document = {"error": message}
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


async def send_refusal(send: Send, refusal: Refusal, facts: AuditFacts, extra: HeaderList) -> None:
    body = error_body(refusal.message, facts.path, refusal.status, refusal.reason)
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
