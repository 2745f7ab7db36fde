"""The HMAC chains: one per writer for records, one shared chain of checkpoints.

Record ``seq`` of writer W: ``mac = HMAC(audit key, prev_mac || "\\n" || canonical(W, seq, values))``
with ``prev_mac`` the mac of W's previous record (64 zeros before the first). The canonical bytes
include the writer's id and the sequence number, so a record moved to another writer or position, or
copied from another chain written with the same secret, fails its own MAC or its link.

Each writer's head (``og_audit_writers``: seq, mac and an HMAC over both) moves in the same transaction
as the records. About once a second, at start and at close, a writer also appends a *checkpoint* —
(W, seq, mac) — to the shared checkpoint chain (``og_audit_checkpoints``, head in ``og_state``).
Rewriting W's head after cutting off its tail then contradicts a checkpoint; cutting the checkpoint
chain as well needs an old checkpoint head, which only a copy kept outside the database exposes
(``logs verify`` prints the checkpoint head on stderr for that). Writers never wait for each other
except for the brief checkpoint append, so audit capacity grows with the number of writers.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ollama_guard.gateway.audit.legacy import migrate as migrate_legacy
from ollama_guard.gateway.audit.record import canonical, stored_values
from ollama_guard.gateway.db import (
    GENESIS_MAC,
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    state_table,
)

CHECKPOINT_WRITER = "~checkpoints"  # the pseudo-writer row that holds the checkpoint chain's prune base


class ChainConflict(Exception):
    """Another process moved this writer's head first (two drainers of one spool): re-read and retry."""


def _hmac(key: bytes, data: bytes) -> str:
    return hmac.digest(key, data, "sha256").hex()


def record_mac(key: bytes, prev_mac: str, writer: str, seq: int, values: dict[str, Any]) -> str:
    return _hmac(key, prev_mac.encode("ascii") + b"\n" + canonical(writer, seq, values))


def writer_head_mac(key: bytes, writer: str, seq: int, mac: str) -> str:
    return _hmac(key, f"writer-head\n{writer}\n{seq}\n{mac}".encode())


def base_anchor_mac(key: bytes, writer: str, seq: int, mac: str) -> str:
    return _hmac(key, f"writer-base\n{writer}\n{seq}\n{mac}".encode())


def checkpoint_mac(key: bytes, prev_mac: str, cp_id: int, when: datetime, writer: str, seq: int,
                   mac: str) -> str:
    stamp = when.isoformat(timespec="microseconds")
    text = f"{prev_mac}\ncheckpoint\n{cp_id}\n{stamp}\n{writer}\n{seq}\n{mac}"
    return _hmac(key, text.encode())


def checkpoint_head_mac(key: bytes, cp_id: int, mac: str) -> str:
    return _hmac(key, f"head\n{cp_id}\n{mac}".encode())


def now_naive() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- writing (the writer process) -------------------------------------------------------------------

_INSERT_SQL: dict[str, tuple[str, tuple[str, ...]]] = {}


def _insert_statement(dialect: Any) -> tuple[str, tuple[str, ...]]:
    """The record INSERT in the driver's own parameter style and its column order (compiled once)."""
    cached = _INSERT_SQL.get(dialect.name)
    if cached is None:
        columns = [c for c in audit_table.columns if c.name != "id"]
        compiled = insert(audit_table).values({c: None for c in columns}).compile(dialect=dialect)
        cached = (compiled.string, tuple(compiled.positiontup or ()))
        _INSERT_SQL[dialect.name] = cached
    return cached


async def read_head(conn: AsyncConnection, writer: str) -> tuple[int, str] | None:
    row = (
        await conn.execute(
            select(audit_writers_table.c.seq, audit_writers_table.c.mac).where(
                audit_writers_table.c.writer == writer
            )
        )
    ).first()
    return None if row is None else (int(row.seq), row.mac)


async def register_writer(conn: AsyncConnection, key: bytes, writer: str) -> tuple[int, str]:
    """W's head, creating W (and its genesis checkpoint) if it is new. Inside the caller's transaction."""
    head = await read_head(conn, writer)
    if head is not None:
        return head
    now = now_naive()
    await migrate_legacy(conn, key)  # an older release's og_audit_log, once
    await conn.execute(
        insert(audit_writers_table).values(
            writer=writer, started=now, updated=now, seq=0, mac=GENESIS_MAC,
            head_mac=writer_head_mac(key, writer, 0, GENESIS_MAC), closed=False, base_seq=0,
            base_mac=GENESIS_MAC,
        )
    )
    await append_checkpoint(conn, key, writer, 0, GENESIS_MAC)
    return 0, GENESIS_MAC


async def append_records(
    conn: AsyncConnection,
    key: bytes,
    writer: str,
    head: tuple[int, str],
    items: Sequence[tuple[int, int, Any]],
    *,
    close: bool = False,
) -> tuple[int, str, int]:
    """Chain ``items`` — (seq, count, RecordFields-like tuple) in spool order — onto W's head and
    insert them; move the head (only if it is still ``head``: else ``ChainConflict``).

    Items at or below the head are skipped (already written: a replay). A jump in seq is kept as it
    is — the records in between never reached the log — and ``logs verify`` names it. Returns the new
    head and the number of records missing between items (gaps)."""
    seq, prev = head
    sql, columns = _insert_statement(conn.dialect)
    sqlite = conn.dialect.name == "sqlite"
    rows = []
    missing = 0
    for item_seq, count, fields in items:
        if item_seq <= seq:
            continue
        missing += item_seq - seq - 1
        try:
            values = stored_values(fields, count)
        except Exception:  # a malformed spool entry must not block the log: its slot says so
            values = stored_values(
                (0.0, None, None, "-", "-", "-", None, 0, "deny", "malformed audit record", 0, 0, 0, 0.0, "")
            )
        mac = record_mac(key, prev, writer, item_seq, values)
        values["writer"], values["seq"], values["prev_mac"], values["mac"] = writer, item_seq, prev, mac
        if sqlite:  # the text form SQLAlchemy's SQLite DATETIME stores (and parses back)
            values["time"] = values["time"].isoformat(sep=" ", timespec="microseconds")
        rows.append(tuple(values[name] for name in columns))
        seq, prev = item_seq, mac
    if rows:
        await conn.exec_driver_sql(sql, rows)
    if rows or close:
        values = {"seq": seq, "mac": prev, "head_mac": writer_head_mac(key, writer, seq, prev),
                  "updated": now_naive()}
        if close:
            values["closed"] = True
        result = await conn.execute(
            update(audit_writers_table)
            .where(audit_writers_table.c.writer == writer, audit_writers_table.c.seq == head[0])
            .values(**values)
        )
        if result.rowcount != 1:
            raise ChainConflict(writer)
    return seq, prev, missing


async def append_checkpoint(conn: AsyncConnection, key: bytes, writer: str, seq: int, mac: str) -> int:
    """Anchor W's head (seq, mac) in the shared checkpoint chain; returns the checkpoint's id."""
    query = select(state_table.c.audit_seq, state_table.c.audit_mac).where(state_table.c.id == 1)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    state = (await conn.execute(query)).one()
    cp_id, prev = int(state.audit_seq) + 1, state.audit_mac
    when = now_naive()
    mac_ = checkpoint_mac(key, prev, cp_id, when, writer, seq, mac)
    await conn.execute(
        insert(audit_checkpoints_table).values(
            id=cp_id, time=when, writer=writer, writer_seq=seq, writer_mac=mac, prev_mac=prev, mac=mac_
        )
    )
    await conn.execute(
        update(state_table)
        .where(state_table.c.id == 1)
        .values(audit_seq=cp_id, audit_mac=mac_, audit_head_mac=checkpoint_head_mac(key, cp_id, mac_))
    )
    return cp_id
