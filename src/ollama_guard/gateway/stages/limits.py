"""Stage 7, `limits`: admit the request under its key's rate, concurrency and token limits.

A limit reached → 429 with Retry-After; a limit store that cannot decide → 503 (fail closed). The
admission is a slot held until the answer is relayed (`release`); it takes the request's token
reservation (`account.reservation`) in the same atomic step.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from ollama_guard.gateway.limits import Limited, Reservation, StoreUnavailable
from ollama_guard.gateway.ratelog import GATEWAY_LOG
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts

log = logging.getLogger("ollama_guard.gateway")

Slot = contextlib.AbstractAsyncContextManager[Any]


async def admit(
    limiter: Any, key: Any, facts: AuditFacts, reserve: int = 0
) -> tuple[Slot, Reservation | None]:
    """An entered limiter slot for this request and its token reservation, or a Refusal."""
    slot = limiter.acquire(key, reserve) if reserve else limiter.acquire(key)
    try:
        reservation = await slot.__aenter__()
    except Limited as exc:
        raise Refusal(429, str(exc.reason), "rate-limited", retry_after=exc.retry_after) from None
    except Exception as exc:  # StoreUnavailable, or a bug: either way the limits cannot be checked
        kind = "" if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: "
        GATEWAY_LOG.error("limit-store", "limit store unavailable, refusing limited keys (%s%s)", kind, exc)
        raise Refusal(503, "limit store unavailable", "limit-store-unavailable") from None
    return slot, reservation if isinstance(reservation, Reservation) else None


async def release(slot: Slot) -> None:
    try:
        await slot.__aexit__(None, None, None)
    except Exception:
        log.exception("could not release a limiter slot")
