"""An answer is complete only once its audit record is on disk with `audit_sync = "answer"`:
with fsync held back in the gateway process, a keyed answer's last byte does not arrive, and it arrives
as soon as fsync returns; with `audit_sync = "interval"` it does not wait. A failed fsync withholds the
answer and refuses keyed requests until fsync works again; concurrent answers share one fsync."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.gateway.app import GatewayApp
from ollama_guard.gateway.audit import Recorder, RecordFields
from ollama_guard.gateway.audit.writer import Store
from ollama_guard.gateway.config import load_config
from ollama_guard.gateway.db import create_engine_for, init_schema
from ollama_guard.gateway.services import Services
from support.audit import MemoryAudit
from support.gateway import KeySpec, audit_rows, create_keys, start_gateway
from support.servers import DecoyProcess, start_decoy

SECRET = b"durable-test-secret-" * 2

# Loaded by the gateway process (and its writer) through PYTHONPATH: os.fsync blocks while FLAG exists.
SITECUSTOMIZE = """
import os, time
_flag = os.environ.get("OG_TEST_FSYNC_BLOCK")
if _flag:
    _real_fsync = os.fsync

    def _fsync(fd):
        while os.path.exists(_flag):
            time.sleep(0.005)
        return _real_fsync(fd)

    os.fsync = _fsync
"""


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), seed_models=1) as d:
        yield d


def http_get(host: str, port: int, path: str, key: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode())
    return sock


def complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    lines = head.lower().split(b"\r\n")
    length = [int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")]
    return bool(length) and len(body) >= length[0]


def read_for(sock: socket.socket, seconds: float, data: bytes = b"") -> bytes:
    """What arrives within `seconds`, until the answer is complete (the connection stays open)."""
    deadline = time.monotonic() + seconds
    while not complete(data) and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("mode", ["answer", "interval"])
def test_an_answer_is_complete_only_once_its_record_is_fsynced(
    decoy: DecoyProcess, tmp_path: Path, mode: str
) -> None:
    """`answer`: the last byte waits for the record's fsync. `interval` (numbers reserved 2 at a time
    here): answers within the durable reservation do not wait; the first one beyond it does."""
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("reader", "read")])
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    flag = tmp_path / "block-fsync"
    path = [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {"PYTHONPATH": os.pathsep.join(path), "OG_TEST_FSYNC_BLOCK": str(flag),
           "OLLAMA_GUARD_SHUTDOWN_DELAY": "0", "OLLAMA_GUARD_AUDIT_SYNC": mode,
           "OLLAMA_GUARD_AUDIT_RESERVE_AHEAD": "2"}

    def version() -> socket.socket:
        return http_get(gw.host, gw.port, "/api/version", keys["reader"])

    with start_gateway(tmp_path, decoy.url, db_url=db, env=env) as gw:
        with contextlib.closing(version()) as sock:
            assert complete(read_for(sock, 5))  # fsync works: the answer is there at once (record 1)
        flag.touch()  # from now on fsync blocks (in the gateway and in its writer process)
        try:
            if mode == "interval":
                with contextlib.closing(version()) as sock:
                    assert complete(read_for(sock, 5))  # record 2: reserved at start, no fsync needed
            with contextlib.closing(version()) as sock:
                early = read_for(sock, 1.5)  # answer: record 2; interval: record 3, beyond the reservation
                assert early.startswith(b"HTTP/1.1 200") and not complete(early), early
                flag.unlink()
                assert complete(read_for(sock, 5, early))  # fsync returned: the last byte follows
        finally:
            flag.unlink(missing_ok=True)
        gw.stop()
    answered = 3 if mode == "interval" else 2
    assert sum(r["path"] == "/api/version" and r["status"] == 200 for r in audit_rows(db)) == answered


# --- the recorder in this process -------------------------------------------------------------------


def fields(i: int) -> RecordFields:
    return RecordFields(1_790_000_000.0 + i, "0123456789abcdef", "k", "10.0.0.1", "GET", "/api/tags", None,
                        200, "allow", "ok", 0, 10, 0, 1.0, f"r{i}")


@pytest.fixture
async def recorder(tmp_path: Path) -> Any:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   sync_answers=True)
    await rec.start()
    yield rec
    await rec.close()


async def test_concurrent_answers_share_one_fsync(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.fsync

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.05)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    recorder.record(fields(0))
    assert await recorder.durable() and len(calls) == 1  # idle: fsync at once
    assert recorder.spool.synced == recorder.spool.written
    calls.clear()

    async def answer(i: int) -> bool:
        recorder.record(fields(i))
        return await recorder.durable()

    assert all(await asyncio.gather(*(answer(i) for i in range(1, 51))))
    assert 1 <= len(calls) <= 2, calls  # 50 answers, one group commit (two if one was under way)
    assert recorder.spool.synced == recorder.spool.written


async def test_a_record_spooled_during_an_fsync_waits_for_the_next_one(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    synced_at: list[int] = []
    real = os.fsync

    def held(fd: int) -> None:
        if threading.current_thread().name.startswith("og-audit-fsync"):
            synced_at.append(os.fstat(fd).st_size)
            entered.set()
            release.wait(5)
        real(fd)

    monkeypatch.setattr(os, "fsync", held)
    recorder.record(fields(1))
    first = asyncio.ensure_future(recorder.durable())
    assert await asyncio.to_thread(entered.wait, 5)
    recorder.record(fields(2))  # written while the fsync for record 1 is under way
    second = asyncio.ensure_future(recorder.durable())
    release.set()
    assert await first and await second
    assert len(synced_at) == 2 and synced_at[1] > synced_at[0]  # record 2 got an fsync of its own


async def test_under_load_an_fsync_waits_briefly_to_serve_more_answers(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real_fsync, real_sleep = os.fsync, asyncio.sleep
    gathered: list[float] = []

    def held(fd: int) -> None:
        if threading.current_thread().name.startswith("og-audit-fsync") and not release.is_set():
            entered.set()
            release.wait(5)
        real_fsync(fd)

    async def sleep(delay: float, *args: Any) -> Any:
        if delay == recorder.spool.gather:
            gathered.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(os, "fsync", held)
    monkeypatch.setattr(asyncio, "sleep", sleep)
    release.set()
    recorder.record(fields(1))
    assert await recorder.durable() and gathered == []  # idle: fsync at once
    release.clear()
    recorder.record(fields(2))
    first = asyncio.ensure_future(recorder.durable())
    assert await asyncio.to_thread(entered.wait, 5)
    recorder.record(fields(3))  # arrives while that fsync runs: the gateway is busy
    second = asyncio.ensure_future(recorder.durable())
    release.set()
    assert await first and await second
    assert gathered == [recorder.spool.gather]  # the next fsync waited for more answers to join
    recorder.record(fields(4))
    assert await recorder.durable() and len(gathered) == 1  # quiet again: at once


async def test_interval_mode_does_not_wait_for_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   sync_answers=False)
    await rec.start()
    try:
        calls: list[int] = []
        monkeypatch.setattr(os, "fsync", calls.append)
        rec.record(fields(1))
        assert await rec.durable() and calls == []
        assert rec.spool.synced < rec.spool.written
    finally:
        monkeypatch.undo()
        await rec.close()


async def test_a_failed_fsync_withholds_answers_until_fsync_works_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sync_answers in (True, False):
        rec = Recorder(f"sqlite:///{tmp_path / f'{sync_answers}.db'}", SECRET,
                       spool_dir=tmp_path / f"s{sync_answers}", sync_answers=sync_answers)
        await rec.start()
        try:
            real = os.fsync

            def broken(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(os, "fsync", broken)
            rec.record(fields(1))
            if sync_answers:
                assert not await rec.durable()  # the answer must not be completed
            else:
                with pytest.raises(Exception, match="Input/output"):  # an admin action is not forwarded
                    await rec.spool_before_forward(fields(2))
            assert not rec.accepting()  # keyed requests: 503
            assert not await rec.durable()  # every answer now retries the fsync, in either mode
            monkeypatch.setattr(os, "fsync", real)
            rec.record(fields(3))  # a 503's own record
            assert await rec.durable() and rec.accepting()  # fsync works again: back in service
            assert rec.stats()["dropped"] == 0  # nothing was lost: the records are spooled
        finally:
            monkeypatch.undo()
            await rec.close()


async def test_closing_the_spool_during_an_fsync_does_not_fail_it(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = os.fsync

    def held_in_the_fsync_thread(fd: int) -> None:
        if threading.current_thread().name.startswith("og-audit-fsync"):
            entered.set()
            release.wait(5)
        real(fd)

    monkeypatch.setattr(os, "fsync", held_in_the_fsync_thread)
    recorder.record(fields(1))
    waiting = asyncio.ensure_future(recorder.durable())
    assert await asyncio.to_thread(entered.wait, 5)
    recorder.spool.close()  # a shutdown (or a segment roll-over) closes the segment's fd meanwhile
    release.set()
    assert await waiting


async def test_the_writers_sqlite_commits_are_durable_before_it_deletes_segments(tmp_path: Path) -> None:
    # a segment is deleted once its records are committed: a commit a power loss could undo (SQLite's
    # synchronous=NORMAL in WAL mode, the gateway's other connections) would lose them
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    async with engine.connect() as conn:
        assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 1  # NORMAL
    await engine.dispose()
    store = Store(url)
    try:
        conn = await store.connection()
        async with conn.begin():
            assert (await conn.exec_driver_sql("PRAGMA synchronous")).scalar() == 2  # FULL
    finally:
        await store.close()


# --- the request path: a failed fsync means no complete answer ---------------------------------------


class FailingSync(MemoryAudit):
    async def durable(self) -> bool:
        return False


class NoKeys:
    async def authenticate(self, presented: str) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(("audit", "completed"), [(MemoryAudit(), True), (FailingSync(), False)])
async def test_the_last_message_waits_for_the_record_to_be_durable(
    audit: MemoryAudit, completed: bool
) -> None:
    config = load_config(None, {"upstream": "http://127.0.0.1:9"}, {})
    app = GatewayApp(config, Services(NoKeys(), None, audit))
    scope = {"type": "http", "method": "GET", "path": "/api/tags", "raw_path": b"/api/tags",
             "query_string": b"", "headers": [(b"authorization", b"Bearer nope")],
             "client": ("127.0.0.1", 1234)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 401
    assert len(audit.records) == 1
    last = [m for m in sent if m["type"] == "http.response.body" and not m.get("more_body")]
    assert bool(last) is completed
