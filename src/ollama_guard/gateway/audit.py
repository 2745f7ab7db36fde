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
background thread (its own event loop and database connection) writes in batches (one transaction
per batch). If the database is down the batch is
retried; beyond ``max_backlog`` queued records new ones are dropped and counted, and the next
successful write adds a row saying how many were lost — the gap itself is on the record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any, NamedTuple

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.bgloop import BackgroundLoop, engine_for_loop
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
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case: nothing to do
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and "\x00" not in text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit]


def _clean_int(value: Any) -> int:
    if type(value) is int and -_INT_MAX <= value <= _INT_MAX:
        return value
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


_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _canonical(seq: int, document: dict[str, Any]) -> bytes:
    """Sorted-key compact JSON of the record's ``to_json()`` with ``seq`` set and latency as text."""
    document = {**document, "seq": seq, "latency_ms": f"{float(document['latency_ms']):.3f}"}
    return _CANONICAL_ENCODER.encode(document).encode("ascii")


def canonical_bytes(seq: int, record: AuditRecord) -> bytes:
    return _canonical(seq, record.to_json())


def _mac(audit_key: bytes, prev_mac: str, canonical: bytes) -> str:
    return hmac.digest(audit_key, prev_mac.encode("ascii") + b"\n" + canonical, "sha256").hex()


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


def _latency(value: Any) -> float:
    if type(value) is not float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            return 0.0
    return round(value, 3) if math.isfinite(value) else 0.0


def _stored_values(item: AuditRecord | tuple[Any, ...]) -> dict[str, Any]:
    """The normalised column values of a record or queued tuple (what ``normalise(r).to_json()``
    holds, but with ``time`` as a naive UTC datetime), built without intermediate objects."""
    if isinstance(item, AuditRecord):
        stamp: Any = item.time
        (key_id, key_name, client, method, path, model, status, decision, reason, bytes_in, bytes_out,
         tokens, latency, request_id) = (
            item.key_id, item.key_name, item.client, item.method, item.path, item.model, item.status,
            item.decision, item.reason, item.bytes_in, item.bytes_out, item.tokens, item.latency_ms,
            item.request_id,
        )
    else:
        (stamp, key_id, key_name, client, method, path, model, status, decision, reason, bytes_in,
         bytes_out, tokens, latency, request_id) = item
    if isinstance(stamp, datetime):
        when = _utc_naive(stamp)
    elif isinstance(stamp, int | float):
        when = datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)
    else:
        when = _utc_naive(None)
    return {
        "time": when,
        "key_id": None if key_id is None else _clean_text(key_id, 32),
        "key_name": None if key_name is None else _clean_text(key_name, 64),
        "client": _clean_text(client, 256),
        "method": _clean_text(method, 16),
        "path": _clean_text(path, 4096),
        "model": None if model is None else _clean_text(model, 512),
        "status": _clean_int(status),
        "decision": decision if decision in ("allow", "deny") else "deny",
        "reason": _clean_text(reason, 1024),
        "bytes_in": _clean_int(bytes_in),
        "bytes_out": _clean_int(bytes_out),
        "tokens": _clean_int(tokens),
        "latency_ms": _latency(latency),
        "request_id": _clean_text(request_id, 64),
    }


_INSERT_SQL: dict[str, tuple[str, tuple[str, ...]]] = {}


def _insert_statement(dialect: Any) -> tuple[str, tuple[str, ...]]:
    """The audit INSERT in the driver's own parameter style and its column order (compiled once)."""
    cached = _INSERT_SQL.get(dialect.name)
    if cached is None:
        compiled = insert(audit_table).compile(dialect=dialect)
        cached = (compiled.string, tuple(compiled.positiontup or ()))
        _INSERT_SQL[dialect.name] = cached
    return cached


def _json_text(value: str | None) -> str:
    """A JSON string exactly as ``json.dumps(value, ensure_ascii=True)`` writes it (same C encoder)."""
    return "null" if value is None else _encode_json_string(value)


def _fast_canonical(seq: int, values: dict[str, Any]) -> bytes:
    """``_canonical`` for normalised values, byte for byte, without the general JSON encoder."""
    return (
        f'{{"bytes_in":{values["bytes_in"]},"bytes_out":{values["bytes_out"]},'
        f'"client":{_json_text(values["client"])},"decision":{_json_text(values["decision"])},'
        f'"key_id":{_json_text(values["key_id"])},"key_name":{_json_text(values["key_name"])},'
        f'"latency_ms":"{values["latency_ms"]:.3f}","method":{_json_text(values["method"])},'
        f'"model":{_json_text(values["model"])},"path":{_json_text(values["path"])},'
        f'"reason":{_json_text(values["reason"])},"request_id":{_json_text(values["request_id"])},'
        f'"seq":{seq},"status":{values["status"]},'
        f'"time":"{values["time"].isoformat(timespec="microseconds")}Z","tokens":{values["tokens"]}}}'
    ).encode("ascii")


_MALFORMED = AuditRecord(client="-", method="-", path="-", reason="malformed audit record")


async def append_records(
    conn: AsyncConnection,
    audit_key: bytes,
    records: Sequence[AuditRecord | tuple[Any, ...]],
    *,
    yield_every: int = 0,
) -> int:
    """Normalise and append to the chain inside the caller's write transaction; returns the last seq.

    Accepts ``AuditRecord``s and ``QueuedRecord`` tuples. With ``yield_every`` N, the event loop gets
    a turn after every N records (so a large batch never holds up other tasks for long)."""
    head_query = select(state_table.c.audit_seq, state_table.c.audit_mac).where(state_table.c.id == 1)
    if conn.dialect.name == "postgresql":
        head_query = head_query.with_for_update()
    head = (await conn.execute(head_query)).one()
    seq, prev = int(head.audit_seq), head.audit_mac
    sql, columns = _insert_statement(conn.dialect)
    sqlite = conn.dialect.name == "sqlite"
    rows = []
    for count, record in enumerate(records, 1):
        if yield_every and count % yield_every == 0:
            await asyncio.sleep(0)
        seq += 1
        try:
            values = _stored_values(record)
        except Exception:  # a malformed record must not block the log: its slot says so
            log.exception("audit record could not be normalised; recorded as malformed")
            values = _stored_values(_MALFORMED)
        mac = _mac(audit_key, prev, _fast_canonical(seq, values))
        values["seq"], values["prev_mac"], values["mac"] = seq, prev, mac
        if sqlite:  # the text form SQLAlchemy's SQLite DATETIME stores (and parses back)
            values["time"] = values["time"].isoformat(sep=" ", timespec="microseconds")
        rows.append(tuple(values[name] for name in columns))
        prev = mac
    if rows:
        await conn.exec_driver_sql(sql, rows)
        await conn.execute(
            update(state_table)
            .where(state_table.c.id == 1)
            .values(audit_seq=seq, audit_mac=prev, audit_head_mac=head_mac(audit_key, seq, prev))
        )
    return seq


class QueuedRecord(NamedTuple):
    """What the request path queues: a plain tuple (cheap to build); ``time`` is seconds since the
    epoch (``time.time()``). The writer thread turns it into a normalised ``AuditRecord``."""

    time: float
    key_id: str | None
    key_name: str | None
    client: str
    method: str
    path: str
    model: str | None
    status: int
    decision: str
    reason: str
    bytes_in: int
    bytes_out: int
    tokens: int
    latency_ms: float
    request_id: str


RECORD_FIELDS = QueuedRecord._fields


class AuditWriter:
    """Queues records and writes them in batches from a background thread with its own event loop.

    ``submit`` only appends to a deque (thread-safe); normalising, HMAC chaining and the database
    write happen in the writer thread, so the serving loop never waits for them. Only the writer
    thread removes records from the queue, and only after their batch is committed.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        secret: bytes,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        *,
        max_backlog: int = 100_000,
        close_timeout: float = 15.0,
        threaded: bool = True,
    ) -> None:
        self._engine = engine
        self._threaded = threaded
        self._audit_key = derive_key(secret, PURPOSE_AUDIT_MAC)
        self._fingerprint = secret_fingerprint(secret)
        self._batch_size = max(1, batch_size)
        self._flush_interval = flush_interval
        self._max_backlog = max_backlog
        self._close_timeout = close_timeout
        self._queue: deque[AuditRecord | tuple[Any, ...]] = deque()
        self._background = BackgroundLoop("ollama-guard audit writer")
        self._writer_engine: AsyncEngine | None = None  # used by the writer thread only
        self._owns_writer_engine = False
        self._wakeup: asyncio.Event | None = None  # belongs to the writer thread's loop
        self._write_lock: asyncio.Lock | None = None  # one batch at a time (writer thread's loop)
        self._task: concurrent.futures.Future[None] | asyncio.Task[None] | None = None
        self._closing = False
        # dropped records: counted by the submitting thread, reported by the writer thread (two
        # counters, each written by one thread only, so no update is lost)
        self._dropped_seen = 0
        self._dropped_reported = 0
        self.dropped_total = 0
        self.written = 0
        self.last_error: str | None = None

    @property
    def dropped(self) -> int:
        """Records refused because the backlog was full and not yet reported in the log."""
        return self._dropped_seen - self._dropped_reported

    @property
    def backlog(self) -> int:
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        """False while writes fail or records are being dropped."""
        return self.last_error is None and self.dropped == 0

    async def start(self) -> None:
        async with immediate(self._engine).begin() as conn:
            await bind_secret(conn, self._fingerprint)
        if not self._threaded:
            self._writer_engine = immediate(self._engine)
            self._task = asyncio.create_task(self._run(), name="ollama-guard audit writer")
            return
        engine, owned = engine_for_loop(self._engine)
        self._writer_engine, self._owns_writer_engine = immediate(engine), owned
        self._background.start()
        self._task = self._background.submit(self._run())

    def submit(self, record: AuditRecord | tuple[Any, ...]) -> None:
        """Queue a record, or a tuple in ``RECORD_FIELDS`` order (never blocks, never raises)."""
        queue = self._queue
        if len(queue) >= self._max_backlog:
            self._dropped_seen += 1
            self.dropped_total += 1
            return
        queue.append(record)
        if len(queue) % self._batch_size == 0 and self._wakeup is not None:
            self._wake()

    def _wake(self) -> None:
        assert self._wakeup is not None
        if self._threaded:
            self._background.call_soon(self._wakeup.set)
        else:
            self._wakeup.set()

    async def flush(self) -> None:
        """Write everything queued so far (raises if the database refuses)."""
        if self._threaded and self._background.running and self._task is not None and not self._task.done():
            await self._background.run(self._drain())
        else:
            if self._writer_engine is None:
                self._writer_engine = immediate(self._engine)
            await self._drain()

    async def close(self) -> None:
        """Write everything still queued, then stop (waits up to ``close_timeout`` for the database)."""
        self._closing = True
        if self._task is not None:
            if self._wakeup is not None:
                self._wake()
            task = self._task
            waitable = asyncio.wrap_future(task) if isinstance(task, concurrent.futures.Future) else task
            try:
                await asyncio.wait_for(asyncio.shield(waitable), timeout=self._close_timeout)
            except TimeoutError:
                task.cancel()
                if isinstance(task, asyncio.Task):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            except Exception:
                log.exception("audit writer stopped with an error")
            self._task = None
            if self._owns_writer_engine and self._writer_engine is not None:
                with contextlib.suppress(Exception):
                    await self._background.run(self._writer_engine.dispose())
            if self._threaded:
                await self._background.stop()
        if self._queue:
            log.error("audit log: %d records could not be written before shutdown", len(self._queue))

    # writer thread ---------------------------------------------------------------------------------
    async def _drain(self) -> None:
        while self._queue or self.dropped:
            await self._write_batch()

    async def _write_batch(self) -> None:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        async with self._write_lock:  # flush() and the background loop never write the same batch
            await self._write_batch_locked()

    async def _write_batch_locked(self) -> None:
        queue = self._queue
        taken = min(self._batch_size, len(queue))
        batch: list[AuditRecord | tuple[Any, ...]] = [queue[i] for i in range(taken)]
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
        if not batch:
            return
        assert self._writer_engine is not None
        async with self._writer_engine.begin() as conn:
            await append_records(conn, self._audit_key, batch, yield_every=0 if self._threaded else 32)
        for _ in range(taken):
            queue.popleft()
        self._dropped_reported += dropped
        self.written += taken

    async def _run(self) -> None:
        self._wakeup = wakeup = asyncio.Event()
        failures = 0
        while True:
            if not self._queue and not self.dropped:
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=self._flush_interval)
                wakeup.clear()
                continue
            if len(self._queue) < self._batch_size and not self._closing and not self.dropped:
                # let a batch fill up (or the flush interval pass) before writing
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=self._flush_interval)
                wakeup.clear()
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
