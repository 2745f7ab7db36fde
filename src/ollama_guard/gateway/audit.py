"""The audit log: one row per gateway decision, hash-chained so edits, deletions and reordering show.

Each row has a sequence number and ``mac = HMAC-SHA256(audit key, prev_mac || "\\n" || canonical row)``
where the canonical row is sorted-key compact JSON of every field *including* ``seq``, and ``prev_mac``
is the previous row's ``mac`` (64 zeros for seq 1). The audit key is derived from the server secret,
so someone who can write the database but does not hold the secret cannot forge a row.

The chain head (last seq, last mac, and a MAC over both) lives in ``og_state``. Writers read it inside
their write transaction — ``SELECT … FOR UPDATE`` in PostgreSQL, ``BEGIN IMMEDIATE`` in SQLite — so any
number of writers (workers, replicas) append to one linear chain. The head's own MAC makes a cut-off
tail detectable; restoring an older head *and* truncating to it is not (anchor ``logs verify``'s head
MAC elsewhere if that matters).

``AuditWriter.submit`` never blocks and never raises: records go to an in-memory queue that a
background task writes in batches (one transaction per batch). If the database is down the batch is
retried; beyond ``max_backlog`` queued records new ones are dropped and counted, and the next
successful write adds a row saying how many were lost — the gap itself is on the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.db import (
    GENESIS_MAC,
    SecretMismatch,
    audit_table,
    bind_secret,
    immediate,
    short_db_error,
    state_table,
)
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, secret_fingerprint

log = logging.getLogger(__name__)

_LIMITS = {
    "key_id": 32,
    "key_name": 64,
    "client": 256,
    "method": 16,
    "path": 4096,
    "model": 512,
    "decision": 8,
    "reason": 1024,
    "request_id": 64,
}
_INT_MAX = 2**62
_REORDER_WINDOW = 64


@dataclass
class AuditRecord:
    """One gateway decision. ``seq`` is set when the record is read back from the log."""

    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_id: str | None = None
    key_name: str | None = None
    client: str = ""
    method: str = ""
    path: str = ""
    model: str | None = None
    status: int = 0
    decision: str = "deny"  # "allow" | "deny"
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0
    latency_ms: float = 0.0
    request_id: str = ""
    seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": _time_text(self.time),
            "key_id": self.key_id,
            "key_name": self.key_name,
            "client": self.client,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "status": self.status,
            "decision": self.decision,
            "reason": self.reason,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "tokens": self.tokens,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
        }


# ---------------------------------------------------------------------------------------------------
# normalisation and the MAC


def _clean_text(value: Any, limit: int) -> str:
    """Printable, storable text: no NUL (PostgreSQL rejects it), no lone surrogates, bounded length."""
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and "\x00" not in text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit]


def _clean_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(-_INT_MAX, min(_INT_MAX, number))


def _utc_naive(value: Any) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.now(UTC)
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _time_text(value: datetime) -> str:
    return _utc_naive(value).isoformat(timespec="microseconds") + "Z"


def normalise(record: AuditRecord) -> AuditRecord:
    """The record exactly as it will be stored (so the MAC is computed over what the database holds)."""
    latency = record.latency_ms
    try:
        latency = float(latency)
    except (TypeError, ValueError):
        latency = 0.0
    if not math.isfinite(latency):
        latency = 0.0
    decision = record.decision if record.decision in ("allow", "deny") else "deny"
    optional = {
        name: None if getattr(record, name) is None else _clean_text(getattr(record, name), _LIMITS[name])
        for name in ("key_id", "key_name", "model")
    }
    return AuditRecord(
        time=_utc_naive(record.time).replace(tzinfo=UTC),
        client=_clean_text(record.client, _LIMITS["client"]),
        method=_clean_text(record.method, _LIMITS["method"]),
        path=_clean_text(record.path, _LIMITS["path"]),
        status=_clean_int(record.status),
        decision=decision,
        reason=_clean_text(record.reason, _LIMITS["reason"]),
        bytes_in=_clean_int(record.bytes_in),
        bytes_out=_clean_int(record.bytes_out),
        tokens=_clean_int(record.tokens),
        latency_ms=round(latency, 3),
        request_id=_clean_text(record.request_id, _LIMITS["request_id"]),
        **optional,
    )


def _canonical(seq: int, document: dict[str, Any]) -> bytes:
    """Sorted-key compact JSON of the record's ``to_json()`` with ``seq`` set and latency as text."""
    document = {**document, "seq": seq, "latency_ms": f"{float(document['latency_ms']):.3f}"}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def canonical_bytes(seq: int, record: AuditRecord) -> bytes:
    return _canonical(seq, record.to_json())


def _mac(audit_key: bytes, prev_mac: str, canonical: bytes) -> str:
    return hmac.new(audit_key, prev_mac.encode("ascii") + b"\n" + canonical, hashlib.sha256).hexdigest()


def compute_mac(audit_key: bytes, prev_mac: str, seq: int, record: AuditRecord) -> str:
    return _mac(audit_key, prev_mac, canonical_bytes(seq, record))


def head_mac(audit_key: bytes, seq: int, mac: str) -> str:
    return hmac.new(audit_key, f"head\n{seq}\n{mac}".encode("ascii"), hashlib.sha256).hexdigest()


def _row_to_record(row: Any) -> AuditRecord:
    return AuditRecord(
        time=row.time.replace(tzinfo=UTC),
        key_id=row.key_id,
        key_name=row.key_name,
        client=row.client,
        method=row.method,
        path=row.path,
        model=row.model,
        status=row.status,
        decision=row.decision,
        reason=row.reason,
        bytes_in=row.bytes_in,
        bytes_out=row.bytes_out,
        tokens=row.tokens,
        latency_ms=row.latency_ms,
        request_id=row.request_id,
        seq=row.seq,
    )


# ---------------------------------------------------------------------------------------------------
# writing


async def append_records(conn: AsyncConnection, audit_key: bytes, records: Sequence[AuditRecord]) -> int:
    """Append to the chain inside the caller's write transaction; returns the last seq written."""
    head_query = select(state_table.c.audit_seq, state_table.c.audit_mac).where(state_table.c.id == 1)
    if conn.dialect.name == "postgresql":
        head_query = head_query.with_for_update()
    head = (await conn.execute(head_query)).one()
    seq, prev = int(head.audit_seq), head.audit_mac
    rows = []
    for record in records:
        seq += 1
        values = record.to_json()
        mac = _mac(audit_key, prev, _canonical(seq, values))
        values.update(seq=seq, time=_utc_naive(record.time), prev_mac=prev, mac=mac)
        rows.append(values)
        prev = mac
    if rows:
        await conn.execute(insert(audit_table), rows)
        await conn.execute(
            update(state_table)
            .where(state_table.c.id == 1)
            .values(audit_seq=seq, audit_mac=prev, audit_head_mac=head_mac(audit_key, seq, prev))
        )
    return seq


class AuditWriter:
    """Queues records and writes them in batches from a background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: bytes,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        *,
        max_backlog: int = 100_000,
        close_timeout: float = 15.0,
    ) -> None:
        self._engine = engine
        self._writer_engine = immediate(engine)
        self._audit_key = derive_key(secret, PURPOSE_AUDIT_MAC)
        self._fingerprint = secret_fingerprint(secret)
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._max_backlog = max_backlog
        self._close_timeout = close_timeout
        self._queue: deque[AuditRecord] = deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0  # records refused because the backlog was full (not yet reported in the log)
        self.dropped_total = 0
        self.written = 0
        self.last_error: str | None = None

    @property
    def backlog(self) -> int:
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        """False while writes fail or records are being dropped."""
        return self.last_error is None and self.dropped == 0

    async def start(self) -> None:
        async with self._writer_engine.begin() as conn:
            await bind_secret(conn, self._fingerprint)
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="ollama-guard audit writer")

    def submit(self, record: AuditRecord) -> None:
        """Queue a record (never blocks, never raises)."""
        if len(self._queue) >= self._max_backlog:
            self.dropped += 1
            self.dropped_total += 1
            return
        try:
            self._queue.append(normalise(record))
        except Exception:  # a malformed record must not break the request that produced it
            log.exception("audit record could not be normalised; dropped")
            self.dropped += 1
            self.dropped_total += 1
            return
        if self._wakeup is not None and len(self._queue) >= self._batch_size:
            self._wakeup.set()

    async def flush(self) -> None:
        """Write everything queued so far (raises if the database refuses)."""
        while self._queue or self.dropped:
            await self._write_batch()

    async def close(self) -> None:
        """Write everything still queued, then stop (waits up to ``close_timeout`` for the database)."""
        self._closing = True
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self._close_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._queue:
            log.error("audit log: %d records could not be written before shutdown", len(self._queue))

    async def _write_batch(self) -> None:
        batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
        dropped = self.dropped
        if dropped:
            batch.append(
                AuditRecord(
                    client="-",
                    method="-",
                    path="-",
                    decision="deny",
                    reason=f"audit backlog full: {dropped} records were dropped",
                )
            )
        async with self._writer_engine.begin() as conn:
            await append_records(conn, self._audit_key, batch)
        taken = len(batch) - (1 if dropped else 0)
        for _ in range(taken):
            self._queue.popleft()
        self.dropped -= dropped
        self.written += taken

    async def _run(self) -> None:
        assert self._wakeup is not None
        failures = 0
        while True:
            if not self._queue and not self.dropped:
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._flush_interval)
                self._wakeup.clear()
                continue
            try:
                await self._write_batch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the records and retry: the log must not lose them
                failures += 1
                message = f"{type(exc).__name__}: {short_db_error(exc)}"
                if message != self.last_error:
                    log.error("audit log write failed (will retry): %s", message)
                self.last_error = message
                await asyncio.sleep(min(5.0, 0.05 * 2 ** min(failures, 7)))
                continue
            failures = 0
            self.last_error = None


# ---------------------------------------------------------------------------------------------------
# verifying and reading


@dataclass(frozen=True)
class VerifyResult:
    intact: bool
    count: int  # records checked
    first_broken_seq: int | None = None
    reason: str | None = None  # "edited", "deleted", "reordered", "truncated", "head"
    detail: str | None = None
    head_seq: int = 0
    head_mac: str | None = None

    def summary(self) -> str:
        if self.intact:
            return f"intact ({self.count} records)"
        return f"broken at record {self.first_broken_seq}: {self.reason}: {self.detail}"


def _find_true_seq(audit_key: bytes, row: Any) -> int | None:
    record = _row_to_record(row)
    for delta in range(1, _REORDER_WINDOW + 1):
        for candidate in (row.seq + delta, row.seq - delta):
            if candidate >= 1 and hmac.compare_digest(
                compute_mac(audit_key, row.prev_mac, candidate, record), row.mac
            ):
                return candidate
    return None


async def verify_chain(engine: AsyncEngine, secret: bytes, *, page_size: int = 2000) -> VerifyResult:
    """Walk the whole chain in seq order and report the first record that does not check out.

    Runs in one read transaction (REPEATABLE READ in PostgreSQL; a WAL read snapshot in SQLite), so the
    head and the rows agree even while gateways keep appending.
    """
    audit_key = derive_key(secret, PURPOSE_AUDIT_MAC)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await _verify(conn, audit_key, secret, page_size)


async def _verify(conn: AsyncConnection, audit_key: bytes, secret: bytes, page_size: int) -> VerifyResult:
    state = (
        await conn.execute(
            select(
                state_table.c.audit_seq,
                state_table.c.audit_mac,
                state_table.c.audit_head_mac,
                state_table.c.secret_fingerprint,
            ).where(state_table.c.id == 1)
        )
    ).first()
    if state is None:
        return VerifyResult(False, 0, 1, "head", "the chain head row is missing (og_state)")
    if state.secret_fingerprint not in (None, secret_fingerprint(secret)):
        raise SecretMismatch(
            "the server secret is not the one this audit log was written with; "
            "use the gateway's secret_file or OLLAMA_GUARD_SECRET"
        )
    head_seq, head_last_mac = int(state.audit_seq), state.audit_mac

    def broken(seq: int, reason: str, detail: str, count: int) -> VerifyResult:
        return VerifyResult(False, count, seq, reason, detail, head_seq, head_last_mac)

    if head_seq == 0 and state.audit_head_mac is None and head_last_mac == GENESIS_MAC:
        head_ok = True
    else:
        head_ok = state.audit_head_mac is not None and hmac.compare_digest(
            head_mac(audit_key, head_seq, head_last_mac), state.audit_head_mac
        )
    prev_mac, prev_seq, count = GENESIS_MAC, 0, 0
    while True:
        rows = (
            await conn.execute(
                select(audit_table)
                .where(audit_table.c.seq > prev_seq)
                .order_by(audit_table.c.seq)
                .limit(page_size)
            )
        ).all()
        if not rows:
            break
        for row in rows:
            count += 1
            if row.seq != prev_seq + 1:
                missing = (
                    f"record {prev_seq + 1} is missing"
                    if row.seq == prev_seq + 2
                    else f"records {prev_seq + 1}-{row.seq - 1} are missing"
                )
                return broken(prev_seq + 1, "deleted", missing, count)
            own = compute_mac(audit_key, row.prev_mac, row.seq, _row_to_record(row))
            if not hmac.compare_digest(own, row.mac):
                true_seq = _find_true_seq(audit_key, row)
                if true_seq is not None:
                    return broken(
                        row.seq,
                        "reordered",
                        f"record {row.seq} holds the content of record {true_seq}",
                        count,
                    )
                return broken(row.seq, "edited", f"record {row.seq} does not match its MAC", count)
            if not hmac.compare_digest(row.prev_mac, prev_mac):
                return broken(
                    row.seq,
                    "reordered",
                    f"record {row.seq} does not link to record {prev_seq} (removed or replaced before it)",
                    count,
                )
            prev_mac, prev_seq = row.mac, row.seq
    if not head_ok:
        return broken(
            prev_seq + 1 if prev_seq < head_seq else head_seq,
            "head",
            "the chain head was altered (its MAC does not match)",
            count,
        )
    if prev_seq < head_seq:
        return broken(
            prev_seq + 1, "truncated", f"records {prev_seq + 1}-{head_seq} were removed from the end", count
        )
    if prev_seq > head_seq or not hmac.compare_digest(prev_mac, head_last_mac):
        return broken(
            head_seq + 1 if prev_seq > head_seq else prev_seq,
            "head",
            "the last record does not match the chain head (records added outside the gateway?)",
            count,
        )
    return VerifyResult(True, count, None, None, None, head_seq, head_last_mac)


async def read_records(
    engine: AsyncEngine,
    *,
    after_seq: int = 0,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Records in seq order (for ``logs tail`` and ``investigate --audit-db``)."""
    query = select(audit_table).where(audit_table.c.seq > after_seq).order_by(audit_table.c.seq)
    if since is not None:
        query = query.where(audit_table.c.time >= _utc_naive(since))
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as conn:
        return [_row_to_record(r) for r in (await conn.execute(query)).all()]


async def tail(
    engine: AsyncEngine, n: int = 20, follow: bool = False, *, poll_interval: float = 0.5
) -> AsyncIterator[AuditRecord]:
    """The last ``n`` records, oldest first; with ``follow``, then every new record as it is written."""
    async with engine.connect() as conn:
        last = (await conn.execute(select(func.max(audit_table.c.seq)))).scalar() or 0
    start = max(0, int(last) - max(0, n))
    for record in await read_records(engine, after_seq=start):
        start = record.seq or start
        yield record
    while follow:
        await asyncio.sleep(poll_interval)
        try:
            fresh = await read_records(engine, after_seq=start, limit=1000)
        except (SQLAlchemyError, OSError) as exc:
            log.warning("audit log unreadable: %s", short_db_error(exc))
            continue
        for record in fresh:
            start = record.seq or start
            yield record
