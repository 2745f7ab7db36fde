"""Reading the audit log back: ``logs tail`` and ``investigate --audit-db`` (in insertion order)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.audit.record import AuditRecord, row_to_record, utc_naive
from ollama_guard.gateway.db import audit_table, short_db_error

log = logging.getLogger(__name__)


async def read_records(
    engine: AsyncEngine,
    *,
    after_id: int | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Records in the order they were written (``id``; an older release's migrated records have ids
    below 0), after ``after_id`` (from the first when None)."""
    query = select(audit_table).order_by(audit_table.c.id)
    if after_id is not None:
        query = query.where(audit_table.c.id > after_id)
    if since is not None:
        query = query.where(audit_table.c.time >= utc_naive(since))
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        return [row_to_record(r) for r in (await conn.execute(query)).all()]


async def tail(
    engine: AsyncEngine, n: int = 20, follow: bool = False, *, poll_interval: float = 0.5
) -> AsyncIterator[AuditRecord]:
    """The last ``n`` records, oldest first; with ``follow``, then every new record as it is written."""
    async with engine.connect() as conn:
        newest = (await conn.execute(select(func.max(audit_table.c.id)))).scalar() or 0
        first = (
            await conn.execute(
                select(audit_table.c.id).order_by(audit_table.c.id.desc()).offset(max(0, n - 1)).limit(1)
            )
        ).scalar()
    start = (first - 1) if (first is not None and n > 0) else (newest if n <= 0 else 0)
    for record in await read_records(engine, after_id=start):
        start = record.id or start
        yield record
    while follow:
        await asyncio.sleep(poll_interval)
        try:
            fresh = await read_records(engine, after_id=start, limit=1000)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("audit log unreadable: %s", short_db_error(exc))
            continue
        for record in fresh:
            start = record.id or start
            yield record
