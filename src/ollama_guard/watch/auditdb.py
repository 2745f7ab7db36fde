"""Follow the gateway's audit log in its database by row id (insertion order): every row written after the
watch started (or all of them with ``--from-start``), polled a few times a second. A database outage
is reported once and waited out; no row is skipped when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ollama_guard.errors import GuardError, InputError
from ollama_guard.investigate.events import Event
from ollama_guard.investigate.sources import audit_event

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

POLL = 0.2
PAGE = 2000


def check_url(url: str) -> None:
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :]).expanduser()
        if not path.is_file():
            raise InputError(f"audit database {path} does not exist")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


class AuditFollower:
    name = "audit-db"

    def __init__(self, url: str, *, from_start: bool = False, poll: float = POLL) -> None:
        check_url(url)
        self.url = url
        self.from_start = from_start
        self.poll = poll
        self.after: int | None = None  # the last sequence number handed on

    async def _newest(self, engine: AsyncEngine) -> int:
        from sqlalchemy import func, select

        from ollama_guard.gateway.db import audit_table

        async with engine.connect() as conn:
            return int((await conn.execute(select(func.max(audit_table.c.id)))).scalar() or 0)

    async def _page(self, engine: AsyncEngine) -> list[Event]:
        from ollama_guard.gateway.audit import read_records

        assert self.after is not None
        records = await read_records(engine, after_id=self.after, limit=PAGE)
        events = []
        for rec in records:
            self.after = max(self.after, int(rec.id or 0))
            events.append(audit_event(rec))
        return events

    async def run(self, sink: Callable[[list[Event]], None], notice: Callable[[str], None],
                  stop: asyncio.Event, *, follow: bool = True) -> None:
        from ollama_guard.gateway.db import create_engine_for

        engine = create_engine_for(self.url)
        down = False
        try:
            while not stop.is_set():
                try:
                    if self.after is None:
                        self.after = 0 if self.from_start or not follow else await self._newest(engine)
                    while True:
                        events = await self._page(engine)
                        if events:
                            sink(events)
                        if len(events) < PAGE:
                            break
                    if down:
                        notice("audit database is readable again")
                        down = False
                except Exception as exc:  # any driver's error: report once, keep trying
                    if not follow:
                        raise GuardError(f"cannot read the audit log: {_short(exc)}") from None
                    if not down:
                        notice(f"cannot read the audit log ({_short(exc)}); retrying")
                        down = True
                if not follow:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll)
        finally:
            await engine.dispose()
