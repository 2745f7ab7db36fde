"""``logs verify``: check every writer's chain, the checkpoint chain, and that they agree.

Problems found (each names its writer and where):
* *edited* — a record does not match its MAC (or holds another record's content: *reordered*);
* *spliced* — a record with a valid MAC does not link to the record before it (it comes from another
  chain written with the same secret, e.g. a fork of the database);
* *missing* — ``N records missing from writer W between T1 and T2``: a jump in W's sequence numbers
  (lost before reaching the log, or deleted), or a tail cut off (W's head, or a checkpoint of W, names
  later records than the table holds — even when W's head was rewritten to match);
* *head* — a head whose MAC does not check out, or records beyond the head.
Writer ``~legacy`` (an older release's single chain, migrated or still in ``og_audit_log``) is checked
with that release's MAC, against the old head the checkpoint chain starts at (see ``legacy``).
Pruned records (``logs prune``) are not missing: each writer's base anchor (seq, mac, and a MAC over
both) is where its chain now starts.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.audit.chain import (
    CHECKPOINT_WRITER,
    base_anchor_mac,
    checkpoint_head_mac,
    checkpoint_mac,
    record_mac,
    writer_head_mac,
)
from ollama_guard.gateway.audit.legacy import (
    LEGACY_WRITER,
    UNAUTHENTIC_LEGACY_HEAD,
    has_legacy_table,
    has_table,
    legacy_anchor,
    legacy_mac,
    legacy_table,
    pipeline_started,
)
from ollama_guard.gateway.audit.record import row_values, time_text
from ollama_guard.gateway.db import (
    GENESIS_MAC,
    SecretMismatch,
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    state_table,
)
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, secret_fingerprint

_REORDER_WINDOW = 64
CHECKPOINTS = "(checkpoints)"  # how problems of the checkpoint chain name their "writer"


@dataclass(frozen=True)
class Problem:
    writer: str
    kind: str  # edited, reordered, spliced, missing, head
    seq: int  # first record concerned
    detail: str
    missing: int = 0


@dataclass(frozen=True)
class VerifyResult:
    count: int  # records checked
    writers: int
    problems: tuple[Problem, ...] = ()
    checkpoint_id: int = 0
    checkpoint_mac: str | None = None
    legacy: int = 0  # of them, records of an older release's single chain (writer ~legacy)

    @property
    def intact(self) -> bool:
        return not self.problems

    @property
    def missing(self) -> int:
        return sum(p.missing for p in self.problems)

    def summary(self) -> str:
        if self.intact:
            plural = "" if self.writers == 1 else "s"
            older = f"; {self.legacy} from before the upgrade, writer {LEGACY_WRITER}" if self.legacy else ""
            return f"intact ({self.count} records, {self.writers} writer{plural}{older})"
        lines = [p.detail for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"… and {len(self.problems) - 50} more problems")
        return "\n".join(lines)


def _when(value: Any) -> str:
    return time_text(value) if isinstance(value, datetime) else "its start"


def _missing(writer: str, first: int, last: int, after: Any, before: Any, why: str) -> Problem:
    n = last - first + 1
    records = "record" if n == 1 else "records"
    return Problem(writer, "missing", first,
                   f"{n} {records} missing from writer {writer} between {_when(after)} and {_when(before)} "
                   f"(seq {first}{'' if n == 1 else f'-{last}'}: {why})", n)


@dataclass
class _Checkpoints:
    # writer → (seq, mac, checkpoint id, time) of its latest checkpoint
    last: dict[str, tuple[int, str, int, datetime]] = field(default_factory=dict)
    # writer → seq → (mac, checkpoint id)
    at: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)


async def verify_chain(engine: AsyncEngine, secret: bytes, *, page_size: int = 5000) -> VerifyResult:
    """Verify in one read transaction (REPEATABLE READ in PostgreSQL; a WAL snapshot in SQLite), so
    heads, checkpoints and records agree even while gateways keep writing."""
    key = derive_key(secret, PURPOSE_AUDIT_MAC)
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            try:
                return await _verify(conn, key, secret, page_size)
            except (ValueError, TypeError, OverflowError, UnicodeError) as exc:
                # SQLite stores whatever an UPDATE puts in a column; no gateway writes a value its
                # schema cannot read back, so one that cannot be read is an edit — and the log cannot
                # be vouched for past it.
                detail = (f"the audit tables hold a value no gateway writes ({type(exc).__name__}: "
                          f"{str(exc)[:160]}): altered outside the gateway; nothing past it is verified")
                return VerifyResult(0, 0, (Problem(CHECKPOINTS, "edited", 0, detail),))


async def _pipeline_started(conn: AsyncConnection, state: Any) -> bool:
    """Whether writer chains were ever written here. Writer and checkpoint rows alone cannot say so —
    whoever can delete records can delete those too: a moved checkpoint head, a head MAC or any record
    in the new table also mean the pipeline ran (without an older release's table, nothing else
    writes them)."""
    if await pipeline_started(conn):
        return True
    records = await has_table(conn, audit_table.name) and bool(
        (await conn.execute(select(audit_table.c.id).limit(1))).first())
    if await has_legacy_table(conn):
        return records
    return bool(int(state.audit_seq) or state.audit_head_mac is not None or records)


async def _verify(conn: AsyncConnection, key: bytes, secret: bytes, page_size: int) -> VerifyResult:
    state = (await conn.execute(select(state_table).where(state_table.c.id == 1))).first()
    if state is None:
        missing = Problem(CHECKPOINTS, "head", 0, "the state row (og_state) is missing")
        return VerifyResult(0, 0, (missing,))
    if state.secret_fingerprint not in (None, secret_fingerprint(secret)):
        raise SecretMismatch(
            "the server secret is not the one this audit log was written with; "
            "use the gateway's secret_file or OLLAMA_GUARD_SECRET"
        )
    problems: list[Problem] = []
    if not await _pipeline_started(conn, state):  # a new database, or an older release's not upgraded yet
        anchor = await legacy_anchor(conn, key)
        if anchor is None and not await has_legacy_table(conn):
            return VerifyResult(0, 0)
        head = _legacy_head(*(anchor or (0, GENESIS_MAC, True)))
        count = await _verify_writer(conn, key, head, _Checkpoints(), page_size, problems,
                                     old_table=await has_legacy_table(conn))
        return VerifyResult(count, 1, tuple(problems), legacy=count)
    writers = {r.writer: r for r in (await conn.execute(select(audit_writers_table))).all()}
    checkpoints = await _verify_checkpoints(conn, key, state, writers.get(CHECKPOINT_WRITER), problems)
    count = legacy = 0
    real = {w: r for w, r in writers.items() if w != CHECKPOINT_WRITER}
    for name in sorted(real):
        n = await _verify_writer(conn, key, real[name], checkpoints, page_size, problems)
        count += n
        legacy += n if name == LEGACY_WRITER else 0
    if LEGACY_WRITER in real:
        _check_legacy_anchor(real[LEGACY_WRITER], writers.get(CHECKPOINT_WRITER), problems)
    elif await has_legacy_table(conn):  # upgraded, not migrated yet: the old table, read as it is
        head = _legacy_head(*(await legacy_anchor(conn, key) or (0, GENESIS_MAC, True)))
        legacy = await _verify_writer(conn, key, head, checkpoints, page_size, problems, old_table=True)
        count += legacy
        real[LEGACY_WRITER] = head
    for name, (seq, _mac, cp_id, when) in sorted(checkpoints.last.items()):
        if name not in real and seq > 0:
            problems.append(_missing(name, 1, seq, None, when,
                                     f"writer {name} is gone; checkpoint {cp_id} recorded its record {seq}"))
    stray = (
        await conn.execute(
            select(audit_table.c.writer).where(audit_table.c.writer.not_in(list(real) or [""])).distinct()
        )
    ).scalars().all()
    for name in stray:
        detail = f"records of unknown writer {name} (added outside the gateway)"
        problems.append(Problem(name, "head", 0, detail))
    return VerifyResult(count, len(real), tuple(problems), int(state.audit_seq), state.audit_mac, legacy)


def _legacy_head(seq: int, mac: str, authentic: bool) -> Any:
    """The old chain's head as a writer row (for a log not migrated yet)."""
    return SimpleNamespace(writer=LEGACY_WRITER, seq=seq, mac=mac, head_mac=None, authentic=authentic,
                           base_seq=0, base_mac=GENESIS_MAC, base_time=None, base_anchor_mac=None,
                           updated=None)


def _check_legacy_anchor(head: Any, base: Any, problems: list[Problem]) -> None:
    """The checkpoint chain starts where the old chain ended (until checkpoints are pruned past it)."""
    if base is None or not head.seq:
        return
    if int(base.base_seq) < int(head.seq) or (
        int(base.base_seq) == int(head.seq) and not hmac.compare_digest(base.base_mac, head.mac)
    ):
        problems.append(Problem(LEGACY_WRITER, "head", int(head.seq),
                                f"writer {LEGACY_WRITER}: the checkpoint chain does not start at the old "
                                f"log's head (record {head.seq})"))


async def _verify_checkpoints(conn: AsyncConnection, key: bytes, state: Any, base: Any,
                              problems: list[Problem]) -> _Checkpoints:
    out = _Checkpoints()

    def problem(kind: str, at: int, detail: str) -> None:
        problems.append(Problem(CHECKPOINTS, kind, at, detail))

    prev_id, prev_mac = 0, GENESIS_MAC
    if base is not None and base.base_seq:
        if not hmac.compare_digest(base_anchor_mac(key, CHECKPOINT_WRITER, base.base_seq, base.base_mac),
                                   base.base_anchor_mac or ""):
            problem("head", base.base_seq, "the checkpoint chain's prune anchor was altered")
        prev_id, prev_mac = int(base.base_seq), base.base_mac
    head_id, head_mac = int(state.audit_seq), state.audit_mac
    if head_id or state.audit_head_mac is not None:
        if not hmac.compare_digest(checkpoint_head_mac(key, head_id, head_mac), state.audit_head_mac or ""):
            problem("head", head_id, "the checkpoint chain's head was altered (its MAC does not match)")
    rows = (
        await conn.execute(
            select(audit_checkpoints_table).where(audit_checkpoints_table.c.id > prev_id)
            .order_by(audit_checkpoints_table.c.id)
        )
    ).all()
    for row in rows:
        own = checkpoint_mac(key, row.prev_mac, row.id, row.time, row.writer, row.writer_seq, row.writer_mac)
        if not hmac.compare_digest(own, row.mac):
            problem("edited", row.id, f"checkpoint {row.id} does not match its MAC")
        elif row.id != prev_id + 1:
            problem("missing", prev_id + 1, f"checkpoints {prev_id + 1}-{row.id - 1} are missing")
        elif not hmac.compare_digest(row.prev_mac, prev_mac):
            problem("spliced", row.id, f"checkpoint {row.id} does not link to checkpoint {prev_id}")
        else:
            out.at.setdefault(row.writer, {})[row.writer_seq] = (row.writer_mac, row.id)
            if row.writer_seq >= out.last.get(row.writer, (-1,))[0]:
                out.last[row.writer] = (row.writer_seq, row.writer_mac, row.id, row.time)
        prev_id, prev_mac = row.id, row.mac
    if prev_id < head_id:
        problem("missing", prev_id + 1, f"checkpoints {prev_id + 1}-{head_id} were removed from the end")
    elif prev_id > head_id or not hmac.compare_digest(prev_mac, head_mac):
        problem("head", head_id, "the last checkpoint does not match the checkpoint head")
    return out


def _true_seq(mac_of: Any, row: Any, values: dict[str, Any]) -> int | None:
    for delta in range(1, _REORDER_WINDOW + 1):
        for candidate in (row.seq + delta, row.seq - delta):
            if candidate >= 1 and hmac.compare_digest(mac_of(row.prev_mac, candidate, values), row.mac):
                return candidate
    return None


async def _verify_writer(conn: AsyncConnection, key: bytes, head: Any, checkpoints: _Checkpoints,
                         page_size: int, problems: list[Problem], *, old_table: bool = False) -> int:
    """Walk one writer's chain; ``old_table``: the old releases' og_audit_log (not migrated yet)."""
    writer = head.writer
    legacy = writer == LEGACY_WRITER
    table = legacy_table if old_table else audit_table

    def problem(kind: str, at: int, detail: str) -> None:
        problems.append(Problem(writer, kind, at, f"writer {writer}: {detail}"))

    def mac_of(prev: str, seq: int, values: dict[str, Any]) -> str:
        if legacy:  # the old releases' MAC (no writer, no count in it)
            return legacy_mac(key, prev, seq, values)
        return record_mac(key, prev, writer, seq, values)

    if old_table:
        if not head.authentic:
            problem("head", head.seq, "the old log's head does not match its MAC (og_state was edited)")
    elif head.head_mac == UNAUTHENTIC_LEGACY_HEAD:
        problem("head", head.seq, "the old log's head did not match its MAC when it was migrated "
                "(og_state was edited before the upgrade)")
    elif not hmac.compare_digest(writer_head_mac(key, writer, head.seq, head.mac), head.head_mac):
        problem("head", head.seq, "its head was altered (MAC does not match)")
    prev_seq, prev_mac, prev_time = int(head.base_seq), head.base_mac, head.base_time
    if prev_seq and not hmac.compare_digest(base_anchor_mac(key, writer, prev_seq, prev_mac),
                                            head.base_anchor_mac or ""):
        problem("head", prev_seq, "its prune anchor was altered")
    anchored = checkpoints.at.get(writer, {})
    count = 0
    while True:
        rows = (
            await conn.execute(
                select(table)
                .where(table.c.seq > prev_seq, *([] if old_table else [audit_table.c.writer == writer]))
                .order_by(table.c.seq)
                .limit(page_size)
            )
        ).all()
        if not rows:
            break
        for row in rows:
            count += 1
            values = row_values(row)
            linked = hmac.compare_digest(row.prev_mac, prev_mac)
            if row.seq != prev_seq + 1:
                why = "lost before they reached the log" if linked else "deleted from the log"
                problems.append(_missing(writer, prev_seq + 1, row.seq - 1, prev_time, values["time"], why))
            if legacy and values["count"] != 1:  # the old MAC does not cover count: it can only be 1
                problem("edited", row.seq, f"record {row.seq} has a count the old log never had (edited)")
            elif not hmac.compare_digest(mac_of(row.prev_mac, row.seq, values), row.mac):
                true_seq = _true_seq(mac_of, row, values)
                if true_seq is not None:
                    problem("reordered", row.seq, f"record {row.seq} holds the content of record {true_seq}")
                else:
                    problem("edited", row.seq, f"record {row.seq} does not match its MAC (edited)")
            elif not linked and row.seq == prev_seq + 1:
                problem("spliced", row.seq, f"record {row.seq} does not link to record {prev_seq} "
                        "(spliced in from another chain, or records before it replaced)")
            anchor = anchored.get(row.seq)
            if anchor is not None and not hmac.compare_digest(anchor[0], row.mac):
                problem("spliced", row.seq, f"record {row.seq} is not the one checkpoint {anchor[1]} "
                        "recorded (replaced by a record from another chain)")
            prev_seq, prev_mac, prev_time = row.seq, row.mac, values["time"]
    last_checkpoint = checkpoints.last.get(writer)
    claimed, claimed_time, claim = int(head.seq), head.updated, f"its head names record {head.seq}"
    if last_checkpoint is not None and last_checkpoint[0] > claimed:
        claimed, claimed_time = last_checkpoint[0], last_checkpoint[3]
        claim = (f"the head was moved back to record {head.seq}; checkpoint {last_checkpoint[2]} "
                 f"recorded record {last_checkpoint[0]}")
    if prev_seq < claimed:
        problems.append(_missing(writer, prev_seq + 1, claimed, prev_time, claimed_time,
                                 f"cut off the end: {claim}"))
    elif prev_seq > head.seq or (prev_seq == head.seq and not hmac.compare_digest(prev_mac, head.mac)):
        problem("head", head.seq, "the last record does not match its head "
                "(records added or replaced outside the gateway)")
    return count
