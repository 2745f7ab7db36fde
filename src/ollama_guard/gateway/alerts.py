"""Alerts that `watch --db URL` saw, kept in the gateway database so the console can show the latest.

``og_alerts`` lives with the other active-response tables (``bans.ban_metadata``: created on first use by
``bans.ensure_schema``). One row per alert sent (a first alert, an update or an escalation), at most
``KEEP`` days old. Only what a person needs to act is stored: rule, severity, target, client, title,
source, first/last seen and count — never evidence that could hold a secret.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Integer, String, Table, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.bans import ban_metadata, ensure_schema

KEEP = timedelta(days=30)

alerts_table = Table(
    "og_alerts",
    ban_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created", DateTime, nullable=False),  # naive UTC, when it was recorded
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("target", Text, nullable=False),
    Column("client", String(64), nullable=True),
    Column("title", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("first_seen", String(40), nullable=True),
    Column("last_seen", String(40), nullable=True),
    Column("count", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),  # new, update, escalation (watch's alert kinds)
)


def _text(value: Any, limit: int) -> str:
    return str(value if value is not None else "")[:limit]


class AlertStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._ready = False

    async def _schema(self) -> None:
        """Create the table on first use (databases made before alerts were kept have none)."""
        if not self._ready:
            await ensure_schema(self.engine)
            self._ready = True

    async def record(self, alert: dict[str, Any]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        client = (alert.get("evidence") or {}).get("client")
        values = {
            "created": now,
            "rule": _text(alert.get("rule"), 64),
            "severity": _text(alert.get("severity"), 16),
            "target": _text(alert.get("target"), 500),
            "client": _text(client, 64) if client else None,
            "title": _text(alert.get("title"), 500),
            "source": _text(alert.get("source"), 500),
            "first_seen": _text(alert.get("first_seen"), 40) or None,
            "last_seen": _text(alert.get("last_seen"), 40) or None,
            "count": int(alert.get("count") or 0),
            "kind": _text(alert.get("alert") or "new", 16),
        }
        await self._schema()
        async with self.engine.begin() as conn:
            await conn.execute(alerts_table.insert().values(**values))
            await conn.execute(delete(alerts_table).where(alerts_table.c.created < now - KEEP))

    async def latest(self, limit: int = 10) -> list[dict[str, Any]]:
        await self._schema()
        query = select(alerts_table).order_by(alerts_table.c.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]
