"""What the console reads from the gateway database: audit aggregates, audit pages, key usage.

Every aggregate is bounded by time (the audit log's ``time`` column is indexed), so a page costs the
same on a ten-row log and a ten-million-row one as long as the window holds a similar number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.audit.follow import Cursor, cursor_now, poll, snapshot
from ollama_guard.gateway.db import audit_table

AUDIT_PAGE = 100
TOP_N = 8


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    allowed: int
    refused: int
    tokens: int


@dataclass(frozen=True, slots=True)
class AuditFilter:
    key: str = ""
    client: str = ""
    path: str = ""
    decision: str = ""
    since: datetime | None = None
    until: datetime | None = None
    before_seq: int | None = None

    def active(self) -> bool:
        return any((self.key, self.client, self.path, self.decision, self.since, self.until))


def _bucket_expr(dialect: str, hourly: bool) -> Any:
    col = audit_table.c.time
    if dialect == "postgresql":
        return func.to_char(
            func.date_trunc("hour" if hourly else "day", col), 'YYYY-MM-DD"T"HH24' if hourly else "YYYY-MM-DD"
        )
    return func.strftime("%Y-%m-%dT%H" if hourly else "%Y-%m-%d", col)


async def usage_series(
    engine: AsyncEngine, *, hours: int, hourly: bool, now: datetime | None = None
) -> list[Bucket]:
    """Allowed and refused requests and tokens per hour (or day) over the last ``hours``; empty
    buckets included, oldest first."""
    now = now or utc_now()
    step = timedelta(hours=1) if hourly else timedelta(days=1)
    if hourly:
        first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    else:
        first = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=hours // 24 - 1)
    bucket = _bucket_expr(engine.dialect.name, hourly).label("bucket")
    # an aggregated row (refusals of unauthenticated traffic, ``count`` > 1) stands for ``count`` requests
    allowed = func.sum(case((audit_table.c.decision == "allow", audit_table.c.count), else_=0))
    query = (
        select(
            bucket, allowed, func.sum(audit_table.c.count), func.coalesce(func.sum(audit_table.c.tokens), 0)
        )
        .where(audit_table.c.time >= first)
        .group_by(bucket)
    )
    async with engine.connect() as conn:
        rows = {r[0]: r for r in (await conn.execute(query)).all()}
    out: list[Bucket] = []
    start = first
    fmt = "%Y-%m-%dT%H" if hourly else "%Y-%m-%d"
    while start <= now:
        row = rows.get(start.strftime(fmt))
        total = int(row[2]) if row else 0
        ok = int(row[1] or 0) if row else 0
        out.append(Bucket(start, ok, total - ok, int(row[3]) if row else 0))
        start += step
    return out


async def top_keys(engine: AsyncEngine, since: datetime) -> list[dict[str, Any]]:
    query = (
        select(
            audit_table.c.key_name,
            func.count().label("n"),
            func.coalesce(func.sum(audit_table.c.tokens), 0).label("tokens"),
        )
        .where(audit_table.c.time >= since, audit_table.c.key_id.is_not(None))
        .group_by(audit_table.c.key_name)
        .order_by(func.count().desc())
        .limit(TOP_N)
    )
    async with engine.connect() as conn:
        return [
            {"name": r[0] or "?", "requests": int(r[1]), "tokens": int(r[2])}
            for r in (await conn.execute(query)).all()
        ]


async def top_refused_clients(engine: AsyncEngine, since: datetime) -> list[dict[str, Any]]:
    query = (
        select(audit_table.c.client, func.sum(audit_table.c.count).label("n"), func.max(audit_table.c.reason))
        .where(audit_table.c.time >= since, audit_table.c.decision != "allow")
        .group_by(audit_table.c.client)
        .order_by(func.sum(audit_table.c.count).desc())
        .limit(TOP_N)
    )
    async with engine.connect() as conn:
        return [
            {"client": r[0], "refusals": int(r[1]), "reason": r[2] or ""}
            for r in (await conn.execute(query)).all()
        ]


async def key_usage(engine: AsyncEngine, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per key id: last use within 7 days and today's (UTC) tokens and requests."""
    now = now or utc_now()
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = now - timedelta(days=7)
    today_tokens = func.sum(case((audit_table.c.time >= day, audit_table.c.tokens), else_=0))
    today_requests = func.sum(case((audit_table.c.time >= day, 1), else_=0))
    query = (
        select(audit_table.c.key_id, func.max(audit_table.c.time), today_tokens, today_requests)
        .where(audit_table.c.time >= week, audit_table.c.key_id.is_not(None))
        .group_by(audit_table.c.key_id)
    )
    async with engine.connect() as conn:
        return {
            r[0]: {"last_used": r[1], "tokens_today": int(r[2] or 0), "requests_today": int(r[3] or 0)}
            for r in (await conn.execute(query)).all()
        }


def _conditions(flt: AuditFilter) -> list[Any]:
    c = audit_table.c
    out: list[Any] = []
    if flt.key:
        out.append((c.key_name == flt.key) | (c.key_id == flt.key))
    if flt.client:
        out.append(c.client == flt.client)
    if flt.path:
        out.append(c.path.startswith(flt.path, autoescape=True))
    if flt.decision:
        out.append(c.decision == flt.decision)
    if flt.since is not None:
        out.append(c.time >= flt.since)
    if flt.until is not None:
        out.append(c.time < flt.until)
    return out


def _filtered(query: Any, flt: AuditFilter) -> Any:
    return query.where(*_conditions(flt))


_COLUMNS = (
    "seq",
    "time",
    "key_name",
    "client",
    "method",
    "path",
    "model",
    "status",
    "decision",
    "reason",
    "count",
    "tokens",
    "latency_ms",
)


def _selected() -> list[Any]:
    # the page's "seq" is the row id: one number across every writer's chain, in insertion order
    return [audit_table.c.id.label("seq") if name == "seq" else audit_table.c[name] for name in _COLUMNS]


def _row(r: Any) -> dict[str, Any]:
    return dict(zip(_COLUMNS, r, strict=True))


async def audit_page(engine: AsyncEngine, flt: AuditFilter,
                     limit: int = AUDIT_PAGE) -> tuple[list[dict[str, Any]], str]:
    """Newest first, ``limit`` records matching ``flt`` (older than ``before_seq`` when given), and the
    live view's cursor at the same moment (``follow.Cursor`` text: where following starts)."""
    query = _filtered(select(*_selected()), flt)
    if flt.before_seq is not None:
        query = query.where(audit_table.c.id < flt.before_seq)
    query = query.order_by(audit_table.c.id.desc()).limit(limit)
    async with snapshot(engine) as conn:
        rows = [_row(r) for r in (await conn.execute(query)).all()]
        cursor = await cursor_now(conn)
    return rows, cursor.encode()


async def audit_follow(
    engine: AsyncEngine, flt: AuditFilter, cursor: Cursor, limit: int = 200
) -> tuple[list[dict[str, Any]], Cursor]:
    """Records written after ``cursor`` matching ``flt``, oldest first, and the cursor after them (for
    the live tail: followed per writer, so a record committed late under a lower id still comes)."""
    async with snapshot(engine) as conn:
        rows, after = await poll(conn, cursor, where=_conditions(flt), limit=limit)
    return [{name: r.id if name == "seq" else r._mapping[name] for name in _COLUMNS} for r in rows], after
