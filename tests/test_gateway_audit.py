"""The hash-chained audit log: batched writing, nothing lost on shutdown, one linear chain with several
writers, verification naming the first edited / deleted / reordered / truncated record, and `logs`."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from ollama_guard.gateway.audit import (
    AuditRecord,
    AuditWriter,
    compute_mac,
    read_records,
    tail,
    verify_chain,
)
from ollama_guard.gateway.db import audit_table, create_engine_for, init_schema
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, load_server_secret
from support.cli import run_cli
from support.pg_redis import pg_url, postgres_server  # noqa: F401

SECRET = b"a" * 48
CONTENT_COLUMNS = [c.name for c in audit_table.columns if c.name != "seq"]


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'guard.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engine(db_url: str):
    engine = create_engine_for(db_url)
    await init_schema(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_engine(tmp_path: Path):
    """For behaviour that does not depend on the database."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    yield engine
    await engine.dispose()


def record(i: int, **changes) -> AuditRecord:
    values = dict(
        time=datetime(2026, 11, 30, 12, 0, tzinfo=UTC) + timedelta(seconds=i, microseconds=123),
        key_id="0123456789abcdef",
        key_name="alice",
        client="127.0.0.1",
        method="POST",
        path="/api/chat",
        model="llama3:latest",
        status=200,
        decision="allow",
        reason="ok",
        bytes_in=100 + i,
        bytes_out=2000 + i,
        tokens=10 + i,
        latency_ms=12.3456 + i,
        request_id=f"req-{i}",
    )
    values.update(changes)
    return AuditRecord(**values)


async def write(engine, records, **kwargs) -> None:
    writer = AuditWriter(engine, SECRET, **kwargs)
    await writer.start()
    for item in records:
        writer.submit(item)
    await writer.close()


async def test_records_round_trip_and_verify(engine) -> None:
    odd = record(
        0,
        path="/api/chat\x00\udcff" + "x" * 10_000,  # NUL, a lone surrogate, far too long
        model=None,
        key_id=None,
        key_name=None,
        decision="maybe",
        latency_ms=float("nan"),
        status=401,
    )
    await write(engine, [odd, *(record(i) for i in range(1, 25))], batch_size=7)
    result = await verify_chain(engine, SECRET)
    assert result.intact and result.count == 25 and result.summary() == "intact (25 records)"
    stored = await read_records(engine)
    assert [r.seq for r in stored] == list(range(1, 26))
    assert stored[0].decision == "deny" and stored[0].status == 401 and stored[0].key_id is None
    assert "\x00" not in stored[0].path and len(stored[0].path) <= 4096
    assert stored[5].time == record(5).time and stored[5].tokens == 15
    assert stored[5].latency_ms == pytest.approx(17.346)


async def test_close_writes_everything_queued(sqlite_engine) -> None:
    writer = AuditWriter(sqlite_engine, SECRET, batch_size=100, flush_interval=10)
    await writer.start()
    for i in range(1000):
        writer.submit(record(i))
    await writer.close()  # long flush interval: only close() can have written them
    result = await verify_chain(sqlite_engine, SECRET)
    assert result.intact and result.count == 1000


async def _rows(engine) -> list:
    async with engine.connect() as conn:
        return (await conn.execute(select(audit_table).order_by(audit_table.c.seq))).all()


async def test_edit_is_detected(engine) -> None:
    await write(engine, [record(i) for i in range(10)])
    async with engine.begin() as conn:
        await conn.execute(update(audit_table).where(audit_table.c.seq == 4).values(status=403))
    result = await verify_chain(engine, SECRET)
    assert not result.intact
    assert (result.first_broken_seq, result.reason) == (4, "edited")
    assert "record 4" in result.summary()


async def test_deletion_is_detected(engine) -> None:
    await write(engine, [record(i) for i in range(10)])
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq.in_([6, 7])))
    result = await verify_chain(engine, SECRET)
    assert (result.intact, result.first_broken_seq, result.reason) == (False, 6, "deleted")
    assert "6-7" in (result.detail or "")


async def test_reordering_is_detected(engine) -> None:
    await write(engine, [record(i) for i in range(10)])
    rows = {r.seq: r for r in await _rows(engine)}
    async with engine.begin() as conn:  # swap the whole content of records 3 and 5, seq numbers stay
        for target, source in ((3, 5), (5, 3)):
            values = {c: getattr(rows[source], c) for c in CONTENT_COLUMNS}
            await conn.execute(update(audit_table).where(audit_table.c.seq == target).values(**values))
    result = await verify_chain(engine, SECRET)
    assert (result.intact, result.first_broken_seq, result.reason) == (False, 3, "reordered")
    assert "content of record 5" in (result.detail or "")


async def test_truncated_tail_is_detected(sqlite_engine) -> None:
    await write(sqlite_engine, [record(i) for i in range(10)])
    async with sqlite_engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq > 8))
    result = await verify_chain(sqlite_engine, SECRET)
    assert (result.intact, result.first_broken_seq, result.reason) == (False, 9, "truncated")


async def test_rewritten_chain_without_the_secret_is_detected(sqlite_engine) -> None:
    """Someone with write access edits record 3 and recomputes every MAC after it with a key of their own."""
    await write(sqlite_engine, [record(i) for i in range(6)])
    forged_key = derive_key(b"f" * 48, PURPOSE_AUDIT_MAC)
    rows = await _rows(sqlite_engine)
    prev = rows[1].mac
    async with sqlite_engine.begin() as conn:
        for row in rows[2:]:
            item = AuditRecord(
                **{c: getattr(row, c) for c in CONTENT_COLUMNS if c not in ("prev_mac", "mac")}
            )
            item.time = item.time.replace(tzinfo=UTC)
            if row.seq == 3:
                item.tokens = 0
            mac = compute_mac(forged_key, prev, row.seq, item)
            await conn.execute(
                update(audit_table)
                .where(audit_table.c.seq == row.seq)
                .values(tokens=item.tokens, prev_mac=prev, mac=mac)
            )
            prev = mac
    result = await verify_chain(sqlite_engine, SECRET)
    assert (result.intact, result.first_broken_seq, result.reason) == (False, 3, "edited")


async def test_two_writers_keep_one_linear_chain(db_url: str) -> None:
    first, second = create_engine_for(db_url), create_engine_for(db_url)
    await init_schema(first)
    await init_schema(second)
    writers = [AuditWriter(first, SECRET, batch_size=5), AuditWriter(second, SECRET, batch_size=5)]
    for writer in writers:
        await writer.start()

    async def produce(writer: AuditWriter, tag: str) -> None:
        for i in range(150):
            writer.submit(record(i, request_id=f"{tag}-{i}"))
            if i % 10 == 0:
                await asyncio.sleep(0.005)

    await asyncio.gather(produce(writers[0], "a"), produce(writers[1], "b"))
    await asyncio.gather(*(w.close() for w in writers))
    result = await verify_chain(first, SECRET)
    stored = await read_records(first)
    await first.dispose()
    await second.dispose()
    assert result.intact and result.count == 300
    ids = {r.request_id for r in stored}
    assert len(ids) == 300
    # the writers really interleaved (batches from both sides alternate somewhere in the chain)
    sides = [r.request_id[0] for r in stored]
    assert sum(1 for x, y in itertools.pairwise(sides) if x != y) >= 2


async def test_verify_while_the_gateway_keeps_writing(db_url: str) -> None:
    reader, writer_engine = create_engine_for(db_url), create_engine_for(db_url)
    await init_schema(writer_engine)
    writer = AuditWriter(writer_engine, SECRET, batch_size=20, flush_interval=0.01)
    await writer.start()
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set():
            writer.submit(record(i))
            i += 1
            await asyncio.sleep(0.001)

    producer = asyncio.create_task(produce())
    try:
        # Under load the first batch can take a while to land; start reading once the chain has begun.
        deadline = asyncio.get_running_loop().time() + 10
        while (await verify_chain(reader, SECRET)).count == 0:
            assert asyncio.get_running_loop().time() < deadline, "the writer never wrote a record"
            await asyncio.sleep(0.02)
        results = []
        for _ in range(6):
            await asyncio.sleep(0.05)
            results.append(await verify_chain(reader, SECRET, page_size=7))
    finally:
        stop.set()
        await producer
        await writer.close()
        await writer_engine.dispose()
    final = await verify_chain(reader, SECRET)
    await reader.dispose()
    assert all(r.intact for r in results), [r.summary() for r in results if not r.intact]
    assert results[-1].count > results[0].count > 0
    assert final.intact and final.count >= results[-1].count


async def test_writer_keeps_records_while_postgres_is_down(pg_url: str, postgres_server) -> None:  # noqa: F811
    engine = create_engine_for(pg_url)
    await init_schema(engine)
    writer = AuditWriter(engine, SECRET, flush_interval=0.05)
    await writer.start()
    try:
        writer.submit(record(0))
        await asyncio.sleep(0.3)
        postgres_server.stop()
        for i in range(1, 20):
            writer.submit(record(i))
        await asyncio.sleep(0.5)
        assert writer.last_error is not None and writer.backlog == 19
        postgres_server.start()
        await writer.close()
    finally:
        postgres_server.start()
    result = await verify_chain(engine, SECRET)
    await engine.dispose()
    assert result.intact and result.count == 20


async def test_backlog_overflow_is_recorded(sqlite_engine) -> None:
    writer = AuditWriter(sqlite_engine, SECRET, max_backlog=10, flush_interval=10)
    writer_started = False
    for i in range(15):  # not started yet: nothing drains the queue
        writer.submit(record(i))
    assert writer.backlog == 10 and writer.dropped == 5 and not writer.healthy
    await writer.start()
    writer_started = True
    await writer.close()
    stored = await read_records(sqlite_engine)
    assert writer_started and len(stored) == 11
    assert "5 records were dropped" in stored[-1].reason
    assert (await verify_chain(sqlite_engine, SECRET)).intact


async def test_tail_and_follow(sqlite_engine) -> None:
    await write(sqlite_engine, [record(i) for i in range(5)])
    last_two = [r.seq async for r in tail(sqlite_engine, 2)]
    assert last_two == [4, 5]
    seen: list[int] = []

    async def follow() -> None:
        async for item in tail(sqlite_engine, 1, follow=True, poll_interval=0.05):
            seen.append(item.seq or 0)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await write(sqlite_engine, [record(i) for i in range(5, 7)])
    await asyncio.wait_for(task, 5)
    assert seen == [5, 6, 7]


# --- the command ----------------------------------------------------------------------------------


def test_logs_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.delenv("OLLAMA_GUARD_DB", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    code, _, err = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 2 and "no gateway database" in err

    async def fill() -> None:
        engine = create_engine_for(db)
        await init_schema(engine)
        writer = AuditWriter(engine, load_server_secret(type("C", (), {"db": db, "secret_file": None})()))
        await writer.start()
        for i in range(6):
            writer.submit(record(i))
        await writer.close()
        await engine.dispose()

    asyncio.run(fill())
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert (code, out) == (0, "intact (6 records)\n")

    code, out, _ = run_cli(capsys, "logs", "tail", "-n", "2", "--format", "json", "--db", db)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [x["seq"] for x in lines] == [5, 6] and lines[0]["path"] == "/api/chat"
    code, out, _ = run_cli(capsys, "logs", "tail", "-n", "1", "--db", db)
    assert code == 0 and out.startswith("6 ") and "/api/chat" in out and "key=alice" in out

    async def tamper() -> None:
        engine = create_engine_for(db)
        async with engine.begin() as conn:
            await conn.execute(update(audit_table).where(audit_table.c.seq == 2).values(tokens=0))
        await engine.dispose()

    asyncio.run(tamper())
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 1 and "record 2" in out and "edited" in out
