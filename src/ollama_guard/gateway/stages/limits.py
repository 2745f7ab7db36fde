"""Stage 7, `limits`: admit the request under its key's rate, concurrency and token limits.

A limit reached → 429 with Retry-After; a limit store that cannot decide → 503 (fail closed). The
admission is a slot held until the answer is relayed (`release`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ollama_guard.gateway.limits import Limited, StoreUnavailable
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts

log = logging.getLogger("ollama_guard.gateway")

Slot = contextlib.AbstractAsyncContextManager[None]


async def admit(limiter: Any, key: Any, facts: AuditFacts) -> Slot:
    """An entered limiter slot for this request, or a Refusal."""
    slot = limiter.acquire(key)
    try:
        await slot.__aenter__()
    except Limited as exc:
        raise Refusal(429, str(exc.reason), "rate-limited", retry_after=exc.retry_after) from None
    except StoreUnavailable:
        log.error("limit store unavailable; refusing request %s", facts.request_id)
        raise Refusal(503, "limit store unavailable", "limit-store-unavailable") from None
    except Exception:
        log.exception("limit check failed; refusing request %s", facts.request_id)
        raise Refusal(503, "limit store unavailable", "limit-store-unavailable") from None
    return slot


async def release(slot: Slot) -> None:
    try:
        await slot.__aexit__(None, None, None)
    except Exception:
        log.exception("could not release a limiter slot")
