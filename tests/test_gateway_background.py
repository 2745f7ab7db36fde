"""The key poller runs in its own thread with one persistent connection, so a busy serving loop
cannot make the key store look stale, and polling does not open a connection each time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import event

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


async def test_the_key_poller_keeps_one_connection(engine) -> None:
    """Polling every 0.25 s used to open a new connection (a new thread with aiosqlite) each time."""
    connects = 0

    @event.listens_for(engine.sync_engine, "connect")
    def count(*_args) -> None:
        nonlocal connects
        connects += 1

    _, token = await KeyStore(engine, SECRET).create("kim", Role.READ)
    auth = KeyAuthenticator(engine, SECRET, poll_interval=0.02)
    await auth.start()
    try:
        connects = 0
        await asyncio.sleep(0.5)  # ~25 polls
        await KeyStore(engine, SECRET).create("new", Role.READ)  # one connection for the change itself
        await asyncio.sleep(0.2)
        assert await auth.authenticate(token) is not None and auth.key_count == 2
    finally:
        await auth.close()
    assert connects <= 2, connects
