"""Following the audit log as it is written — every record once, none skipped.

Row ids are handed out when a row is inserted, but with several writers on PostgreSQL rows commit in
another order: a reader that keeps "id > the last id I saw" skips for good a row whose lower id commits
after a higher one. So readers follow each writer's *sequence* instead: a writer commits its records
in seq order, together with its head (og_audit_writers), so once a head says seq S, every record of
that writer up to S is visible. A ``Cursor`` holds, per writer that may still write, the last seq
handed on; new writers are found in the checkpoint chain, whose ids commit in order (each append holds
the chain head's lock) and which records every writer when it registers, before its first record.

A cursor's text form (``Cursor.encode``) lets the console's live view resume where it left off: the
checkpoint id (``c123``), then ``writer:seq`` for each writer being followed (those still open, a
handful), separated by ``|``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.audit.legacy import LEGACY_WRITER
from ollama_guard.gateway.db import audit_checkpoints_table, audit_table, audit_writers_table, state_table

MAX_FOLLOWED = 256  # writers a cursor from outside (the console) may name
_WRITER = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_NUMBER = re.compile(r"[0-9]{1,18}")


@dataclass
class Cursor:
    checkpoint: int  # every writer registered up to this checkpoint id is known
    seqs: dict[str, int] = field(default_factory=dict)  # writer → last seq handed on (writers still open)

    def encode(self) -> str:
        return "|".join([f"c{self.checkpoint}", *(f"{w}:{s}" for w, s in sorted(self.seqs.items()))])

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """A cursor from ``encode``, or None for anything else (never an exception)."""
        parts = text.split("|")
        if len(parts) > MAX_FOLLOWED + 1 or parts[0][:1] != "c" or not _NUMBER.fullmatch(parts[0][1:]):
            return None
        seqs: dict[str, int] = {}
        for part in parts[1:]:
            writer, _, seq = part.rpartition(":")
            if not _WRITER.fullmatch(writer) or not _NUMBER.fullmatch(seq):
                return None
            seqs[writer] = int(seq)
        return cls(int(parts[0][1:]), seqs)


@asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One read transaction that sees one moment (REPEATABLE READ in PostgreSQL; SQLite's WAL
    snapshot)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


async def _checkpoint_head(conn: AsyncConnection) -> int:
    head = (await conn.execute(select(state_table.c.audit_seq).where(state_table.c.id == 1))).scalar()
    return int(head or 0)


async def cursor_now(conn: AsyncConnection) -> Cursor:
    """A cursor at this moment: what is in the log now counts as handed on."""
    open_writers = (
        await conn.execute(select(audit_writers_table.c.writer, audit_writers_table.c.seq)
                           .where(audit_writers_table.c.closed.is_(False)))
    ).all()
    return Cursor(await _checkpoint_head(conn), {w: int(s) for w, s in open_writers if w != LEGACY_WRITER})


async def all_heads(conn: AsyncConnection) -> dict[str, int]:
    """Every writer's head now (records up to it are visible)."""
    rows = (await conn.execute(select(audit_writers_table.c.writer, audit_writers_table.c.seq))).all()
    return {w: int(s) for w, s in rows}


async def poll(conn: AsyncConnection, cursor: Cursor, *, where: Sequence[Any] = (),
               limit: int = 1000) -> tuple[list[Any], Cursor]:
    """Rows (of ``select(audit_table)``, matching ``where``) written after ``cursor``, in id order, and
    the cursor after them. At most ``limit`` rows per writer; call again for the rest. Best inside
    ``snapshot``."""
    seqs = dict(cursor.seqs)
    head_id = await _checkpoint_head(conn)
    cp = audit_checkpoints_table.c
    if head_id > cursor.checkpoint:
        named = (await conn.execute(
            select(cp.writer, func.min(cp.writer_seq)).where(cp.id > cursor.checkpoint, cp.id <= head_id)
            .group_by(cp.writer))).all()
        for writer, lowest in named:
            if writer in seqs or writer == LEGACY_WRITER:
                continue
            if lowest == 0:  # registered since the cursor (a writer's first checkpoint names seq 0)
                seqs[writer] = 0
                continue
            # one that had closed before the cursor and writes again (which a closed writer should not):
            # from the head its last checkpoint before the cursor named
            before = (await conn.execute(select(func.max(cp.writer_seq)).where(
                cp.writer == writer, cp.id <= cursor.checkpoint))).scalar()
            seqs[writer] = int(before or 0)
    heads = {}
    names = sorted(seqs)
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        heads.update({r.writer: r for r in (await conn.execute(
            select(audit_writers_table.c.writer, audit_writers_table.c.seq, audit_writers_table.c.closed)
            .where(audit_writers_table.c.writer.in_(chunk)))).all()})
    found: list[Any] = []
    for writer in names:
        head = heads.get(writer)
        if head is None:  # the writer's row is gone (not something the gateway does): nothing to follow
            del seqs[writer]
            continue
        done = seqs[writer]
        if head.seq > done:
            c = audit_table.c
            rows = (await conn.execute(
                select(audit_table).where(c.writer == writer, c.seq > done, c.seq <= head.seq, *where)
                .order_by(c.seq).limit(limit))).all()
            found.extend(rows)
            seqs[writer] = rows[-1].seq if len(rows) == limit else int(head.seq)
        if head.closed and seqs[writer] >= head.seq:
            del seqs[writer]  # finished: nothing more will come from it
    found.sort(key=lambda r: r.id)
    return found, Cursor(max(cursor.checkpoint, head_id), seqs)


class Follower:
    """``poll`` in a loop: each call returns the rows written since the last one (none twice, none
    skipped), starting from ``cursor`` or, without one, from the moment of the first call."""

    def __init__(self, engine: AsyncEngine, cursor: Cursor | None = None, *, where: Sequence[Any] = (),
                 limit: int = 1000) -> None:
        self.engine = engine
        self.cursor = cursor
        self.where = tuple(where)
        self.limit = limit

    async def start(self) -> Cursor:
        if self.cursor is None:
            async with snapshot(self.engine) as conn:
                self.cursor = await cursor_now(conn)
        return self.cursor

    async def poll(self) -> list[Any]:
        cursor = await self.start()
        async with snapshot(self.engine) as conn:
            rows, self.cursor = await poll(conn, cursor, where=self.where, limit=self.limit)
        return rows
