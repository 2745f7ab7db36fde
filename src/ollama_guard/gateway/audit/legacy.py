"""The audit log of releases before the writer chains: one HMAC chain in table ``og_audit_log``.

Those releases chained every record into ONE chain: ``mac = HMAC(audit key, prev_mac || "\\n" ||
canonical)`` where the canonical form is the sorted-key compact JSON of the record's fields and its
``seq`` (no writer, no count), with the head (seq, mac, and ``HMAC("head\\n{seq}\\n{mac}")``) in
``og_state`` — the same row and head format the checkpoint chain uses today.

**Migration** (``migrate``): the old rows move into ``og_audit_records`` as writer ``~legacy``,
byte for byte with their old MACs, so they stay verifiable with the old algorithm and every reader
(``logs tail``, the console, ``investigate``, usage rebuilds) sees one table. They get ids ``-N…-1``
(the old order, before every record of the pipeline). ``~legacy``'s head is the old chain's head, taken
from where it is authenticated — ``og_state`` (a first start after the upgrade) or the checkpoint
chain's start (a database a development build of the pipeline already used) — and it is anchored by
a checkpoint. The old table is dropped in the same transaction: the rows are in one table or the other,
never lost and never in both. ``serve``'s writer process migrates on its first start; ``logs migrate``
and ``logs prune`` do it on demand. Until then ``logs verify`` reads ``og_audit_log`` as it is.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.db import (
    GENESIS_MAC,
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    state_table,
)

LEGACY_WRITER = "~legacy"  # the chain migrated from og_audit_log (no gateway process has this name)
LEGACY_TABLE = "og_audit_log"
MIGRATE_BATCH = 200_000  # old rows per INSERT … SELECT (~2.5 s; the database's statement timeout is 10 s)
UNAUTHENTIC_LEGACY_HEAD = "unauthenticated-legacy-head"  # ~legacy's head MAC when og_state's did not check

# the old table exactly as those releases created it (never created by today's init_schema)
legacy_table = Table(
    LEGACY_TABLE,
    MetaData(),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", DateTime, nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("key_name", String(64), nullable=True),
    Column("client", Text, nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("model", Text, nullable=True),
    Column("status", Integer, nullable=False),
    Column("decision", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("prev_mac", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
)

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_FIELDS = ("key_id", "key_name", "client", "method", "path", "model", "status", "decision", "reason",
           "bytes_in", "bytes_out", "tokens", "request_id")


def legacy_canonical(seq: int, values: dict[str, Any]) -> bytes:
    """The old releases' canonical bytes of a record (their ``_canonical(seq, record.to_json())``)."""
    document = {name: values[name] for name in _FIELDS}
    document["seq"] = seq
    document["time"] = values["time"].isoformat(timespec="microseconds") + "Z"
    document["latency_ms"] = f"{float(values['latency_ms']):.3f}"
    return _ENCODER.encode(document).encode("ascii")


def legacy_mac(key: bytes, prev_mac: str, seq: int, values: dict[str, Any]) -> str:
    return hmac.digest(key, prev_mac.encode("ascii") + b"\n" + legacy_canonical(seq, values), "sha256").hex()


def legacy_head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.digest(key, f"head\n{seq}\n{mac}".encode("ascii"), "sha256").hex()


def _has_table(sync_conn: Any, name: str) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(sync_conn).has_table(name))


async def has_legacy_table(conn: AsyncConnection) -> bool:
    return bool(await conn.run_sync(_has_table, LEGACY_TABLE))


async def has_table(conn: AsyncConnection, name: str) -> bool:
    return bool(await conn.run_sync(_has_table, name))


async def pipeline_started(conn: AsyncConnection) -> bool:
    """Whether a release with the writer chains has used this database (a checkpoint or a writer)."""
    if not await has_table(conn, audit_writers_table.name):
        return False
    if (await conn.execute(select(audit_checkpoints_table.c.id).limit(1))).first() is not None:
        return True
    return (await conn.execute(select(audit_writers_table.c.writer).limit(1))).first() is not None


async def legacy_anchor(conn: AsyncConnection, key: bytes) -> tuple[int, str, bool] | None:
    """Where the old chain ends, from where it is authenticated: (seq, mac, authentic).

    Before the pipeline ever ran here: og_state's head (its MAC in the old format). After a build of
    the pipeline that did not migrate: the checkpoint chain's start, which it set to that head. None
    when there is no old chain (a new database)."""
    from ollama_guard.gateway.audit.chain import CHECKPOINT_WRITER, base_anchor_mac

    if not await pipeline_started(conn):
        state = (await conn.execute(select(state_table).where(state_table.c.id == 1))).first()
        if state is None or not state.audit_seq:
            return None
        seq, mac = int(state.audit_seq), state.audit_mac
        return seq, mac, hmac.compare_digest(legacy_head_mac(key, seq, mac), state.audit_head_mac or "")
    base = (await conn.execute(select(audit_writers_table).where(
        audit_writers_table.c.writer == CHECKPOINT_WRITER))).first()
    if base is None or not base.base_seq:
        return None
    seq, mac = int(base.base_seq), base.base_mac
    return seq, mac, hmac.compare_digest(base_anchor_mac(key, CHECKPOINT_WRITER, seq, mac),
                                         base.base_anchor_mac or "")


async def migrate(conn: AsyncConnection, key: bytes) -> int | None:
    """Move og_audit_log into the writer chains (see the module's docstring), inside the caller's write
    transaction. Returns the number of records moved, or None when there was nothing to migrate."""
    from ollama_guard.gateway.audit.chain import (
        CHECKPOINT_WRITER,
        append_checkpoint,
        base_anchor_mac,
        now_naive,
        writer_head_mac,
    )

    locked = select(state_table.c.id).where(state_table.c.id == 1)
    if conn.dialect.name == "postgresql":  # one migration at a time (SQLite: BEGIN IMMEDIATE)
        locked = locked.with_for_update()
    await conn.execute(locked)
    if (await conn.execute(select(audit_writers_table.c.writer).where(
            audit_writers_table.c.writer == LEGACY_WRITER))).first() is not None:
        return None
    table = await has_legacy_table(conn)
    fresh = not await pipeline_started(conn)
    if not table and not fresh:
        return None  # nothing of an older release (a checkpoint prune base is not an old head)
    anchor = await legacy_anchor(conn, key)
    if anchor is None and not table:
        return None
    seq, mac, authentic = anchor if anchor is not None else (0, GENESIS_MAC, True)
    now = now_naive()
    if fresh and seq:  # the checkpoint chain continues from the old head, as if it had been pruned there
        await conn.execute(insert(audit_writers_table).values(
            writer=CHECKPOINT_WRITER, started=now, updated=now, seq=0, mac=GENESIS_MAC, head_mac="-",
            closed=True, base_seq=seq, base_mac=mac, base_time=now,
            base_anchor_mac=base_anchor_mac(key, CHECKPOINT_WRITER, seq, mac)))
    moved = 0
    if table:
        top = (await conn.execute(select(func.max(legacy_table.c.seq)))).scalar() or 0
        offset = max(int(top), seq) + 1  # ids -offset+1 … -1, in the old order
        old = legacy_table.c
        columns = ["id", "writer", "seq", "time", "key_id", "key_name", "client", "method", "path", "model",
                   "status", "decision", "reason", "count", "bytes_in", "bytes_out", "tokens", "latency_ms",
                   "request_id", "prev_mac", "mac"]
        source = select(
            (old.seq - offset).label("id"), literal(LEGACY_WRITER, String(64)), old.seq, old.time, old.key_id,
            old.key_name, old.client, old.method, old.path, old.model, old.status, old.decision, old.reason,
            literal(1, BigInteger), old.bytes_in, old.bytes_out, old.tokens, old.latency_ms, old.request_id,
            old.prev_mac, old.mac,
        )
        low = (await conn.execute(select(func.min(old.seq)))).scalar() or 0
        for start in range(int(low) - 1, int(top), MIGRATE_BATCH):  # each statement well within a timeout
            part = source.where(old.seq > start, old.seq <= start + MIGRATE_BATCH)
            result = await conn.execute(insert(audit_table).from_select(columns, part))
            moved += int(result.rowcount or 0)
        await conn.run_sync(lambda sync: legacy_table.drop(sync))
    # a head whose MAC did not check out keeps a head MAC that never will: verify reports it for good
    head_mac = writer_head_mac(key, LEGACY_WRITER, seq, mac) if authentic else UNAUTHENTIC_LEGACY_HEAD
    await conn.execute(insert(audit_writers_table).values(
        writer=LEGACY_WRITER, started=now, updated=now, seq=seq, mac=mac, head_mac=head_mac, closed=True,
        base_seq=0, base_mac=GENESIS_MAC))
    await append_checkpoint(conn, key, LEGACY_WRITER, seq, mac)
    return moved


async def migrate_legacy_log(engine: AsyncEngine, secret: bytes) -> tuple[int | None, int]:
    """``logs migrate``: ``migrate`` in its own write transaction, after checking the secret is this
    database's. Returns (records moved or None, the checkpoint head)."""
    from ollama_guard.gateway.db import bind_secret, immediate
    from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, secret_fingerprint

    async with immediate(engine).begin() as conn:
        await bind_secret(conn, secret_fingerprint(secret))
        moved = await migrate(conn, derive_key(secret, PURPOSE_AUDIT_MAC))
        head = (await conn.execute(select(state_table.c.audit_seq).where(state_table.c.id == 1))).scalar()
    return moved, int(head or 0)


async def read_old_records(conn: AsyncConnection, *, after_id: int | None, since: Any,
                           limit: int | None) -> list[Any]:
    """``read_records`` on a database not migrated yet: og_audit_log's rows as writer ~legacy's, with
    the ids migration will give them (so evidence names the same record before and after)."""
    from ollama_guard.gateway.audit.record import AuditRecord, row_values

    top = (await conn.execute(select(func.max(legacy_table.c.seq)))).scalar() or 0
    head = (await conn.execute(select(state_table.c.audit_seq).where(state_table.c.id == 1))).scalar() or 0
    offset = max(int(top), int(head)) + 1
    query = select(legacy_table).order_by(legacy_table.c.seq)
    if after_id is not None:
        query = query.where(legacy_table.c.seq > after_id + offset)
    if since is not None:
        query = query.where(legacy_table.c.time >= since)
    if limit is not None:
        query = query.limit(limit)
    out = []
    for row in (await conn.execute(query)).all():
        values = row_values(row)
        values["time"] = values["time"].replace(tzinfo=UTC)
        out.append(AuditRecord(**values, writer=LEGACY_WRITER, seq=row.seq, id=row.seq - offset))
    return out
