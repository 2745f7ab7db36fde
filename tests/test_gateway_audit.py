"""The audit log: spool → writer process → per-writer HMAC chains anchored in a shared checkpoint chain.

Verification names every kind of damage (edited, reordered, spliced from a fork, records missing from a
writer between two times — also when the tail was cut and the head rewritten to match), prune keeps the
chains verifiable, unauthenticated refusals are aggregated, and nothing is dropped without a trace."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select, update

from ollama_guard.gateway.audit import AuditRecord, Recorder, RecordFields, read_records, tail, verify_chain
from ollama_guard.gateway.audit.chain import append_checkpoint, writer_head_mac
from ollama_guard.gateway.audit.prune import PruneRefused, prune_before
from ollama_guard.gateway.audit.record import canonical, reference_canonical, stored_values
from ollama_guard.gateway.audit.spool import SpoolReader
from ollama_guard.gateway.audit.writer import Drain, Store
from ollama_guard.gateway.db import (
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    create_engine_for,
    init_schema,
    state_table,
)
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, load_server_secret, secret_fingerprint
from support.audit import store_records
from support.cli import run_cli
from support.pg_redis import pg_url, postgres_server  # noqa: F401

SECRET = b"a" * 48
KEY = derive_key(SECRET, PURPOSE_AUDIT_MAC)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


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
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'guard.db'}"


@pytest.fixture
async def sqlite_engine(sqlite_url: str):
    engine = create_engine_for(sqlite_url)
    await init_schema(engine)
    yield engine
    await engine.dispose()


def fields(i: int, **changes) -> RecordFields:
    values = dict(
        time=(T0 + timedelta(seconds=i, microseconds=123)).timestamp(), key_id="0123456789abcdef",
        key_name="alice", client="127.0.0.1", method="POST", path="/api/chat", model="llama3:latest",
        status=200, decision="allow", reason="ok", bytes_in=100 + i, bytes_out=2000 + i, tokens=10 + i,
        latency_ms=12.3456 + i, request_id=f"req-{i}",
    )
    values.update(changes)
    return RecordFields(**values)


async def recorded(db_url: str, items, tmp_path: Path, **kwargs) -> Recorder:
    recorder = Recorder(db_url, SECRET, spool_dir=tmp_path / "spool", **kwargs)
    await recorder.start()
    for item in items:
        recorder.record(item)
    await recorder.close()
    return recorder


async def rows(engine, writer: str | None = None) -> list:
    query = select(audit_table).order_by(audit_table.c.writer, audit_table.c.seq)
    if writer is not None:
        query = query.where(audit_table.c.writer == writer)
    async with engine.connect() as conn:
        return (await conn.execute(query)).all()


# --- the pipeline ----------------------------------------------------------------------------------


async def test_records_round_trip_through_the_writer_process(engine, db_url: str, tmp_path: Path) -> None:
    odd = fields(0, path="/api/chat\x00\udcff" + "x" * 10_000, model=None, key_id="k", key_name=None,
                 decision="maybe", latency_ms=float("nan"), status=401)
    recorder = await recorded(db_url, [odd, *(fields(i) for i in range(1, 25))], tmp_path)
    result = await verify_chain(engine, SECRET)
    assert result.intact and (result.count, result.writers) == (25, 1), result.summary()
    assert result.summary() == "intact (25 records, 1 writer)"
    stored = await read_records(engine)
    assert [r.seq for r in stored] == list(range(1, 26)) and {r.writer for r in stored} == {recorder.writer}
    assert stored[0].decision == "deny" and stored[0].status == 401 and stored[0].key_name is None
    assert "\x00" not in stored[0].path and len(stored[0].path) <= 4096
    assert stored[5].time == T0 + timedelta(seconds=5, microseconds=123) and stored[5].tokens == 15
    assert stored[5].latency_ms == pytest.approx(17.346)
    assert recorder.stats()["dropped"] == 0 and recorder.backlog() == 0
    assert not list((tmp_path / "spool").glob("*.spool"))  # drained segments are deleted
    recorder.record(fields(99))  # a request finishing after shutdown: counted, never an exception
    assert recorder.stats()["dropped"] == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.one_of(st.none(), st.text(max_size=10)), st.integers(-2**70, 2**70),
       st.floats(allow_nan=True, allow_infinity=True))
def test_canonical_bytes_are_sorted_compact_json(
    text: str, model: str | None, number: int, latency: float
) -> None:
    values = stored_values(fields(1, path=text, model=model, tokens=number, latency_ms=latency, client=text))
    assert canonical("w-1", 7, values) == reference_canonical("w-1", 7, values)


async def test_aggregates_unauthenticated_refusals_and_keeps_every_keyed_record(
    sqlite_engine, sqlite_url: str, tmp_path: Path
) -> None:
    flood = [fields(i, key_id=None, key_name=None, decision="deny", status=401, reason="no-key",
                    client=f"203.0.113.{i % 5}") for i in range(3000)]
    keyed = [fields(i, path="/api/copy", request_id=f"copy-{i}") for i in range(40)]
    keyed += [fields(i, status=403, decision="deny", reason="model-not-allowed", request_id=f"no-{i}")
              for i in range(40, 45)]  # refusals of a *keyed* request are never folded
    mixed = [item for pair in zip(flood[:45], keyed, strict=True) for item in pair] + flood[45:]
    recorder = await recorded(sqlite_url, mixed, tmp_path, aggregate_limit=3)
    stored = await read_records(sqlite_engine)
    assert {r.request_id for r in stored if r.path == "/api/copy"} == {f"copy-{i}" for i in range(40)}
    assert [r.count for r in stored if r.reason == "model-not-allowed"] == [1] * 5
    refusals = [r for r in stored if r.reason == "no-key"]
    assert sum(r.count for r in refusals) == 3000  # every refusal is counted
    assert len(refusals) <= 3 + 4  # the first of each of 3 clients, their repeats, and the overflow
    assert {r.client for r in refusals if r.count > 1} >= {"*"}  # beyond aggregate_limit: one bucket
    assert recorder.stats()["aggregated"] == 3000 - 3
    assert (await verify_chain(sqlite_engine, SECRET)).intact


@pytest.mark.parametrize("repeats", [1, 2, 3, 7])
async def test_every_keyless_refusal_is_counted_however_few(sqlite_engine, sqlite_url: str, tmp_path: Path,
                                                           repeats: int) -> None:
    """Aggregation must not lose the small counts: 2 refusals in an interval are a row plus a repeat
    of 1, and a lone repeat is as much a record as a thousand."""
    flood = [fields(i, key_id=None, key_name=None, decision="deny", status=401, reason="no-key",
                    client=f"198.51.100.{c}") for c in range(3) for i in range(repeats)]
    await recorded(sqlite_url, flood, tmp_path)
    stored = await read_records(sqlite_engine)
    for c in range(3):
        assert sum(r.count for r in stored if r.client == f"198.51.100.{c}") == repeats


async def test_the_writer_process_gets_no_secret_on_its_command_line(request: pytest.FixtureRequest,
                                                                    tmp_path: Path) -> None:
    """The database URL (with its password) and the audit secret reach the writer on its stdin: a
    command line is readable by every local user (ps, /proc/PID/cmdline)."""
    password = "s3cret-pg-password-in-url"
    # the test server trusts every login; the URL still carries the password, as a real one would
    url = str(request.getfixturevalue("pg_url")).replace("@", f":{password}@", 1)
    engine = create_engine_for(url)
    await init_schema(engine)
    await engine.dispose()
    recorder = Recorder(url, SECRET, spool_dir=tmp_path / "spool")
    await recorder.start(wait_ready=True)
    try:
        assert recorder._process is not None
        writer = psutil.Process(recorder._process.pid)
        for text in ("\0".join(writer.cmdline()), "\0".join(f"{k}={v}" for k, v in writer.environ().items())):
            assert password not in text and SECRET.hex() not in text and SECRET.decode() not in text
        recorder.record(fields(1))
    finally:
        await recorder.close()
    assert recorder.stats()["dropped"] == 0


async def test_state_changing_action_is_on_disk_before_it_returns(
    sqlite_engine, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    recorder = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool")
    await recorder.start()
    try:
        synced.clear()
        recorder.record(fields(1))
        assert synced == [] and recorder.spool.synced < recorder.spool.written  # ordinary: no fsync
        deletes = [fields(i, path="/api/delete") for i in range(5)]
        await asyncio.gather(*(recorder.spool_before_forward(item) for item in deletes))
        assert recorder.spool.synced == recorder.spool.written
        assert 1 <= len(synced) <= 2  # one group commit serves concurrent callers
    finally:
        await recorder.close()


async def test_a_record_that_cannot_be_spooled_is_counted_refused_and_named_by_verify(
    sqlite_engine, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool")
    await recorder.start()
    recorder.record(fields(1))
    real_write = recorder.spool._write

    def disk_full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recorder.spool, "_write", disk_full)
    recorder.record(fields(2))
    recorder.record(fields(3))
    assert recorder.stats()["dropped"] == 2 and not recorder.accepting()
    with pytest.raises(Exception, match="No space left"):
        await recorder.spool_before_forward(fields(4, path="/api/delete"))
    monkeypatch.setattr(recorder.spool, "_write", real_write)
    recorder.record(fields(5))
    assert recorder.accepting()
    await recorder.close()
    result = await verify_chain(sqlite_engine, SECRET)
    assert not result.intact and result.missing == 3
    assert f"3 records missing from writer {recorder.writer} between 2026-11-30T12:00:01.000123Z and " \
           "2026-11-30T12:00:05.000123Z" in result.summary()
    assert "lost before they reached the log" in result.summary()


async def test_keyed_records_are_refused_while_the_writer_is_stalled(sqlite_engine, sqlite_url: str,
                                                                     tmp_path: Path) -> None:
    recorder = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool", max_backlog=50)
    await recorder.start()
    assert recorder._process is not None
    os.kill(recorder._process.pid, signal.SIGSTOP)
    try:
        for i in range(49):
            recorder.record(fields(i))
        assert recorder.backlog() == 49 and recorder.accepting()  # below the threshold: still accepting
        recorder.record(fields(49))
        assert recorder.backlog() == 50 and not recorder.accepting()  # at it: keyed requests refused
        for i in range(50, 60):
            recorder.record(fields(i))
        assert recorder.backlog() == 60 and not recorder.accepting() and not recorder.healthy()
    finally:
        os.kill(recorder._process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 20
    while recorder.backlog():
        assert time.monotonic() < deadline, recorder.stats()
        await asyncio.sleep(0.05)
    assert recorder.accepting()
    await recorder.close()


async def test_writer_process_restarts_and_replays_its_spool(sqlite_engine, sqlite_url: str,
                                                             tmp_path: Path) -> None:
    recorder = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool")
    await recorder.start()
    assert recorder._process is not None
    first = recorder._process
    os.kill(first.pid, signal.SIGSTOP)
    for i in range(100):
        recorder.record(fields(i))
    os.kill(first.pid, signal.SIGKILL)  # killed with everything unwritten
    deadline = time.monotonic() + 30
    while recorder.backlog() or recorder._process is first:
        assert time.monotonic() < deadline, recorder.stats()
        await asyncio.sleep(0.05)
    await recorder.close()
    result = await verify_chain(sqlite_engine, SECRET)
    assert result.intact and result.count == 100, result.summary()


async def test_a_dead_process_spool_is_drained_by_the_next_one(sqlite_engine, sqlite_url: str,
                                                               tmp_path: Path) -> None:
    """kill -9 of a gateway process and its writer: the next process's writer replays the spool."""
    dead = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool")
    await dead.start()
    assert dead._process is not None
    os.kill(dead._process.pid, signal.SIGSTOP)
    for i in range(50):
        dead.record(fields(i))
    os.kill(dead._process.pid, signal.SIGKILL)
    dead._closing = True
    dead.spool.close()
    dead.spool.release()  # what the kernel does when the process dies
    await dead._process.wait()
    dead._supervisor.cancel()  # type: ignore[union-attr]
    survivor = await recorded(sqlite_url, [fields(100)], tmp_path)
    result = await verify_chain(sqlite_engine, SECRET)
    assert result.intact and result.count == 51 and result.writers == 2, result.summary()
    by_writer = {r.writer for r in await rows(sqlite_engine)}
    assert by_writer == {dead.writer, survivor.writer}
    assert not list((tmp_path / "spool").iterdir())


async def test_segments_roll_over_and_are_deleted_once_written(
    sqlite_engine, sqlite_url: str, tmp_path: Path
) -> None:
    recorder = Recorder(sqlite_url, SECRET, spool_dir=tmp_path / "spool", segment_bytes=4096)
    await recorder.start()
    for i in range(300):
        recorder.record(fields(i))
    assert recorder.spool._segment >= 10  # ~300 bytes a record: many segments
    await recorder.close()
    assert not list((tmp_path / "spool").iterdir())
    result = await verify_chain(sqlite_engine, SECRET)
    assert result.intact and result.count == 300


async def test_writer_keeps_one_connection(sqlite_engine, sqlite_url: str, tmp_path: Path) -> None:
    from ollama_guard.gateway.audit.spool import SpoolWriter

    spool = SpoolWriter(tmp_path / "spool", "w1", secret_fingerprint(SECRET))
    spool.open()
    store = Store(sqlite_url)
    connects = 0

    @event.listens_for(store._engine.sync_engine, "connect")
    def count(*_args) -> None:
        nonlocal connects
        connects += 1

    drain = Drain(store, KEY, SpoolReader(tmp_path / "spool", "w1", secret_fingerprint(SECRET)), batch=10,
                  checkpoint_interval=0)
    for i in range(1, 101):
        spool.append(i, 1, fields(i))
        if i % 7 == 0:
            assert await drain.step()
    await drain.finish()
    await store.close()
    assert connects == 1
    assert (await verify_chain(sqlite_engine, SECRET)).count == 100


# --- what verification catches ----------------------------------------------------------------------


async def chain_of(engine, n: int, writer: str = "w1", start: int = 0) -> None:
    await store_records(engine, SECRET, [fields(i) for i in range(start, start + n)], writer=writer)


async def test_edit_is_detected(engine) -> None:
    await chain_of(engine, 10)
    async with engine.begin() as conn:
        await conn.execute(update(audit_table).where(audit_table.c.seq == 4).values(status=403))
    result = await verify_chain(engine, SECRET)
    assert [(p.kind, p.seq) for p in result.problems] == [("edited", 4)]
    assert "writer w1: record 4 does not match its MAC" in result.summary()


async def test_reordering_is_detected(engine) -> None:
    await chain_of(engine, 10)
    stored = {r.seq: r for r in await rows(engine)}
    content = [c.name for c in audit_table.columns if c.name not in ("id", "writer", "seq")]
    async with engine.begin() as conn:
        for target, source in ((3, 5), (5, 3)):
            values = {c: getattr(stored[source], c) for c in content}
            await conn.execute(update(audit_table).where(audit_table.c.seq == target).values(**values))
    result = await verify_chain(engine, SECRET)
    assert result.problems[0].kind == "reordered"
    assert "record 3 holds the content of record 5" in result.summary()


async def test_deleted_records_are_named_with_their_writer_and_times(engine) -> None:
    await chain_of(engine, 10)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq.in_([6, 7])))
    result = await verify_chain(engine, SECRET)
    assert not result.intact and result.missing == 2
    assert ("2 records missing from writer w1 between 2026-11-30T12:00:04.000123Z and "
            "2026-11-30T12:00:07.000123Z (seq 6-7: deleted from the log)") in result.summary()


async def test_record_spliced_in_from_a_forked_chain_is_detected(tmp_path: Path) -> None:
    """Two copies of one database (a restored backup, a cloned replica) go on with the same writer and
    the same secret; a record of the fork, valid MAC and all, is put in place of the original."""
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    original = create_engine_for(urls[0])
    await init_schema(original)
    await chain_of(original, 5)
    await original.dispose()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    engines = [create_engine_for(u) for u in urls]
    await chain_of(engines[0], 5, start=5)
    await store_records(engines[1], SECRET, [fields(i, status=404) for i in range(5, 10)], writer="w1")
    fork = {r.seq: r for r in await rows(engines[1])}
    content = [c.name for c in audit_table.columns if c.name not in ("id",)]
    for seq in (7, 10):  # in the middle, and the last record
        async with engines[0].begin() as conn:
            await conn.execute(update(audit_table).where(audit_table.c.seq == seq)
                               .values(**{c: getattr(fork[seq], c) for c in content}))
    result = await verify_chain(engines[0], SECRET)
    for e in engines:
        await e.dispose()
    kinds = {(p.kind, p.seq) for p in result.problems}
    assert ("spliced", 8) in kinds  # the record after the splice no longer links
    assert ("spliced", 10) in kinds  # the last one is not the one its checkpoint recorded
    assert not result.intact


async def test_truncated_tail_is_detected_even_with_the_head_rewritten_to_match(engine) -> None:
    await chain_of(engine, 10)
    survivors = await rows(engine)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq > 7))
        last = survivors[6]
        # the attacker even holds the secret's MAC for an old head (or the secret): the head looks right
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1").values(
            seq=7, mac=last.mac, head_mac=writer_head_mac(KEY, "w1", 7, last.mac)))
    result = await verify_chain(engine, SECRET)
    assert result.missing == 3
    assert "3 records missing from writer w1 between 2026-11-30T12:00:06.000123Z and" in result.summary()
    assert "the head was moved back to record 7; checkpoint" in result.summary()


async def test_checkpoint_rewritten_to_match_a_truncated_tail_is_detected(engine) -> None:
    """Without the secret, the checkpoint that recorded the cut-off records cannot be lowered."""
    await chain_of(engine, 10)
    survivors = await rows(engine)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq > 7))
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1").values(
            seq=7, mac=survivors[6].mac, head_mac=writer_head_mac(KEY, "w1", 7, survivors[6].mac)))
        await conn.execute(update(audit_checkpoints_table).where(audit_checkpoints_table.c.writer_seq == 10)
                           .values(writer_seq=7))
    result = await verify_chain(engine, SECRET)
    assert not result.intact and "checkpoint 2 does not match its MAC" in result.summary()


async def test_records_moved_between_writers_are_detected(engine) -> None:
    await chain_of(engine, 1, writer="w1")
    await chain_of(engine, 1, writer="w2")
    async with engine.begin() as conn:  # both first records start from the same genesis mac
        await conn.execute(update(audit_table).where(audit_table.c.writer == "w1").values(writer="tmp"))
        await conn.execute(update(audit_table).where(audit_table.c.writer == "w2").values(writer="w1"))
        await conn.execute(update(audit_table).where(audit_table.c.writer == "tmp").values(writer="w2"))
    result = await verify_chain(engine, SECRET)
    assert {(p.writer, p.kind) for p in result.problems} >= {("w1", "edited"), ("w2", "edited")}


async def test_truncated_tail_without_the_head_is_detected(engine) -> None:
    await chain_of(engine, 10)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq > 8))
    result = await verify_chain(engine, SECRET)
    assert result.missing == 2 and "(seq 9-10: cut off the end: its head names record 10)" in result.summary()
    async with engine.begin() as conn:
        await conn.execute(delete(audit_checkpoints_table))  # only the writer's head is left to tell
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq == 8))
    assert "seq 8-10: cut off the end" in (await verify_chain(engine, SECRET)).summary()


async def test_one_record_cut_off_the_end_is_detected(engine) -> None:
    await chain_of(engine, 3)
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq == 3))
    result = await verify_chain(engine, SECRET)
    assert result.missing == 1 and "1 record missing from writer w1" in result.summary()


async def forked(tmp_path: Path, *, tail: int, checkpoint: bool = True):
    """Database a.db and its fork b.db: 10 shared records of w1, then `tail` more different ones each."""
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db")]
    original = create_engine_for(urls[0])
    await init_schema(original)
    await chain_of(original, 10)
    await original.dispose()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    a, b = (create_engine_for(u) for u in urls)
    await store_records(a, SECRET, [fields(i) for i in range(10, 10 + tail)], writer="w1",
                        checkpoint=checkpoint)
    await store_records(b, SECRET, [fields(i, status=404) for i in range(10, 10 + tail)], writer="w1",
                        checkpoint=checkpoint)
    return a, b


async def replace_rows(target, source, table, where) -> None:
    async with source.connect() as conn:
        found = (await conn.execute(select(table).where(where))).all()
    async with target.begin() as conn:
        await conn.execute(delete(table).where(where))
        for row in found:
            await conn.execute(table.insert().values(**row._mapping))


async def test_a_tail_replaced_from_a_fork_head_and_all_is_detected(tmp_path: Path) -> None:
    a, b = await forked(tmp_path, tail=5)
    await replace_rows(a, b, audit_table, audit_table.c.seq > 10)
    await replace_rows(a, b, audit_writers_table, audit_writers_table.c.writer == "w1")
    result = await verify_chain(a, SECRET)  # every MAC and link checks out; the checkpoint does not
    await a.dispose()
    await b.dispose()
    assert [(p.kind, p.seq) for p in result.problems] == [("spliced", 15)]
    assert "is not the one checkpoint" in result.summary()


async def test_a_tail_replaced_from_a_fork_after_the_last_checkpoint_is_detected(tmp_path: Path) -> None:
    a, b = await forked(tmp_path, tail=5, checkpoint=False)
    await replace_rows(a, b, audit_table, audit_table.c.seq > 10)
    result = await verify_chain(a, SECRET)
    await a.dispose()
    await b.dispose()
    assert [p.kind for p in result.problems] == ["head"]


async def test_a_checkpoint_spliced_from_a_fork_is_detected(tmp_path: Path) -> None:
    a, b = await forked(tmp_path, tail=2)  # checkpoint 3 differs between the two
    await chain_of(a, 1, writer="w2")  # checkpoints 4 and 5 link to a's checkpoint 3
    await replace_rows(a, b, audit_checkpoints_table, audit_checkpoints_table.c.id == 3)
    result = await verify_chain(a, SECRET)
    await a.dispose()
    await b.dispose()
    assert ("(checkpoints)", "spliced", 4) in [(p.writer, p.kind, p.seq) for p in result.problems]


async def test_checkpoints_beyond_or_short_of_the_head_are_detected(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    await chain_of(engine, 3)
    await engine.dispose()
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    a, b = create_engine_for(url), create_engine_for(f"sqlite:///{tmp_path / 'b.db'}")
    head = (await rows(b))[-1]
    async with b.begin() as conn:
        await append_checkpoint(conn, KEY, "w1", 3, head.mac)  # checkpoint 3, only in the copy
    await replace_rows(a, b, audit_checkpoints_table, audit_checkpoints_table.c.id == 3)
    beyond = await verify_chain(a, SECRET)
    assert [p.detail for p in beyond.problems] == ["the last checkpoint does not match the checkpoint head"]
    async with a.begin() as conn:
        await conn.execute(delete(audit_checkpoints_table).where(audit_checkpoints_table.c.id >= 2))
    short = await verify_chain(a, SECRET)
    assert [p.detail for p in short.problems] == ["checkpoints 2-2 were removed from the end"]
    async with a.begin() as conn:
        await conn.execute(update(state_table).values(audit_head_mac="1" * 64))
    assert "checkpoint chain's head was altered" in (await verify_chain(a, SECRET)).summary()
    await a.dispose()
    await b.dispose()


async def test_altered_heads_and_foreign_records_are_detected(engine) -> None:
    await chain_of(engine, 3)
    async with engine.begin() as conn:
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1")
                           .values(head_mac="0" * 64))
    result = await verify_chain(engine, SECRET)
    assert [p.kind for p in result.problems] == ["head"] and "head was altered" in result.summary()
    async with engine.begin() as conn:  # the head's MAC covers its seq as well as its mac
        third = (await rows(engine))[2].mac
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1")
                           .values(head_mac=writer_head_mac(KEY, "w1", 3, third), seq=2))
    assert "head was altered" in (await verify_chain(engine, SECRET)).summary()
    await chain_of(engine, 1, writer="w2")
    async with engine.begin() as conn:
        await conn.execute(update(audit_table).where(audit_table.c.writer == "w2").values(writer="intruder"))
    assert "records of unknown writer intruder" in (await verify_chain(engine, SECRET)).summary()


async def test_a_whole_writer_removed_is_detected(engine) -> None:
    await chain_of(engine, 4, writer="w1")
    await chain_of(engine, 3, writer="w2")
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.writer == "w2"))
        await conn.execute(delete(audit_writers_table).where(audit_writers_table.c.writer == "w2"))
    result = await verify_chain(engine, SECRET)
    assert result.missing == 3 and "writer w2 is gone" in result.summary()


async def _wipe(engine, *, rewind_state: bool, keep_records: bool = False) -> None:
    async with engine.begin() as conn:
        if not keep_records:
            await conn.execute(delete(audit_table))
        await conn.execute(delete(audit_writers_table))
        await conn.execute(delete(audit_checkpoints_table))
        if rewind_state:
            await conn.execute(update(state_table).values(audit_seq=0))


# (rewind the counter and drop the head MAC as well: the state of a new database in full — the limit
# docs/gateway.md states; only a head noted elsewhere can show it)
@pytest.mark.parametrize(("rewind_state", "drop_head_mac"), [(False, False), (True, False), (False, True)])
async def test_a_log_wiped_back_to_a_new_database_is_detected(engine, rewind_state: bool,
                                                             drop_head_mac: bool) -> None:
    """Writer and checkpoint rows are no proof that a log never existed: whoever deletes the records
    deletes those too (and rewinds og_state's counter). Red team: "intact (0 records)", exit 0."""
    await chain_of(engine, 5, writer="w1")
    await chain_of(engine, 3, writer="w2")
    await _wipe(engine, rewind_state=rewind_state)
    if drop_head_mac:
        async with engine.begin() as conn:
            await conn.execute(update(state_table).values(audit_head_mac=None))
    result = await verify_chain(engine, SECRET)
    assert not result.intact and "checkpoint" in result.summary(), result.summary()


async def test_records_left_without_their_writers_and_checkpoints_are_not_vouched_for(engine) -> None:
    await chain_of(engine, 6, writer="w1")
    async with engine.begin() as conn:
        await conn.execute(update(audit_table).where(audit_table.c.seq == 2).values(status=403))
        await conn.execute(delete(audit_table).where(audit_table.c.seq >= 5))
    await _wipe(engine, rewind_state=True, keep_records=True)
    async with engine.begin() as conn:
        await conn.execute(update(state_table).values(audit_head_mac=None))  # all that is left looks new
    result = await verify_chain(engine, SECRET)
    assert not result.intact and "records of unknown writer w1" in result.summary(), result.summary()


@pytest.mark.parametrize("cell", ["time = 'zz'", "latency_ms = 'x'", "mac = x'00ff'", "path = x'c3'"])
async def test_a_value_no_gateway_writes_is_an_edit_not_a_crash(sqlite_engine, cell: str) -> None:
    """SQLite keeps whatever an UPDATE stores; verify must say the log was altered (exit 1), not stop
    with an error (exit 2) that leaves a deletion next to it unreported."""
    await chain_of(sqlite_engine, 12)
    async with sqlite_engine.begin() as conn:
        await conn.exec_driver_sql(f"UPDATE og_audit_records SET {cell} WHERE seq = 3")
        await conn.execute(delete(audit_table).where(audit_table.c.seq.between(6, 9)))
    result = await verify_chain(sqlite_engine, SECRET)
    assert not result.intact and "no gateway writes" in result.summary(), result.summary()


async def test_checkpoint_chain_damage_is_detected(engine) -> None:
    await chain_of(engine, 3, writer="w1")
    await chain_of(engine, 3, writer="w2")
    async with engine.begin() as conn:
        await conn.execute(delete(audit_checkpoints_table).where(audit_checkpoints_table.c.id == 2))
    result = await verify_chain(engine, SECRET)
    assert [(p.writer, p.kind) for p in result.problems] == [("(checkpoints)", "missing")]


async def test_several_writers_verify_while_they_write(db_url: str, engine, tmp_path: Path) -> None:
    recorders = [Recorder(db_url, SECRET, spool_dir=tmp_path / "spool") for _ in range(2)]
    for r in recorders:
        await r.start()
    results = []
    for i in range(400):
        for n, r in enumerate(recorders):
            r.record(fields(i, request_id=f"{n}-{i}"))
        if i % 100 == 99:
            await asyncio.sleep(0.1)
            results.append(await verify_chain(engine, SECRET, page_size=7))
    for r in recorders:
        await r.close()
    assert all(r.intact for r in results), [r.summary() for r in results]
    final = await verify_chain(engine, SECRET)
    assert final.intact and final.count == 800 and final.writers == 2


async def test_an_old_head_whose_log_is_gone_is_reported_not_adopted(engine) -> None:
    """og_state holds an older release's head (forged here) but its og_audit_log is gone: the upgrade
    keeps that head as writer ~legacy's, and verify names both the bad head and the missing records.
    (Real old databases: tests/test_audit_legacy.py.)"""
    async with engine.begin() as conn:
        await conn.execute(update(state_table).values(audit_seq=5000, audit_mac="ab" * 32,
                                                      audit_head_mac="cd" * 32))
    await chain_of(engine, 3)
    result = await verify_chain(engine, SECRET)
    assert result.checkpoint_id == 5003 and result.missing == 5000, result.summary()
    assert "did not match its MAC when it was migrated" in result.summary()
    async with engine.begin() as conn:  # later, every checkpoint removed: never adopted as a new start
        await conn.execute(delete(audit_checkpoints_table))
    await chain_of(engine, 1, writer="w2")
    assert "checkpoints" in (await verify_chain(engine, SECRET)).summary()


# --- prune ------------------------------------------------------------------------------------------


async def test_prune_keeps_the_chain_verifiable(engine) -> None:
    await chain_of(engine, 10, writer="w1")
    await chain_of(engine, 10, writer="w1", start=10)
    await chain_of(engine, 5, writer="w2")
    pruned = await prune_before(engine, SECRET, T0 + timedelta(seconds=7))
    assert pruned.records == 7 + 5  # w1's records 0-6; all of w2's
    result = await verify_chain(engine, SECRET)
    assert result.intact and result.count == 13, result.summary()
    assert (await rows(engine, "w1"))[0].seq == 8
    again = await prune_before(engine, SECRET, T0 + timedelta(seconds=7))
    assert again.records == 0 and (await verify_chain(engine, SECRET)).intact
    # the base anchor is checked: removing the first kept record, or moving the base, shows
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.writer == "w1", audit_table.c.seq == 8))
    assert (await verify_chain(engine, SECRET)).missing == 1


async def test_prune_keeps_the_checkpoints_a_writer_still_needs(engine) -> None:
    later = datetime.now(UTC) + timedelta(days=2)  # records newer than the cutoff, checkpoints older
    await store_records(engine, SECRET, [fields(i, time=later.timestamp() + i) for i in range(5)],
                        writer="w1")
    await chain_of(engine, 3, writer="w2")
    pruned = await prune_before(engine, SECRET, datetime.now(UTC) + timedelta(days=1))
    assert pruned.records == 3 and (await verify_chain(engine, SECRET)).intact
    survivors = await rows(engine, "w1")
    async with engine.begin() as conn:  # a cut-off tail with its head rewritten is still caught
        await conn.execute(delete(audit_table).where(audit_table.c.writer == "w1", audit_table.c.seq > 3))
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1").values(
            seq=3, mac=survivors[2].mac, head_mac=writer_head_mac(KEY, "w1", 3, survivors[2].mac)))
    assert (await verify_chain(engine, SECRET)).missing == 2


async def test_prune_cannot_hide_a_moved_base(engine) -> None:
    await chain_of(engine, 10)
    await prune_before(engine, SECRET, T0 + timedelta(seconds=3))
    async with engine.begin() as conn:
        await conn.execute(delete(audit_table).where(audit_table.c.seq <= 6))
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == "w1")
                           .values(base_seq=6))
    result = await verify_chain(engine, SECRET)
    assert not result.intact and "prune anchor was altered" in result.summary()


async def test_prune_refuses_a_broken_log(sqlite_engine) -> None:
    await chain_of(sqlite_engine, 5)
    async with sqlite_engine.begin() as conn:
        await conn.execute(update(audit_table).where(audit_table.c.seq == 2).values(tokens=0))
    with pytest.raises(PruneRefused, match="nothing pruned"):
        await prune_before(sqlite_engine, SECRET, T0 + timedelta(days=1))
    assert len(await rows(sqlite_engine)) == 5


async def test_tail_and_follow(sqlite_engine) -> None:
    await chain_of(sqlite_engine, 5)
    assert [r.seq async for r in tail(sqlite_engine, 2)] == [4, 5]
    seen: list[int] = []

    async def follow() -> None:
        async for item in tail(sqlite_engine, 1, follow=True, poll_interval=0.05):
            seen.append(item.seq or 0)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await chain_of(sqlite_engine, 2, start=5)
    await asyncio.wait_for(task, 5)
    assert seen == [5, 6, 7]


def test_audit_record_json_has_writer_and_count() -> None:
    doc = AuditRecord(writer="w", seq=3, count=4).to_json()
    assert (doc["writer"], doc["seq"], doc["count"]) == ("w", 3, 4)


# --- the commands -----------------------------------------------------------------------------------


def test_logs_verify_tail_and_prune_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.delenv("OLLAMA_GUARD_DB", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    code, _, err = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 2 and "no gateway database" in err
    secret = load_server_secret(type("C", (), {"db": db, "secret_file": None})())

    async def fill() -> None:
        engine = create_engine_for(db)
        await init_schema(engine)
        await store_records(engine, secret, [fields(i) for i in range(6)], writer="w1")
        await engine.dispose()

    asyncio.run(fill())
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert (code, out) == (0, "intact (6 records, 1 writer)\n")
    code, out, _ = run_cli(capsys, "logs", "tail", "-n", "2", "--format", "json", "--db", db)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(x["writer"], x["seq"]) for x in lines] == [("w1", 5), ("w1", 6)]
    code, out, _ = run_cli(capsys, "logs", "prune", "--before", "yesterday", "--db", db)
    assert code == 2
    code, out, _ = run_cli(capsys, "logs", "prune", "--before", "2026-11-30T12:00:03Z", "--db", db)
    assert code == 0 and out.startswith("pruned 3 records")
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert (code, out) == (0, "intact (3 records, 1 writer)\n")

    async def tamper() -> None:
        engine = create_engine_for(db)
        async with engine.begin() as conn:
            await conn.execute(delete(audit_table).where(audit_table.c.seq == 5))
        await engine.dispose()

    asyncio.run(tamper())
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 1 and out.startswith("1 record missing from writer w1 between 2026-11-30T12:00:03.000123Z")
    code, out, _ = run_cli(capsys, "logs", "prune", "--before", "2026-12-01", "--db", db)
    assert code == 1 and "not intact, nothing pruned" in out
