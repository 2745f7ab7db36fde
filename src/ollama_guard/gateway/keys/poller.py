"""The key snapshot poller: every active key in memory, kept fresh off the request path.

A background task polls ``og_state.key_generation`` (bumped in the same transaction as every key change)
every ``poll_interval`` seconds and reloads the snapshot when it moves — in its own thread and event
loop, so a busy serving loop cannot starve it. A revocation or rotation in any process or replica thus
takes effect within about ``poll_interval`` + one query. If the store cannot be read for longer than
``stale_after`` seconds, ``check_fresh`` raises ``StoreUnavailable`` (fail closed) instead of trusting
old data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.errors import GuardError
from ollama_guard.gateway.bgloop import BackgroundLoop, engine_for_loop
from ollama_guard.gateway.db import (
    SecretMismatch,
    api_keys_table,
    bind_secret,
    immediate,
    short_db_error,
    sqlite_path,
    state_table,
)
from ollama_guard.gateway.keys.rows import KeyEntry, snapshot_of
from ollama_guard.gateway.limits import StoreUnavailable

log = logging.getLogger("ollama_guard.gateway.keys")


class KeySnapshotPoller:
    """Holds ``snapshot`` (usable keys by id) and ``generation``, refreshed from a background thread."""

    def __init__(
        self,
        engine: AsyncEngine,
        fingerprint: str,
        *,
        poll_interval: float,
        stale_after: float,
        query_timeout: float,
        miss_refresh_interval: float,
    ) -> None:
        self._engine = engine
        self._fingerprint = fingerprint
        self._poll_interval = poll_interval
        self._stale_after = stale_after
        self._query_timeout = query_timeout
        self._miss_refresh_interval = miss_refresh_interval
        self.snapshot: dict[str, KeyEntry] = {}
        self.generation: int | None = None
        self._last_ok = float("-inf")
        self._last_miss_refresh = float("-inf")
        self._poll_lock = asyncio.Lock()
        self._task: concurrent.futures.Future[None] | None = None
        self._last_error: str | None = None
        self._background = BackgroundLoop("ollama-guard key poller")
        self._poll_engine: AsyncEngine | None = None  # used in the poller thread only
        self._owns_poll_engine = False
        self._poll_conn: AsyncConnection | None = None  # the poller thread's persistent connection
        self._poll_file: tuple[int, int] | None = None  # SQLite: the file the connection has open

    # lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the keys (GuardError if that fails) and start polling for changes.

        Polling runs in a thread with its own event loop, so a busy serving loop cannot delay it:
        the snapshot only goes stale when the store itself does not answer.
        """
        try:
            async with immediate(self._engine).begin() as conn:
                await bind_secret(conn, self._fingerprint)
        except SecretMismatch:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise GuardError(f"cannot load API keys: {short_db_error(exc)}") from None
        if self._poll_engine is None:
            self._poll_engine, self._owns_poll_engine = engine_for_loop(self._engine)
        self._background.start()
        try:
            await self._background.run(asyncio.wait_for(self._poll(), timeout=self._query_timeout * 2))
        except SecretMismatch:
            await self._stop_background()
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            await self._stop_background()
            raise GuardError(f"cannot load API keys: {short_db_error(exc)}") from None
        if self._task is None:
            self._task = self._background.submit(self._poll_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self._stop_background()

    async def _stop_background(self) -> None:
        if not self._background.running:
            return
        limit = self._query_timeout * 2  # stopping never waits on a database that does not answer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._background.run(self._drop_poll_connection()), timeout=limit)
        if self._owns_poll_engine and self._poll_engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._background.run(self._poll_engine.dispose()), timeout=limit)
            self._poll_engine = None
        await self._background.stop()

    # polling (in the poller thread) ---------------------------------------------------------------
    async def _poll_connection(self) -> AsyncConnection:
        """The poller's one persistent connection (not one per poll: with SQLite's NullPool that was a
        new thread and connection every 0.25 s); reopened after an error or when the SQLite file was
        replaced."""
        assert self._poll_engine is not None
        path = sqlite_path(str(self._poll_engine.url))
        identity = None
        if path is not None:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                identity = (stat.st_dev, stat.st_ino)
        conn = self._poll_conn
        if conn is not None and (conn.closed or conn.invalidated or identity != self._poll_file):
            await self._drop_poll_connection()
            conn = None
        if conn is None:
            conn = self._poll_conn = await self._poll_engine.connect()
            self._poll_file = identity
        return conn

    async def _drop_poll_connection(self) -> None:
        conn, self._poll_conn = self._poll_conn, None
        if conn is not None:
            # bounded: a connection whose last operation was cut off (a poll cancelled by its timeout or
            # by close) may never answer, and closing must not hold the poll lock or close() forever
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self._query_timeout)

    async def _poll(self) -> None:
        async with self._poll_lock:
            try:
                await self._poll_once(await self._poll_connection())
            except BaseException:
                await self._drop_poll_connection()
                raise
            self._last_ok = time.monotonic()
            if self._last_error is not None:
                log.warning("API key store readable again")
                self._last_error = None

    async def _poll_once(self, conn: AsyncConnection) -> None:
        async with conn.begin():
            state = (
                await conn.execute(
                    select(state_table.c.key_generation, state_table.c.secret_fingerprint).where(
                        state_table.c.id == 1
                    )
                )
            ).one()
            if state.secret_fingerprint not in (None, self._fingerprint):
                raise SecretMismatch("the server secret no longer matches the database")
            if state.key_generation != self.generation:
                rows = (
                    await conn.execute(select(api_keys_table).where(api_keys_table.c.revoked.is_(False)))
                ).all()
                # one assignment each: the serving thread sees the old or the new snapshot
                self.snapshot = snapshot_of(rows)
                self.generation = state.key_generation

    async def _poll_guarded(self) -> None:
        try:
            # the poller's loop does nothing else, so this times out on the database alone
            await asyncio.wait_for(self._poll(), timeout=self._query_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the poller must survive; staleness makes authenticate fail closed
            message = self._describe_failure(exc)
            if message != self._last_error:
                log.error("cannot read API keys: %s", message)
                self._last_error = message

    def _describe_failure(self, exc: Exception) -> str:
        """One line an operator can act on (never ``TimeoutError: TimeoutError``)."""
        refused = f"keys are refused once the store has been unreadable for {self._stale_after:g} s"
        if isinstance(exc, TimeoutError):
            return (
                f"the key database did not answer within {self._query_timeout:g} s "
                f"(is it overloaded or unreachable?); {refused}"
            )
        detail = short_db_error(exc)
        name = type(exc).__name__
        text = detail if not detail or detail.startswith(name) else f"{name}: {detail}"
        return f"{text or name}; {refused}"

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            await self._poll_guarded()

    # an extra poll after a miss (a key created or rotated a moment ago elsewhere) ---------------
    async def refresh_after_miss(self) -> None:
        """At most one extra poll per ``miss_refresh_interval``; callers during a poll wait for it."""
        if not self._poll_lock.locked():
            now = time.monotonic()
            if now - self._last_miss_refresh < self._miss_refresh_interval:
                return
        await self._background.run(self._refresh_in_poller())

    async def _refresh_in_poller(self) -> None:
        if self._poll_lock.locked():
            async with self._poll_lock:
                return
        now = time.monotonic()
        if now - self._last_miss_refresh < self._miss_refresh_interval:
            return
        self._last_miss_refresh = now
        await self._poll_guarded()

    # freshness ------------------------------------------------------------------------------------
    @property
    def age(self) -> float:
        """Seconds since the store last answered."""
        return time.monotonic() - self._last_ok

    @property
    def fresh(self) -> bool:
        """Whether the snapshot may be trusted (the store answered within ``stale_after``)."""
        return self.age <= self._stale_after

    def check_fresh(self) -> None:
        """Raise ``StoreUnavailable`` when the snapshot is too old to trust (fail closed)."""
        age = self.age
        if age > self._stale_after:
            raise StoreUnavailable(
                f"API key store unreadable for {age:.1f} s"
                if self._last_ok > float("-inf")
                else "API key store not loaded"
            )
