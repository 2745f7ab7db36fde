"""Stage 3, `authenticate`: which key is presented, and is it one of ours.

The key comes from `Authorization: Bearer <key>` or `X-API-Key: <key>`. When both are present they
must agree — unless exactly one of them has the shape of our keys (`og_<id>_<secret>`) and the other
is a placeholder (Ollama's Anthropic-compatibility docs have clients send `x-api-key: ollama`).
Missing, malformed, unknown, revoked or expired keys → 401; a key store that cannot decide →
503 (fail closed). The key is never logged or recorded, only its id and name.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from ollama_guard.gateway.keys import parse_token
from ollama_guard.gateway.ratelog import GATEWAY_LOG
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, RequestHeaders

log = logging.getLogger("ollama_guard.gateway")

MAX_KEY_CHARS = 512


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def presented_key(headers: RequestHeaders) -> str:
    """The key the client presents (Refusal 401 when none, or two that disagree)."""
    presented: str | None = None
    if headers.authorization is not None:
        scheme, _, token = headers.authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(401, "use Authorization: Bearer <key>", "bad-auth-scheme")
        presented = token.strip()
    if headers.api_key is not None:
        value = headers.api_key.decode("latin-1").strip()
        if presented is not None and value != presented:
            ours = [v for v in (presented, value) if parse_token(v) is not None]
            if len(ours) != 1:
                raise Refusal(401, "Authorization and X-API-Key disagree", "conflicting-keys")
            value = ours[0]
        presented = value
    if not presented:
        raise Refusal(401, "API key required", "no-key")
    if len(presented) > MAX_KEY_CHARS:
        raise Refusal(401, "invalid API key", "bad-key")
    return presented


async def authenticate(headers: RequestHeaders, facts: AuditFacts, authenticator: Any) -> Any:
    """The caller's key (an `ApiKey`), or a Refusal."""
    presented = presented_key(headers)
    try:
        key = await authenticator.authenticate(presented)
    except Exception as exc:
        GATEWAY_LOG.error("key-store", "key store unavailable, refusing keyed requests (%s)", _why(exc))
        raise Refusal(503, "key store unavailable", "key-store-unavailable") from None
    if key is None:
        raise Refusal(401, "invalid API key", "bad-key")
    facts.key_id, facts.key_name = key.id, key.name
    if getattr(key, "revoked", False):
        raise Refusal(401, "invalid API key", "revoked-key")
    expires_at = getattr(key, "expires_at", None)
    if expires_at is not None:
        now = datetime.now(UTC)
        if expires_at.tzinfo is None:
            now = now.replace(tzinfo=None)
        if expires_at <= now:
            raise Refusal(401, "API key expired", "expired-key")
    return key
