"""What both limiters share: the refusals, the UTC day, reservations and the seed from the audit log."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ollama_guard.gateway.keys import ApiKey

WINDOW_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The key store or the limit store cannot be used right now. Callers must refuse (fail closed)."""


class Limited(Exception):
    """A per-key limit refuses this request. ``retry_after`` (whole seconds, ≥ 1) goes into Retry-After."""

    def __init__(self, reason: str, retry_after: float) -> None:
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"{reason} (retry after {self.retry_after} s)")


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens taken from a key's daily budget when its request was admitted, settled afterwards."""

    id: str
    day: str
    tokens: int


def seconds_until_utc_midnight(now: datetime | None = None) -> float:
    current = now or datetime.now(UTC)
    tomorrow = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - current).total_seconds()


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d")


class Limiter(Protocol):
    def acquire(
        self, key: ApiKey, reserve: int = 0
    ) -> contextlib.AbstractAsyncContextManager[Reservation | None]: ...

    async def settle(self, key: ApiKey, reservation: Reservation, tokens: int) -> None: ...

    async def add_tokens(self, key: ApiKey, n: int) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def has_limits(key: ApiKey) -> bool:
    return key.rpm is not None or key.concurrency is not None or key.tokens_per_day is not None


@dataclass(frozen=True, slots=True)
class AuditSeed:
    """What the audit log says a key used: tokens today, and the times of its admitted requests in
    the last minute (epoch milliseconds)."""

    tokens: dict[str, int]
    recent: dict[str, list[int]]


async def seed_from_audit(engine: AsyncEngine, now: datetime, key_id: str | None = None) -> AuditSeed:
    """Today's token use and the last minute's admitted requests per key, from the audit log (so a
    restart of the gateway or of Redis hands out no fresh budget). StoreUnavailable when unreadable."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from ollama_guard.gateway.db import audit_table

    t = audit_table.c
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    midnight = naive_now.replace(hour=0, minute=0, second=0, microsecond=0)
    tokens_query = select(t.key_id, func.sum(t.tokens)).where(t.time >= midnight, t.key_id.is_not(None))
    recent_query = select(t.key_id, t.time).where(
        t.time >= naive_now - timedelta(seconds=WINDOW_SECONDS), t.key_id.is_not(None), t.decision == "allow"
    )
    if key_id is not None:
        tokens_query = tokens_query.where(t.key_id == key_id)
        recent_query = recent_query.where(t.key_id == key_id)
    try:
        async with engine.connect() as conn:
            totals = (await conn.execute(tokens_query.group_by(t.key_id))).all()
            recent_rows = (await conn.execute(recent_query)).all()
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(f"cannot read today's use from the audit log: {exc}") from exc
    recent: dict[str, list[int]] = {}
    for kid, when in recent_rows:
        recent.setdefault(kid, []).append(int(when.replace(tzinfo=UTC).timestamp() * 1000))
    return AuditSeed({kid: int(total or 0) for kid, total in totals}, recent)
