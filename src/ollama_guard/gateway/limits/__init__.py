"""Per-key limits: requests per minute, concurrent requests, tokens per (UTC) day.

Two implementations behind one interface (``Limiter``):

* ``MemoryLimiter`` — state in this process. Right for one gateway process; ``build_limiter`` refuses
  ``workers > 1`` without Redis, because each process would then enforce its own copy of every limit.
  When given the database engine it seeds today's token use from the audit log at start, so a
  restart does not hand out a fresh daily budget.
* ``RedisLimiter`` — state in Redis, shared by every worker and replica. One Lua script checks all
  three limits and, only if all pass, records the request and takes a concurrency lease, atomically
  (Redis' own clock, so replicas with skewed clocks agree). Leases carry an expiry that a background
  task renews while the request runs; a crashed worker's slots free themselves after ``lease_ttl``.

Semantics (both): requests per minute is a sliding window — at most ``rpm`` admitted requests in any
60 s. Concurrency counts requests inside ``acquire``; the slot is released on exit, also when the task
is cancelled. Tokens per day: a request is refused once today's (UTC) recorded tokens reach the
budget; reservations and settled use count (so the request that crosses the budget
completes, the next one is refused). A denial consumes nothing.

Requests that spend tokens reserve them at admission (``acquire(key, reserve)``): the reservation
counts against the day's budget at once, so concurrent requests cannot together pass the budget by
more than one reservation; ``settle`` replaces it by what the request really used.

Failures never fail open: any Redis error raises ``StoreUnavailable`` (the gateway answers 503).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_guard.errors import GuardError
from ollama_guard.gateway.limits.base import (
    WINDOW_SECONDS,
    Limited,
    Limiter,
    Reservation,
    StoreUnavailable,
    seconds_until_utc_midnight,
    utc_day,
)
from ollama_guard.gateway.limits.memory import MemoryLimiter
from ollama_guard.gateway.limits.redis_store import RedisLimiter, parse_sentinel_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "WINDOW_SECONDS", "Limited", "Limiter", "MemoryLimiter", "RedisLimiter", "Reservation",
    "StoreUnavailable", "build_limiter", "parse_sentinel_url", "seconds_until_utc_midnight", "utc_day",
]


def build_limiter(config: Any, workers: int | None = None, engine: AsyncEngine | None = None) -> Limiter:
    """Redis limiter when ``config.redis`` is set, else the in-process one.

    ``workers`` (default ``config.workers`` or 1): several processes without Redis would each enforce
    their own copy of every limit, so that combination is refused.
    """
    redis_url = (getattr(config, "redis", None) or "").strip() if config is not None else ""
    if workers is None:
        workers = int(getattr(config, "workers", 1) or 1) if config is not None else 1
    if redis_url:
        return RedisLimiter(redis_url, prefix=getattr(config, "redis_prefix", None) or "og:", engine=engine)
    if workers > 1:
        raise GuardError(
            f"{workers} workers need shared limit state: set redis (--redis URL) or run one worker"
        )
    return MemoryLimiter(engine)
