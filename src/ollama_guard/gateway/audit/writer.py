"""The audit writer process: reads a gateway process's spool, chains the records and writes them to the
database over one persistent connection — outside the serving process, so neither the HMAC work nor
the database driver competes with request handling for its GIL.

Started by ``Recorder`` as ``python -m ollama_guard.gateway.audit.writer``; its settings (database
URL, server secret, spool directory, writer id) arrive as one JSON line on stdin, never on the command
line. It reports on stdout, one line each: ``ready``, ``c SEQ GAPS CORRUPT`` (committed up to SEQ),
``e MESSAGE`` (a write failed; it retries) and ``ok`` (writing again). A ``close`` line on stdin asks
it to drain everything and stop; end of stdin without one means the gateway process died: it then
takes the spool's lock, drains it and stops. Every few seconds it also drains the spools of dead
gateway processes it finds in the same directory (replay on start).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.gateway.audit.chain import (
    ChainConflict,
    append_checkpoint,
    append_records,
    read_head,
    register_writer,
)
from ollama_guard.gateway.audit.record import RecordFields
from ollama_guard.gateway.audit.spool import SpoolReader, boot_id, lock_path, spooled_writers, try_lock
from ollama_guard.gateway.db import create_engine_for, immediate, short_db_error
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, secret_fingerprint

log = logging.getLogger("ollama_guard.gateway.audit.writer")


class Store:
    """One persistent database connection (reopened after a failure), write transactions only.

    Its commits are durable: a spool segment is deleted once its records are committed, so a commit
    that a power loss could still undo would lose them. PostgreSQL's commits are (unless its
    ``synchronous_commit`` or ``fsync`` is turned off); a SQLite connection of the gateway runs with
    ``synchronous = NORMAL`` (WAL mode: the last commits can be undone), so this one uses FULL."""

    def __init__(self, url: str) -> None:
        engine = create_engine_for(url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _durable_commits)  # after the engine's own hook
        self._engine: AsyncEngine = immediate(engine)
        self._conn: AsyncConnection | None = None

    async def connection(self) -> AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await self._engine.connect()
        return self._conn

    async def reset(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await self.reset()
        await self._engine.dispose()


def _durable_commits(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous = FULL")  # WAL mode: every commit fsyncs the WAL
    finally:
        cursor.close()


class Drain:
    """Moves one writer's spool into its chain."""

    def __init__(self, store: Store, key: bytes, reader: SpoolReader, *, batch: int,
                 checkpoint_interval: float) -> None:
        self.store = store
        self.key = key
        self.reader = reader
        self.writer = reader.writer
        self.batch = batch
        self.checkpoint_interval = checkpoint_interval
        self.head: tuple[int, str] | None = None
        self.pending: list[tuple[int, int, list[Any]]] = []
        self.gaps = 0
        self._last_checkpoint = float("-inf")
        self._checkpointed: tuple[int, str] | None = None

    async def step(self, *, final: bool = False) -> bool:
        """Read what has arrived and commit one batch; True if anything was written."""
        if len(self.pending) < self.batch:
            self.pending.extend(self.reader.read(self.batch - len(self.pending), final=final))
        due = time.monotonic() - self._last_checkpoint > self.checkpoint_interval
        if not self.pending:
            if due and self.head is not None and self._checkpointed != self.head:
                await self._commit([], checkpoint=True)  # anchor the last records once things go quiet
            return False
        self.reader.sync()  # group commit: the spool is on disk before its records are in the log
        await self._commit(self.pending, checkpoint=due)
        self.pending = []
        self.reader.drop_finished()
        return True

    async def _commit(self, items: list[tuple[int, int, list[Any]]], *, close: bool = False,
                      checkpoint: bool = False) -> None:
        conn = await self.store.connection()
        while True:
            try:
                async with conn.begin():
                    head = await register_writer(conn, self.key, self.writer)
                    seq, mac, missing = await append_records(conn, self.key, self.writer, head, items,
                                                             close=close)
                    if checkpoint or close:
                        await append_checkpoint(conn, self.key, self.writer, seq, mac)
            except ChainConflict:
                continue  # someone else moved the head: re-read it and skip what is written
            break
        self.head = (seq, mac)
        self.gaps += missing
        if checkpoint or close:
            self._last_checkpoint = time.monotonic()
            self._checkpointed = self.head

    async def finish(self) -> None:
        """Drain to the end (the writing process is gone) and mark the writer closed."""
        while await self.step(final=True):
            pass
        await self._commit(await self._cut_off(), close=True, checkpoint=True)
        self.reader.drop_finished()
        self.reader.close()

    async def _cut_off(self) -> list[tuple[int, int, Any]]:
        """A spool written before the host restarted (power loss, kernel crash) may have lost records
        that were answered but not yet fsynced; their numbers are at most its durable reservation. If
        the spool ends below it, a record numbered just above it is written, so that the numbers in
        between are a gap that ``logs verify`` names. Nothing when the host has not restarted (a killed
        process's written records are all in the spool)."""
        reserved = self.reader.reserved
        if self.reader.boot is None or self.reader.boot == boot_id() or not reserved:
            return []
        conn = await self.store.connection()
        async with conn.begin():
            seq = (await register_writer(conn, self.key, self.writer))[0]
        if seq >= reserved:
            return []
        reason = (f"audit spool cut off by a restart of the host (power loss or crash): records "
                  f"{seq + 1}-{reserved} may have been answered; none of them reached the log")
        marker = RecordFields(psutil.boot_time(), None, None, "-", "-", "-", None, 0, "deny", reason,
                              0, 0, 0, 0.0, "")
        log.error("writer %s: %s", self.writer, reason)
        return [(reserved + 1, 1, marker)]


class WriterProcess:
    def __init__(self, settings: dict[str, Any]) -> None:
        secret = bytes.fromhex(settings["secret"])
        self.key = derive_key(secret, PURPOSE_AUDIT_MAC)
        self.fingerprint = secret_fingerprint(secret)
        self.directory = Path(settings["spool"])
        self.writer = str(settings["writer"])
        self.batch = int(settings.get("batch", 2000))
        self.interval = float(settings.get("interval", 0.02))
        self.checkpoint_interval = float(settings.get("checkpoint_interval", 1.0))
        self.orphan_interval = float(settings.get("orphan_interval", 5.0))
        self.store = Store(settings["db"])
        self.own = self._drain(self.writer)
        self._reported: tuple[int, int, int] | None = None
        self._error: str | None = None

    def _drain(self, writer: str) -> Drain:
        reader = SpoolReader(self.directory, writer, self.fingerprint)
        return Drain(self.store, self.key, reader, batch=self.batch,
                     checkpoint_interval=self.checkpoint_interval)

    @staticmethod
    def emit(line: str) -> None:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):  # the gateway process is gone: the work goes on
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    def report(self) -> None:
        own = self.own
        state = ((own.head or (0, ""))[0], own.gaps, own.reader.corrupt)
        if state != self._reported:
            self._reported = state
            self.emit(f"c {state[0]} {state[1]} {state[2]}")

    async def guarded(self, work: Any) -> bool:
        """Run one database step; on failure report it, reconnect later and say False."""
        try:
            await work()
        except (SQLAlchemyError, OSError) as exc:
            message = f"{type(exc).__name__}: {short_db_error(exc)}"
            if message != self._error:
                self.emit(f"e {message}"[:500])
                self._error = message
            await self.store.reset()
            return False
        if self._error is not None:
            self._error = None
            self.emit("ok")
        return True

    async def drain_orphans(self) -> None:
        for writer in spooled_writers(self.directory):
            if writer == self.writer:
                continue
            lock = try_lock(lock_path(self.directory, writer))
            if lock is None:
                continue  # alive, or being drained by someone else
            try:
                drain = self._drain(writer)
                await drain.finish()
                if drain.reader.foreign:
                    log.error("audit spool %s was written with another server secret; left alone", writer)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        lock_path(self.directory, writer).unlink()
            finally:
                os.close(lock)

    async def run(self, stop: threading.Event, graceful: threading.Event) -> None:
        try:
            if await self._start(stop):
                await self._serve(stop)
                await self._finish(graceful)
        finally:
            await self.store.close()

    async def _start(self, stop: threading.Event) -> bool:
        while True:
            if await self.guarded(self._register):
                self.emit("ready")
                await self.guarded(self.drain_orphans)  # replay what dead processes left, first
                return True
            if stop.is_set():
                return False
            await asyncio.sleep(0.5)

    async def _serve(self, stop: threading.Event) -> None:
        """Until the gateway process stops: drain its spool, and now and then dead processes' spools."""
        next_orphans = time.monotonic() + self.orphan_interval
        failures = 0
        wrote = False

        async def step() -> None:
            nonlocal wrote
            wrote = await self.own.step()

        while not stop.is_set():
            if time.monotonic() >= next_orphans:
                await self.guarded(self.drain_orphans)
                next_orphans = time.monotonic() + self.orphan_interval
            if await self.guarded(step):
                failures = 0
                self.report()
                if not wrote:
                    await asyncio.sleep(self.interval)
            else:
                failures += 1
                await asyncio.sleep(min(2.0, 0.05 * 2 ** min(failures, 6)))

    async def _finish(self, graceful: threading.Event) -> None:
        """The gateway process stopped (and asked us to finish) or died (then its lock is free)."""
        lock = None
        if not graceful.is_set():
            lock = try_lock(lock_path(self.directory, self.writer))
            if lock is None:
                return  # another writer process is draining this spool
        try:
            while True:
                if await self.guarded(self.own.finish):
                    break
                await asyncio.sleep(0.5)
            self.report()
            if lock is not None and self.own.reader.exhausted():
                with contextlib.suppress(FileNotFoundError):
                    lock_path(self.directory, self.writer).unlink()
        finally:
            if lock is not None:
                os.close(lock)

    async def _register(self) -> None:
        conn = await self.store.connection()
        async with conn.begin():
            await register_writer(conn, self.key, self.writer)
            self.own.head = await read_head(conn, self.writer)


def _watch_stdin(stop: threading.Event, graceful: threading.Event) -> None:
    for line in sys.stdin:
        if line.strip() == "close":
            graceful.set()
            break
    stop.set()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="ollama-guard audit writer: %(message)s")
    # SIGTERM/SIGINT reach the whole process group (systemd, Ctrl-C): the gateway process then shuts
    # down and tells us to finish ("close" on stdin), or dies (end of stdin); either way we drain first
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        settings = json.loads(sys.stdin.readline())
    except ValueError:
        print("e bad settings line", flush=True)
        return 2
    stop, graceful = threading.Event(), threading.Event()
    threading.Thread(target=_watch_stdin, args=(stop, graceful), daemon=True).start()
    process = WriterProcess(settings)
    try:
        asyncio.run(process.run(stop, graceful))
    except KeyboardInterrupt:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
