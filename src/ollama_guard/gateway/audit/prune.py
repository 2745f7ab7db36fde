"""``logs prune --before DATE``: delete old records and checkpoints, keeping the chains verifiable.

Refused unless the log verifies intact first (pruning must not erase the evidence of tampering).
Each writer's chain then starts at a *base anchor* — the last pruned record's seq and mac, with an
HMAC over both — and the checkpoint chain at its own base (kept in the ``~checkpoints`` writer row).
A checkpoint is only pruned when no writer still holding records needs it: every writer keeps its
latest checkpoint, so a cut-off tail stays detectable after pruning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.errors import GuardError
from ollama_guard.gateway.audit.chain import CHECKPOINT_WRITER, base_anchor_mac, now_naive
from ollama_guard.gateway.audit.legacy import migrate as migrate_legacy
from ollama_guard.gateway.audit.record import utc_naive
from ollama_guard.gateway.audit.verify import verify_chain
from ollama_guard.gateway.db import (
    GENESIS_MAC,
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    immediate,
)
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key


class PruneRefused(GuardError):
    """The log is not intact: nothing was deleted."""


@dataclass(frozen=True)
class PruneResult:
    records: int
    checkpoints: int
    writers: int


async def prune_before(engine: AsyncEngine, secret: bytes, before: datetime) -> PruneResult:
    result = await verify_chain(engine, secret)
    if not result.intact:
        raise PruneRefused(f"the audit log is not intact, nothing pruned: {result.problems[0].detail}")
    key = derive_key(secret, PURPOSE_AUDIT_MAC)
    cutoff = utc_naive(before)
    records = checkpoints = touched = 0
    async with immediate(engine).begin() as conn:
        await migrate_legacy(conn, key)  # an older release's og_audit_log is pruned like any chain
        writers = (
            await conn.execute(
                select(audit_writers_table).where(audit_writers_table.c.writer != CHECKPOINT_WRITER)
            )
        ).all()
        keep_checkpoint_from: int | None = None
        for w in writers:
            first_kept = (
                await conn.execute(
                    select(func.min(audit_table.c.seq)).where(
                        audit_table.c.writer == w.writer, audit_table.c.seq > w.base_seq,
                        audit_table.c.time >= cutoff,
                    )
                )
            ).scalar()
            limit = w.seq if first_kept is None else first_kept - 1
            cut = (
                await conn.execute(
                    select(audit_table.c.seq, audit_table.c.mac, audit_table.c.time)
                    .where(audit_table.c.writer == w.writer, audit_table.c.seq > w.base_seq,
                           audit_table.c.seq <= limit)
                    .order_by(audit_table.c.seq.desc()).limit(1)
                )
            ).first()
            remaining = w.seq > (cut.seq if cut is not None else w.base_seq)
            if remaining:
                last_cp = (
                    await conn.execute(
                        select(func.max(audit_checkpoints_table.c.id)).where(
                            audit_checkpoints_table.c.writer == w.writer)
                    )
                ).scalar()
                if last_cp is not None:
                    keep_checkpoint_from = min(keep_checkpoint_from or last_cp, last_cp)
            if cut is None:
                continue
            deleted = await conn.execute(
                delete(audit_table).where(audit_table.c.writer == w.writer, audit_table.c.seq <= cut.seq)
            )
            records += deleted.rowcount or 0
            touched += 1
            await conn.execute(
                update(audit_writers_table).where(audit_writers_table.c.writer == w.writer).values(
                    base_seq=cut.seq, base_mac=cut.mac, base_time=cut.time,
                    base_anchor_mac=base_anchor_mac(key, w.writer, cut.seq, cut.mac),
                )
            )
        # the checkpoint chain: up to the cutoff, but never a checkpoint a writer still needs
        query = select(audit_checkpoints_table.c.id, audit_checkpoints_table.c.mac,
                       audit_checkpoints_table.c.time).where(audit_checkpoints_table.c.time < cutoff)
        if keep_checkpoint_from is not None:
            query = query.where(audit_checkpoints_table.c.id < keep_checkpoint_from)
        last = (await conn.execute(query.order_by(audit_checkpoints_table.c.id.desc()).limit(1))).first()
        if last is not None:
            deleted = await conn.execute(
                delete(audit_checkpoints_table).where(audit_checkpoints_table.c.id <= last.id)
            )
            checkpoints = deleted.rowcount or 0
            values = dict(base_seq=last.id, base_mac=last.mac, base_time=last.time,
                          base_anchor_mac=base_anchor_mac(key, CHECKPOINT_WRITER, last.id, last.mac))
            exists = (await conn.execute(select(audit_writers_table.c.writer).where(
                audit_writers_table.c.writer == CHECKPOINT_WRITER))).first()
            if exists is None:
                now = now_naive()
                await conn.execute(insert(audit_writers_table).values(
                    writer=CHECKPOINT_WRITER, started=now, updated=now, seq=0, mac=GENESIS_MAC,
                    head_mac="-", closed=True, **values))
            else:
                await conn.execute(update(audit_writers_table).where(
                    audit_writers_table.c.writer == CHECKPOINT_WRITER).values(**values))
    return PruneResult(records, checkpoints, touched)
