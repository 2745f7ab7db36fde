"""Readers that follow the audit log as it is written: `logs tail -f`, watch's audit-db source and the
console's live view. None may skip or repeat a record — in particular when, on PostgreSQL, a writer's
rows take lower ids than another writer's but commit after them (ids are drawn at insert time)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ollama_guard.gateway.audit import AuditRecord, tail
from ollama_guard.gateway.audit.chain import append_records, register_writer
from ollama_guard.gateway.audit.follow import Cursor, Follower
from ollama_guard.gateway.audit.prune import prune_before
from ollama_guard.gateway.console.queries import AuditFilter, audit_follow, audit_page
from ollama_guard.gateway.db import audit_table, create_engine_for, immediate, init_schema
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key
from ollama_guard.watch.auditdb import AuditFollower
from support.audit import store_records
from support.pg_redis import pg_url, postgres_server  # noqa: F401

SECRET = b"f" * 48
KEY = derive_key(SECRET, PURPOSE_AUDIT_MAC)


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


def records(writer: str, first: int, n: int, decision: str = "allow") -> list[AuditRecord]:
    return [AuditRecord(client="10.0.0.9", method="GET", path=f"/api/{writer}/{i}", status=200,
                        decision=decision, reason="ok") for i in range(first, first + n)]


async def open_writer(engine: Any, writer: str) -> None:
    await store_records(engine, SECRET, [], writer=writer, close=False)


class Readers:
    """The three followers, started from now, each collecting the paths it hands on."""

    def __init__(self, engine: Any, url: str) -> None:
        self.engine, self.url = engine, url
        self.seen: dict[str, list[str]] = {"tail": [], "watch": [], "console": []}
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        async def follow_tail() -> None:
            async for record in tail(self.engine, 0, follow=True, poll_interval=0.05):
                self.seen["tail"].append(record.path)

        async def follow_console() -> None:
            flt = AuditFilter(decision="allow")
            _, token = await audit_page(self.engine, flt)
            cursor = Cursor.decode(token)
            assert cursor is not None
            while not self.stop.is_set():
                rows, cursor = await audit_follow(self.engine, flt, cursor, limit=3)  # small pages too
                cursor = Cursor.decode(cursor.encode())  # resumed from its text each time, as a browser would
                assert cursor is not None
                self.seen["console"].extend(r["path"] for r in rows)
                await asyncio.sleep(0.05)

        watcher = AuditFollower(self.url, poll=0.05)
        self.tasks = [
            asyncio.create_task(follow_tail()),
            asyncio.create_task(follow_console()),
            asyncio.create_task(watcher.run(lambda evs: self.seen["watch"].extend(e.path for e in evs),
                                            lambda _msg: None, self.stop)),
        ]
        await asyncio.sleep(0.3)  # every reader has taken its starting point

    async def wait_for(self, paths: set[str], within: float = 8.0) -> None:
        deadline = time.monotonic() + within
        while not all(paths <= set(seen) for seen in self.seen.values()):
            assert time.monotonic() < deadline, {k: sorted(paths - set(v)) for k, v in self.seen.items()}
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def followed(engine: Any, url: str, scenario: Callable[[Readers], Awaitable[set[str]]]) -> Readers:
    readers = Readers(engine, url)
    await readers.start()
    try:
        expected = await scenario(readers)
        await readers.wait_for(expected)
        await asyncio.sleep(0.3)  # and nothing more (no repeats) comes
        for name, seen in readers.seen.items():
            assert sorted(seen) == sorted(expected), name
    finally:
        await readers.close()
    return readers


async def test_rows_committed_out_of_id_order_are_neither_skipped_nor_repeated(pg_url: str) -> None:  # noqa: F811
    engine = create_engine_for(pg_url)
    await init_schema(engine)
    await open_writer(engine, "A")
    await open_writer(engine, "B")

    async def scenario(readers: Readers) -> set[str]:
        async with engine.connect() as a, engine.connect() as b:
            slow = await a.begin()  # A inserts first (lower ids) but commits last
            head = await register_writer(a, KEY, "A")
            await append_records(a, KEY, "A", head, [(head[0] + i, 1, r) for i, r in
                                                   enumerate(records("A", 0, 5), 1)])
            async with b.begin():
                head_b = await register_writer(b, KEY, "B")
                await append_records(b, KEY, "B", head_b, [(head_b[0] + i, 1, r) for i, r in
                                                         enumerate(records("B", 0, 5), 1)])
            await readers.wait_for({f"/api/B/{i}" for i in range(5)})  # every reader is past A's ids
            await slow.commit()
        async with engine.connect() as conn:
            ids = dict((await conn.execute(select(audit_table.c.path, audit_table.c.id))).all())
        assert max(ids[f"/api/A/{i}"] for i in range(5)) < min(ids[f"/api/B/{i}"] for i in range(5))
        return {f"/api/{w}/{i}" for w in "AB" for i in range(5)}

    try:
        await followed(engine, pg_url, scenario)
    finally:
        await engine.dispose()


async def test_new_closing_and_reopened_writers_are_followed(engine, db_url: str) -> None:
    await open_writer(engine, "A")
    await store_records(engine, SECRET, records("C", 0, 2), writer="C")  # closed before the readers start

    async def scenario(readers: Readers) -> set[str]:
        # between checkpoints (a writer anchors its head about once a second): followed by its head
        await store_records(engine, SECRET, records("A", 0, 4), writer="A", close=False, checkpoint=False)
        await readers.wait_for({f"/api/A/{i}" for i in range(4)})
        await store_records(engine, SECRET, records("N", 0, 3), writer="N", close=True)  # new and done
        await store_records(engine, SECRET, records("A", 4, 7), writer="A", close=True)  # 7 > a page of 3
        await store_records(engine, SECRET, records("C", 2, 2), writer="C")  # a closed writer writes again
        await store_records(engine, SECRET, records("D", 0, 2, decision="deny"), writer="A2", close=False)
        return ({f"/api/A/{i}" for i in range(11)} | {f"/api/N/{i}" for i in range(3)}
                | {"/api/C/2", "/api/C/3"})

    readers = Readers(engine, db_url)
    await readers.start()
    try:
        expected = await scenario(readers)
        denied = {"/api/D/0", "/api/D/1"}  # the console's filter (allow) leaves these out, the others don't
        await readers.wait_for(expected)
        deadline = time.monotonic() + 5
        while not (denied <= set(readers.seen["tail"]) and denied <= set(readers.seen["watch"])):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sorted(readers.seen["console"]) == sorted(expected)
        for name in ("tail", "watch"):
            assert sorted(readers.seen[name]) == sorted(expected | denied), name
    finally:
        await readers.close()


async def test_rows_after_a_prune_that_emptied_the_log_are_followed(tmp_path: Path) -> None:
    """SQLite hands out max(id) + 1: once prune removed the newest rows, new rows get ids a reader that
    follows ids has already passed."""
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    await store_records(engine, SECRET, records("old", 0, 6), writer="old")

    async def scenario(readers: Readers) -> set[str]:
        from datetime import UTC, datetime, timedelta

        await prune_before(engine, SECRET, datetime.now(UTC) + timedelta(days=1))
        await store_records(engine, SECRET, records("new", 0, 3), writer="new")
        async with engine.connect() as conn:
            assert (await conn.execute(select(audit_table.c.id))).scalars().all() == [1, 2, 3]
        return {f"/api/new/{i}" for i in range(3)}

    try:
        await followed(engine, url, scenario)
    finally:
        await engine.dispose()


async def test_watch_from_start_reads_the_history_then_follows(engine, db_url: str) -> None:
    await store_records(engine, SECRET, records("H", 0, 5), writer="H")
    await open_writer(engine, "L")
    await store_records(engine, SECRET, records("L", 0, 2), writer="L", close=False)
    seen: list[str] = []
    stop = asyncio.Event()
    task = asyncio.create_task(AuditFollower(db_url, from_start=True, poll=0.05).run(
        lambda evs: seen.extend(e.path for e in evs), lambda _m: None, stop))
    try:
        deadline = time.monotonic() + 5
        while len(seen) < 7:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
        await store_records(engine, SECRET, records("L", 2, 2), writer="L", close=False)
        while len(seen) < 9:
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        assert sorted(seen) == sorted([f"/api/H/{i}" for i in range(5)] + [f"/api/L/{i}" for i in range(4)])
    finally:
        stop.set()
        await task
    once: list[str] = []
    await AuditFollower(db_url).run(lambda evs: once.extend(e.path for e in evs), lambda _m: None,
                                    asyncio.Event(), follow=False)
    assert sorted(once) == sorted(seen)


async def test_an_older_releases_log_migrated_meanwhile_is_history_not_news(tmp_path: Path) -> None:
    import shutil

    from test_audit_legacy import DATA
    from test_audit_legacy import SECRET as OLD_SECRET

    shutil.copy(DATA / "guard.db", tmp_path / "guard.db")
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)

    async def scenario(readers: Readers) -> set[str]:
        await store_records(engine, OLD_SECRET, records("new", 0, 2), writer="new")  # migrates first
        return {"/api/new/0", "/api/new/1"}

    try:
        await followed(engine, url, scenario)
    finally:
        await engine.dispose()


def test_cursor_text_round_trips_and_refuses_anything_else() -> None:
    cursor = Cursor(41, {"host-1-ab12": 7, "w.2": 0})
    assert Cursor.decode(cursor.encode()) == cursor and cursor.encode() == "c41|host-1-ab12:7|w.2:0"
    assert Cursor.decode("c0") == Cursor(0, {})
    for bad in ("", "41", "c", "c-1", "cx|w:1", "c1|w", "c1|:3", "c1|w:-3", "c1|w w:3", "c1|w:3|",
                "c1|" + "|".join(f"w{i}:1" for i in range(300)), "c1|" + "x" * 65 + ":1", "c1" + "0" * 20):
        assert Cursor.decode(bad) is None, bad


async def test_a_follower_hands_on_each_row_once_in_id_order(engine) -> None:
    await open_writer(engine, "A")
    await open_writer(engine, "B")
    follower = Follower(engine, limit=2)
    assert await follower.poll() == []
    await store_records(engine, SECRET, records("B", 0, 1), writer="B", close=False)
    await store_records(engine, SECRET, records("A", 0, 3), writer="A", close=False)
    got = await follower.poll() + await follower.poll()
    assert [r.path for r in got] == ["/api/B/0", "/api/A/0", "/api/A/1", "/api/A/2"]
    assert await follower.poll() == []


async def test_logs_tail_follow_on_postgres_sees_a_late_commit(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    """`logs tail -f --format json` in its own process, as a user runs it."""
    env = {**os.environ, "OLLAMA_GUARD_SECRET": SECRET.decode(), "OLLAMA_GUARD_HOME": str(tmp_path / "home")}
    engine = create_engine_for(pg_url)
    await init_schema(engine)
    await open_writer(engine, "A")
    await open_writer(engine, "B")
    await store_records(engine, SECRET, records("P", 0, 1), writer="P")
    command = ["logs", "tail", "-n", "1", "-f", "--format", "json", "--db", pg_url]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ollama_guard", *command, env=env,
                                                stdout=subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with engine.connect() as a:
            slow = await a.begin()  # A's row takes its id first ...
            head = await register_writer(a, KEY, "A")
            await append_records(a, KEY, "A", head, [(1, 1, records("A", 0, 1)[0])])
            first = await asyncio.wait_for(proc.stdout.readline(), 20)  # the tail is running
            assert json.loads(first)["path"] == "/api/P/0"
            async with immediate(engine).begin() as b:  # ... B's commits first ...
                head_b = await register_writer(b, KEY, "B")
                await append_records(b, KEY, "B", head_b, [(1, 1, records("B", 0, 1)[0])])
            lines.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 10)))
            await slow.commit()  # ... and A's after the tail printed B's
        lines.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 10)))
    finally:
        proc.terminate()
        await proc.wait()
        await engine.dispose()
    assert [x["path"] for x in lines] == ["/api/B/0", "/api/A/0"]
    assert lines[0]["id"] > lines[1]["id"]  # printed as committed, not skipped for its lower id


async def run_stream(
    engine: Any, query: dict[str, str], headers: dict[bytes, bytes], during: Callable[[], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, Any]]:
    """The console's /audit/stream handler for about a second; its events as (id, data) dicts."""
    from types import SimpleNamespace

    from ollama_guard.gateway.console import pages_audit

    monkeypatch.setattr(pages_audit, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(pages_audit, "STREAM_SECONDS", 0.9)
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message.get("body", b""))

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    facts = SimpleNamespace(request_id="r", status=0, started_response=False, bytes_out=0)
    ctx = SimpleNamespace(request=SimpleNamespace(query=query, headers=headers), facts=facts,
                          audit=lambda *_a, **_k: None)
    app = SimpleNamespace(deps=SimpleNamespace(engine=engine))
    task = asyncio.create_task(pages_audit.stream(app, ctx, send, receive))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    await during()
    await task
    events = []
    for block in b"".join(sent).decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "audit":
            events.append({"id": fields.get("id"), **json.loads(fields["data"])})
    return events


async def test_the_console_stream_resumes_from_its_last_event_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    await open_writer(engine, "A")
    await store_records(engine, SECRET, records("A", 0, 2), writer="A", close=False)
    try:
        async def write(first: int) -> None:
            await store_records(engine, SECRET, records("A", first, 3), writer="A", close=False)

        live = await run_stream(engine, {"after": "17"}, {}, lambda: write(2), monkeypatch)  # an old row id
        assert [e["path"] for e in live] == ["/api/A/2", "/api/A/3", "/api/A/4"]  # from now: not 0, 1
        assert [e["id"] is not None for e in live] == [False, False, True]  # the cursor rides on the last
        resume = live[-1]["id"]
        await write(5)  # while the browser was away
        again = await run_stream(engine, {"after": "c0"}, {b"last-event-id": resume.encode()},
                                 lambda: write(8), monkeypatch)
        assert [e["path"] for e in again] == [f"/api/A/{i}" for i in range(5, 11)]
        denied = await run_stream(engine, {"decision": "deny"}, {b"last-event-id": resume.encode()},
                                  lambda: write(11), monkeypatch)
        assert denied == []
    finally:
        await engine.dispose()
