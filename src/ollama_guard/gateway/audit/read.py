"""Reading the audit log back: ``logs tail`` and ``investigate --audit-db`` (in insertion order; following
new records goes through ``follow``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.audit.follow import Follower, cursor_now, snapshot
from ollama_guard.gateway.audit.legacy import has_legacy_table, has_table, read_old_records
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
        if not await has_table(conn, audit_table.name) and await has_legacy_table(conn):  # not upgraded
            when = None if since is None else utc_naive(since)
            return await read_old_records(conn, after_id=after_id, since=when, limit=limit)
        return [row_to_record(r) for r in (await conn.execute(query)).all()]


async def tail(
    engine: AsyncEngine, n: int = 20, follow: bool = False, *, poll_interval: float = 0.5
) -> AsyncIterator[AuditRecord]:
    """The last ``n`` records, oldest first; with ``follow``, then every new record as it is written
    (followed per writer, so a record that commits after one with a higher id is not skipped)."""
    async with snapshot(engine) as conn:
        last = (
            (await conn.execute(select(audit_table).order_by(audit_table.c.id.desc()).limit(n))).all()
            if n > 0 else []
        )
        follower = Follower(engine, await cursor_now(conn))
    for row in reversed(last):
        yield row_to_record(row)
    while follow:
        await asyncio.sleep(poll_interval)
        try:
            fresh = await follower.poll()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("audit log unreadable: %s", short_db_error(exc))
            continue
        for row in fresh:
            yield row_to_record(row)
