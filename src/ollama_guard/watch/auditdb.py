"""Follow the gateway's audit log in its database: every row written after the watch started (or all of
them with ``--from-start``), polled a few times a second. New rows are followed per writer (its
sequence numbers, see ``gateway.audit.follow``), not by row id: with several writers on PostgreSQL a
row with a lower id can commit after one with a higher id, and following ids would skip it for good.
A database outage is reported once and waited out; no row is skipped when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        self.follower: Any = None  # gateway.audit.follow.Follower, once started
        # --from-start: rows up to each writer's head when the watch started are read by id first
        self.history: dict[str, int] | None = None
        self.after: int | None = None  # the last row id of that history read

    async def _start(self, engine: AsyncEngine, follow: bool) -> None:
        from ollama_guard.gateway.audit.follow import Follower, all_heads, cursor_now, snapshot

        async with snapshot(engine) as conn:
            cursor = await cursor_now(conn)
            if self.from_start or not follow:
                self.history = await all_heads(conn)
        self.follower = Follower(engine, cursor, limit=PAGE)

    async def _page(self, engine: AsyncEngine) -> list[Event]:
        from ollama_guard.gateway.audit import read_records
        from ollama_guard.gateway.audit.record import row_to_record

        if self.history is None:
            return [audit_event(row_to_record(r)) for r in await self.follower.poll()]
        records = await read_records(engine, after_id=self.after, limit=PAGE)
        if not records:
            self.history = None  # read up to where following began
            return []
        self.after = records[-1].id
        heads = self.history
        return [audit_event(r) for r in records if (r.seq or 0) <= heads.get(r.writer, -1)]

    async def run(self, sink: Callable[[list[Event]], None], notice: Callable[[str], None],
                  stop: asyncio.Event, *, follow: bool = True) -> None:
        from ollama_guard.gateway.db import create_engine_for

        engine = create_engine_for(self.url)
        down = False
        try:
            while not stop.is_set():
                try:
                    if self.follower is None:
                        await self._start(engine, follow)
                    while True:
                        reading_history = self.history is not None
                        events = await self._page(engine)
                        if events:
                            sink(events)
                        if not follow and self.history is None:
                            break  # --once: everything up to the start was read
                        if not reading_history and len(events) < PAGE:
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
