"""Upgrading from the single-chain audit log of older releases (``og_audit_log``).

The databases here were written by an older release itself (tests/data/legacy_audit: its gateway,
its keys, real requests; see the README there). ``logs verify`` must prove that history — before the
upgrade, after the pipeline migrated it into writer ``~legacy``, and after a development build of the
pipeline started the checkpoint chain at its head without migrating it — and name every edit, deletion
and cut-off tail by the old record number.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, inspect, select, update

from ollama_guard.gateway.audit import AuditRecord, read_records, verify_chain
from ollama_guard.gateway.audit.chain import (
    CHECKPOINT_WRITER,
    append_checkpoint,
    base_anchor_mac,
    now_naive,
    writer_head_mac,
)
from ollama_guard.gateway.audit.legacy import (
    _FIELDS,
    LEGACY_WRITER,
    legacy_canonical,
    legacy_table,
    migrate_legacy_log,
)
from ollama_guard.gateway.audit.prune import prune_before
from ollama_guard.gateway.audit.record import row_values
from ollama_guard.gateway.audit.verify import Problem, _check_legacy_anchor
from ollama_guard.gateway.db import (
    GENESIS_MAC,
    audit_checkpoints_table,
    audit_table,
    audit_writers_table,
    create_engine_for,
    init_schema,
    state_table,
)
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key
from support.audit import store_records
from support.cli import run_cli
from support.pg_redis import pg_url, postgres_server  # noqa: F401

DATA = Path(__file__).parent / "data" / "legacy_audit"
FIXTURE = json.loads((DATA / "rows.json").read_text())
SECRET = FIXTURE["secret"].encode()
KEY = derive_key(SECRET, PURPOSE_AUDIT_MAC)
OLD = len(FIXTURE["rows"])  # 28
HEAD = FIXTURE["state"]
UPGRADE = "from before the upgrade, writer ~legacy"


def new_records(n: int) -> list[AuditRecord]:
    return [AuditRecord(client="10.0.0.1", method="GET", path="/api/tags", status=200, decision="allow",
                        reason="ok", request_id=f"new-{i}") for i in range(n)]


async def load_postgres(url: str) -> None:
    """The old release's tables on PostgreSQL: og_state (same definition then) and og_audit_log, with
    the rows and head that release wrote (rows.json)."""
    engine = create_engine_for(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: (state_table.create(sync), legacy_table.create(sync)))
        await conn.execute(insert(state_table).values(id=1, key_generation=0, **HEAD))
        rows = [{**r, "time": datetime.fromisoformat(r["time"])} for r in FIXTURE["rows"]]
        await conn.execute(insert(legacy_table), rows)
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database exactly as the older release left it (not upgraded)."""
    if request.param == "sqlite":
        shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
        return f"sqlite:///{tmp_path / 'guard.db'}"
    url = str(request.getfixturevalue("pg_url"))
    asyncio.run(load_postgres(url))
    return url


async def edit(url: str, table: Any, seq: int, **values: Any) -> None:
    engine = create_engine_for(url)
    async with engine.begin() as conn:
        where = [table.c.seq == seq] + ([table.c.writer == LEGACY_WRITER] if table is audit_table else [])
        if values:
            await conn.execute(update(table).where(*where).values(**values))
        else:
            await conn.execute(delete(table).where(*where))
    await engine.dispose()


async def verify(url: str) -> Any:
    engine = create_engine_for(url)
    try:
        return await verify_chain(engine, SECRET)
    finally:
        await engine.dispose()


async def start_pipeline(url: str, n: int = 3, writer: str = "w1") -> None:
    """What `serve` does on its first start after the upgrade: create the new tables, register a
    writer (which migrates the old log), write a few records."""
    engine = create_engine_for(url)
    await init_schema(engine)
    await store_records(engine, SECRET, new_records(n), writer=writer)
    await engine.dispose()


def test_the_old_canonical_form_is_the_old_releases() -> None:
    """Every record of the fixture — non-ASCII, an escaped NUL, quotes, a rounded latency — has the MAC
    the old release computed, from today's reimplementation of its canonical form."""
    import hmac

    prev = "0" * 64
    for row in FIXTURE["rows"]:
        stored = SimpleNamespace(_mapping={}, **{**row, "time": datetime.fromisoformat(row["time"])})
        values = row_values(stored)
        data = prev.encode() + b"\n" + legacy_canonical(row["seq"], values)
        assert hmac.digest(KEY, data, "sha256").hex() == row["mac"], row["seq"]
        prev = row["mac"]
    assert set(_FIELDS) | {"seq", "time", "latency_ms", "prev_mac", "mac"} == set(FIXTURE["rows"][0])


async def test_an_old_database_verifies_and_names_a_tampered_row_before_the_upgrade(old_db: str) -> None:
    result = await verify(old_db)
    assert result.intact and (result.count, result.legacy) == (OLD, OLD), result.summary()
    assert result.summary() == f"intact ({OLD} records, 1 writer; {OLD} {UPGRADE})"
    await edit(old_db, legacy_table, 9, tokens=999)
    result = await verify(old_db)
    assert [(p.kind, p.seq) for p in result.problems] == [("edited", 9)]
    assert "writer ~legacy: record 9 does not match its MAC" in result.summary()


async def test_an_old_head_that_was_edited_is_named(old_db: str) -> None:
    await edit(old_db, legacy_table, OLD)  # the tail cut off ...
    result = await verify(old_db)
    assert result.missing == 1 and f"seq {OLD}: cut off the end" in result.summary()
    engine = create_engine_for(old_db)  # ... and the head moved back to match it (without the secret)
    async with engine.begin() as conn:
        prev = (await conn.execute(select(legacy_table.c.mac).where(legacy_table.c.seq == OLD - 1))).scalar()
        await conn.execute(update(state_table).values(audit_seq=OLD - 1, audit_mac=prev))
    await engine.dispose()
    assert "the old log's head does not match its MAC" in (await verify(old_db)).summary()
    await start_pipeline(old_db)  # the upgrade keeps the finding: it does not launder a forged head
    assert "did not match its MAC when it was migrated" in (await verify(old_db)).summary()


async def test_the_first_start_migrates_the_old_log_into_writer_legacy(
    old_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollama_guard.gateway.audit import legacy

    monkeypatch.setattr(legacy, "MIGRATE_BATCH", 5)  # in several statements (one transaction)
    await start_pipeline(old_db)
    result = await verify(old_db)
    assert result.intact, result.summary()
    assert (result.count, result.writers, result.legacy) == (OLD + 3, 2, OLD)
    engine = create_engine_for(old_db)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            assert "og_audit_log" not in tables  # moved, not copied
            legacy = (await conn.execute(select(audit_writers_table).where(
                audit_writers_table.c.writer == LEGACY_WRITER))).one()
            base = (await conn.execute(select(audit_writers_table).where(
                audit_writers_table.c.writer == CHECKPOINT_WRITER))).one()
            anchor = (await conn.execute(select(audit_checkpoints_table).where(
                audit_checkpoints_table.c.writer == LEGACY_WRITER))).one()
        # the checkpoint chain starts at the old head, and a checkpoint anchors ~legacy's head
        assert (legacy.seq, legacy.mac, legacy.closed) == (OLD, HEAD["audit_mac"], True)
        assert (base.base_seq, base.base_mac) == (OLD, HEAD["audit_mac"])
        assert (anchor.id, anchor.writer_seq, anchor.writer_mac, anchor.prev_mac) == (
            OLD + 1, OLD, HEAD["audit_mac"], HEAD["audit_mac"])
        records = await read_records(engine)  # one table for every reader, old records first
        assert [r.id for r in records[:OLD]] == list(range(-OLD, 0))
        assert [(r.writer, r.seq) for r in records[:2]] == [(LEGACY_WRITER, 1), (LEGACY_WRITER, 2)]
        assert [r.request_id for r in records[OLD:]] == ["new-0", "new-1", "new-2"]
        assert records[1].reason == "bad-key" and records[-3].id >= 0  # SQLite: max(rowid) + 1
    finally:
        await engine.dispose()
    await start_pipeline(old_db, writer="w2")  # later writers do not migrate again
    assert (await verify(old_db)).legacy == OLD


async def test_tampering_with_migrated_records_is_named_by_old_record_number(old_db: str) -> None:
    await start_pipeline(old_db)
    await edit(old_db, audit_table, 9, tokens=999)
    await edit(old_db, audit_table, 12)
    await edit(old_db, audit_table, 20, count=7)  # not covered by the old MAC: refused on sight
    result = await verify(old_db)
    assert [(p.writer, p.kind, p.seq) for p in result.problems] == [
        (LEGACY_WRITER, "edited", 9), (LEGACY_WRITER, "missing", 12), (LEGACY_WRITER, "edited", 20)]
    assert "1 record missing from writer ~legacy between" in result.summary()
    assert "record 20 has a count the old log never had" in result.summary()


async def test_a_cut_off_migrated_tail_is_caught_by_its_checkpoint(old_db: str) -> None:
    await start_pipeline(old_db)
    engine = create_engine_for(old_db)
    async with engine.begin() as conn:  # cut the last two and rewrite ~legacy's head (with the key, even)
        await conn.execute(delete(audit_table).where(audit_table.c.writer == LEGACY_WRITER,
                                                     audit_table.c.seq > OLD - 2))
        prev = (await conn.execute(select(audit_table.c.mac).where(
            audit_table.c.writer == LEGACY_WRITER, audit_table.c.seq == OLD - 2))).scalar()
        await conn.execute(update(audit_writers_table).where(audit_writers_table.c.writer == LEGACY_WRITER)
                           .values(seq=OLD - 2, mac=prev,
                                   head_mac=writer_head_mac(KEY, LEGACY_WRITER, OLD - 2, prev)))
    await engine.dispose()
    result = await verify(old_db)
    assert result.missing == 2 and f"checkpoint {OLD + 1} recorded record {OLD}" in result.summary()


async def test_prune_trims_the_old_records_too_and_keeps_them_verifiable(old_db: str) -> None:
    await start_pipeline(old_db)
    seventh = datetime.fromisoformat(FIXTURE["rows"][7]["time"])  # records 1-7 are older than this
    engine = create_engine_for(old_db)
    try:
        pruned = await prune_before(engine, SECRET, seventh)
        assert pruned.records == 7
        result = await verify_chain(engine, SECRET)
        assert result.intact and result.legacy == OLD - 7, result.summary()
        async with engine.begin() as conn:  # the first kept old record, deleted: named
            await conn.execute(delete(audit_table).where(audit_table.c.writer == LEGACY_WRITER,
                                                         audit_table.c.seq == 8))
        assert (await verify_chain(engine, SECRET)).problems[0].seq == 8
    finally:
        await engine.dispose()


async def early_build_start(url: str) -> None:
    """What the first build of the pipeline did (commit 739a213): the checkpoint chain starts at the
    old head as a pruned base, og_audit_log stays where it is, unread."""
    engine = create_engine_for(url)
    await init_schema(engine)
    async with engine.begin() as conn:
        now = now_naive()
        await conn.execute(insert(audit_writers_table).values(
            writer=CHECKPOINT_WRITER, started=now, updated=now, seq=0, mac=GENESIS_MAC, head_mac="-",
            closed=True, base_seq=OLD, base_mac=HEAD["audit_mac"], base_time=now,
            base_anchor_mac=base_anchor_mac(KEY, CHECKPOINT_WRITER, OLD, HEAD["audit_mac"])))
        await conn.execute(insert(audit_writers_table).values(
            writer="early", started=now, updated=now, seq=0, mac=GENESIS_MAC,
            head_mac=writer_head_mac(KEY, "early", 0, GENESIS_MAC), closed=False, base_seq=0,
            base_mac=GENESIS_MAC))
        await append_checkpoint(conn, KEY, "early", 0, GENESIS_MAC)
    await store_records(engine, SECRET, new_records(2), writer="early")
    await engine.dispose()


async def test_a_database_an_early_build_upgraded_is_verified_then_migrated(old_db: str) -> None:
    await early_build_start(old_db)
    result = await verify(old_db)  # the old table, read where it is, against the checkpoint chain's start
    assert result.intact and (result.count, result.legacy) == (OLD + 2, OLD), result.summary()
    await edit(old_db, legacy_table, OLD)  # its last record removed: the checkpoint chain says it existed
    assert "1 record missing from writer ~legacy" in (await verify(old_db)).summary()


async def test_logs_migrate_after_an_early_build(old_db: str) -> None:
    await early_build_start(old_db)
    engine = create_engine_for(old_db)
    try:
        moved, checkpoint = await migrate_legacy_log(engine, SECRET)
        assert moved == OLD and checkpoint > OLD + 1
        assert await migrate_legacy_log(engine, SECRET) == (None, checkpoint)
        result = await verify_chain(engine, SECRET)
        assert result.intact and result.legacy == OLD and result.writers == 2, result.summary()
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.min(audit_table.c.id)))).scalar() == -OLD
    finally:
        await engine.dispose()


def test_the_legacy_anchor_check() -> None:
    head = SimpleNamespace(seq=28, mac="aa")
    problems: list[Problem] = []
    _check_legacy_anchor(head, SimpleNamespace(base_seq=28, base_mac="aa"), problems)
    _check_legacy_anchor(head, SimpleNamespace(base_seq=40, base_mac="bb"), problems)  # pruned past it
    _check_legacy_anchor(head, None, problems)
    assert problems == []
    _check_legacy_anchor(head, SimpleNamespace(base_seq=28, base_mac="bb"), problems)
    _check_legacy_anchor(head, SimpleNamespace(base_seq=27, base_mac="aa"), problems)
    assert [p.seq for p in problems] == [28, 28]


async def test_two_writers_starting_together_migrate_once(pg_url: str) -> None:  # noqa: F811
    await load_postgres(pg_url)
    engine = create_engine_for(pg_url)
    await init_schema(engine)
    try:
        await asyncio.gather(*(store_records(engine, SECRET, new_records(2), writer=f"w{i}")
                               for i in range(3)))
        result = await verify_chain(engine, SECRET)
        assert result.intact and (result.legacy, result.writers) == (OLD, 4), result.summary()
    finally:
        await engine.dispose()


def test_logs_commands_on_an_old_database(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", SECRET.decode())
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert (code, out) == (0, f"intact ({OLD} records, 1 writer; {OLD} {UPGRADE})\n")
    code, _, err = run_cli(capsys, "logs", "tail", "--db", db)
    assert code == 2 and "logs migrate" in err and "Traceback" not in err
    asyncio.run(edit(db, legacy_table, 5, tokens=12345))
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 1 and out == "writer ~legacy: record 5 does not match its MAC (edited)\n"
    asyncio.run(edit(db, legacy_table, 5, tokens=FIXTURE["rows"][4]["tokens"]))  # restored
    code, out, _ = run_cli(capsys, "logs", "migrate", "--db", db)
    assert code == 0 and out.startswith(f"migrated {OLD} records")
    code, out, _ = run_cli(capsys, "logs", "migrate", "--db", db)
    assert code == 0 and out.startswith("nothing to migrate")
    code, out, _ = run_cli(capsys, "logs", "tail", "-n", "2", "--format", "json", "--db", db)
    assert code == 0 and [json.loads(x)["seq"] for x in out.splitlines()] == [OLD - 1, OLD]
    eighth = FIXTURE["rows"][7]["time"].replace(" ", "T") + "Z"
    code, out, _ = run_cli(capsys, "logs", "prune", "--before", eighth, "--db", db)
    assert code == 0 and out.startswith("pruned 7 records"), out
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 0 and out.startswith(f"intact ({OLD - 7} records"), out
    asyncio.run(edit(db, audit_table, 11, tokens=5))
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 1 and "writer ~legacy: record 11 does not match its MAC" in out


def test_investigate_reads_the_migrated_records(tmp_path: Path) -> None:
    from ollama_guard.investigate.sources import audit_events

    shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    asyncio.run(start_pipeline(db))
    events = list(audit_events(db, None, page=10))
    assert len(events) == OLD + 3


async def test_prune_migrates_an_early_builds_database_first(old_db: str) -> None:
    await early_build_start(old_db)
    eighth = datetime.fromisoformat(FIXTURE["rows"][7]["time"])
    engine = create_engine_for(old_db)
    try:
        assert (await prune_before(engine, SECRET, eighth)).records == 7
        result = await verify_chain(engine, SECRET)
        assert result.intact and result.legacy == OLD - 7, result.summary()
    finally:
        await engine.dispose()


def test_the_console_pages_back_into_the_migrated_records() -> None:
    from ollama_guard.gateway.console.pages_audit import _filter

    assert [_filter({"before": b}).before_seq for b in ("-5", "0", "12", "x", "-", "--3", "")] == [
        -5, 0, 12, None, None, None, None]


async def test_a_new_database_whose_checkpoints_were_pruned_has_no_old_log(tmp_path: Path) -> None:
    """The checkpoint chain's prune base is not an old release's head: a writer that starts after a
    prune must not take it for one."""
    from datetime import UTC, timedelta

    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    try:
        await store_records(engine, SECRET, new_records(3), writer="w1")
        await store_records(engine, SECRET, new_records(2), writer="w2", close=False)
        pruned = await prune_before(engine, SECRET, datetime.now(UTC) + timedelta(days=1))
        assert pruned.checkpoints > 0
        await store_records(engine, SECRET, new_records(1), writer="w3")
        result = await verify_chain(engine, SECRET)
        assert result.intact and result.legacy == 0 and result.writers == 3, result.summary()
    finally:
        await engine.dispose()


def test_serve_migrates_an_old_database_on_its_first_start(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The upgrade as an operator does it: the new release's `serve` on the old database."""
    import urllib.error
    import urllib.request

    from support.gateway import start_gateway

    shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    env = {"OLLAMA_GUARD_SECRET": SECRET.decode()}
    with start_gateway(tmp_path / "gw", "http://127.0.0.1:9", db_url=db, env=env) as gw:
        for _ in range(3):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{gw.url}/api/tags", timeout=10)
            assert refused.value.code == 401
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", SECRET.decode())
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    code, out, _ = run_cli(capsys, "logs", "verify", "--db", db)
    assert code == 0 and out.startswith("intact (") and f"; {OLD} {UPGRADE})" in out, out
    code, out, _ = run_cli(capsys, "logs", "tail", "-n", "1000", "--format", "json", "--db", db)
    shown = [json.loads(x) for x in out.splitlines()]
    assert [(x["writer"], x["seq"]) for x in shown[:OLD]] == [(LEGACY_WRITER, i) for i in range(1, OLD + 1)]
    assert shown[OLD:] and all(x["reason"] == "no-key" and x["writer"] != LEGACY_WRITER for x in shown[OLD:])


def test_investigate_reads_an_old_database_with_the_ids_migration_gives(tmp_path: Path) -> None:
    from ollama_guard.investigate.sources import audit_events

    shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    before = [(e.line, e.path, e.status) for e in audit_events(db, None, page=5)]  # read-only, not migrated
    assert [line for line, _, _ in before] == list(range(-OLD, 0))
    since = datetime.fromisoformat(FIXTURE["rows"][20]["time"]).replace(tzinfo=UTC)
    assert len(list(audit_events(db, since, page=4))) == OLD - 20 - 2  # the two odd ones are older
    asyncio.run(start_pipeline(db))
    after = [(e.line, e.path, e.status) for e in audit_events(db, None, page=5)]
    assert after[:OLD] == before
