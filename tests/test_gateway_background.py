"""The gateway's background database work: the audit writer and the key poller run in their own
threads, so neither a busy serving loop nor concurrent flushes break them."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_guard.gateway.audit import (
    AuditRecord,
    AuditWriter,
    QueuedRecord,
    _fast_canonical,
    _stored_values,
    canonical_bytes,
    normalise,
    read_records,
    verify_chain,
)
from ollama_guard.gateway.db import create_engine_for, init_schema
from ollama_guard.gateway.keys import KeyAuthenticator, KeyStore, Role
from ollama_guard.gateway.limits import StoreUnavailable

SECRET = b"b" * 48


@pytest.fixture
async def engine(tmp_path: Path):
    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    yield engine
    await engine.dispose()


def queued(i: int) -> QueuedRecord:
    return QueuedRecord(
        time.time(), "0123456789abcdef", "alice", "127.0.0.1", "GET", "/api/tags", None, 200, "allow",
        "ok", 0, 10, 0, 0.25, f"req-{i}",
    )


@pytest.mark.parametrize("threaded", [True, False], ids=["writer-thread", "serving-loop"])
async def test_flush_while_the_background_writer_runs_loses_and_repeats_nothing(
    engine, caplog, threaded: bool
) -> None:
    """Regression: flush() and the background writer used to write the same batch and then both
    pop it (`IndexError: pop from an empty deque`, duplicated rows)."""
    caplog.set_level(logging.ERROR)
    writer = AuditWriter(engine, SECRET, batch_size=50, flush_interval=0.001, threaded=threaded)
    await writer.start()
    try:
        for round_ in range(5):
            for i in range(400):
                writer.submit(queued(round_ * 400 + i))
            await asyncio.gather(writer.flush(), writer.flush(), asyncio.sleep(0.002))
            assert writer.backlog == 0
    finally:
        await writer.close()
    stored = await read_records(engine)
    assert [r.request_id for r in stored] == [f"req-{i}" for i in range(2000)]
    assert (await verify_chain(engine, SECRET)).intact
    assert "IndexError" not in caplog.text and writer.last_error is None


async def test_queued_tuples_are_stored_as_full_records(engine) -> None:
    writer = AuditWriter(engine, SECRET, flush_interval=10)
    await writer.start()
    stamp = time.time()
    writer.submit(queued(7)._replace(time=stamp, path="/api/x\x00y", decision="bogus", model="m:latest"))
    await writer.close()  # orderly shutdown writes what is queued
    [stored] = await read_records(engine)
    assert stored.request_id == "req-7" and stored.model == "m:latest" and stored.status == 200
    assert stored.decision == "deny" and "\x00" not in stored.path  # normalised in the writer thread
    assert abs(stored.time.timestamp() - stamp) < 1e-3
    assert (await verify_chain(engine, SECRET)).intact


async def test_a_busy_serving_loop_does_not_make_the_key_store_stale(engine) -> None:
    """A poll that could not run because the serving loop was busy is not a store failure."""
    _, token = await KeyStore(engine, SECRET).create("kim", Role.READ)
    auth = KeyAuthenticator(engine, SECRET, poll_interval=0.05, stale_after=0.6)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        time.sleep(1.2)  # noqa: ASYNC251 - the serving loop is blocked twice as long as the staleness bound
        assert await auth.authenticate(token) is not None
        assert auth.snapshot_age < 0.6
    finally:
        await auth.close()


async def test_an_unreachable_store_still_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "guard.db"
    engine = create_engine_for(f"sqlite:///{path}")
    await init_schema(engine)
    _, token = await KeyStore(engine, SECRET).create("lee", Role.READ)
    auth = KeyAuthenticator(engine, SECRET, poll_interval=0.05, stale_after=0.5)
    await auth.start()
    try:
        path.rename(tmp_path / "gone.db")
        path.mkdir()  # the database can no longer be opened
        time.sleep(0.8)  # noqa: ASYNC251 - with the serving loop blocked, the poller still sees the failures
        with pytest.raises(StoreUnavailable):
            await auth.authenticate(token)
    finally:
        await auth.close()
        await engine.dispose()


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=40),
    optional=st.one_of(st.none(), st.text(max_size=20)),
    number=st.integers(min_value=-(2**70), max_value=2**70),
    latency=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6)),
    stamp=st.floats(min_value=0, max_value=4_000_000_000),
    decision=st.sampled_from(["allow", "deny", "other"]),
)
def test_the_fast_chain_encoding_matches_the_verifier(
    text: str, optional: str | None, number: int, latency: float, stamp: float, decision: str
) -> None:
    """The writer's MAC input must be byte for byte what `logs verify` recomputes from the row."""
    item = QueuedRecord(stamp, optional, text, text, text[:5], "/api/" + text, optional, number, decision,
                        text, number, 7, number, latency, text)
    values = _stored_values(item)
    as_record = AuditRecord(**{**values, "time": values["time"].replace(tzinfo=UTC)})
    assert _fast_canonical(11, values) == canonical_bytes(11, as_record)
    assert as_record.to_json() == normalise(as_record).to_json()  # stored values are already normal
