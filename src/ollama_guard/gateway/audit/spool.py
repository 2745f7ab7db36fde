"""The durable local spool between the request path and the audit database.

Each gateway process (a *writer* W) appends its records to ``<dir>/W.<segment>.spool``: one line per
record, ``[seq, count, time, key_id, …, request_id]`` as ASCII JSON, after a header line naming W and
the secret's fingerprint. A record is handed to the kernel with one ``write(2)`` before the request's
response is finished, so it survives the gateway process being killed. ``SpoolWriter.sync()`` makes it
survive a power loss too: awaited before a state-changing admin action is forwarded, and (with
``audit_sync = "answer"``) before the last byte of every answer, it fsyncs at once when
idle; callers arriving while an fsync is under way share the next one (group commit). The writer process
also fsyncs the segment before it commits records to the database. Segments roll over at
``segment_bytes``; the writer process deletes a segment once every record in it is in the database.

With ``audit_sync = "interval"`` an answer does not wait for an fsync, so a power loss can cut off the
spool's last records after they were answered. To make that loss visible, the header names the boot
(``/proc/sys/kernel/random/boot_id``) and the serving side *reserves* sequence numbers ahead of use: a
``{"reserve": N}`` line, fsynced before any answer whose record has a number above the previous
reservation is completed (in the background, well before it is needed). A spool found after a restart
of the host whose records end below its reservation may have lost answered records up to N: the
writer process then records that gap, and ``logs verify`` names it.

While W's process lives it holds an exclusive ``flock`` on ``W.lock``. A spool whose lock is free
belongs to a dead process: any writer process may take the lock and drain it (replay on start).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SEGMENT_BYTES = 64 * 1024 * 1024
GATHER = 0.001  # seconds an fsync under load waits for more answers to share it
_SEGMENT = re.compile(r"^(?P<writer>[A-Za-z0-9._-]{1,64})\.(?P<n>\d{8})\.spool$")
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), default=str).encode


def boot_id() -> str:
    """This boot of the host: the page cache of a previous boot is gone, so what was not fsynced then
    may be lost; a process that was merely killed leaves its written data to the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return f"boot-time-{int(psutil.boot_time())}"


def segment_path(directory: Path, writer: str, n: int) -> Path:
    return directory / f"{writer}.{n:08d}.spool"


def lock_path(directory: Path, writer: str) -> Path:
    return directory / f"{writer}.lock"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created 0600), or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def spooled_writers(directory: Path) -> list[str]:
    """Writers that have segments in ``directory``."""
    with contextlib.suppress(FileNotFoundError):
        return sorted({m["writer"] for p in directory.iterdir() if (m := _SEGMENT.match(p.name))})
    return []


def segments(directory: Path, writer: str) -> list[int]:
    found = []
    with contextlib.suppress(FileNotFoundError):
        for p in directory.iterdir():
            m = _SEGMENT.match(p.name)
            if m and m["writer"] == writer:
                found.append(int(m["n"]))
    return sorted(found)


class SpoolWriter:
    """The serving side: append records, fsync on demand (group commit). Not thread-safe: one event
    loop calls it."""

    def __init__(self, directory: Path, writer: str, fingerprint: str, *,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.writer = writer
        self._fingerprint = fingerprint
        self._segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._segment = -1
        self._size = 0
        self.written = 0  # bytes handed to the kernel (all segments)
        self.synced = 0  # bytes known to be on disk
        self.reservation = 0  # sequence numbers reserved so far (see reserve)
        self._sync_task: asyncio.Task[None] | None = None
        self.gather = GATHER
        self._loaded = False  # records arrived while the last fsync ran
        self._fsync_pool: concurrent.futures.ThreadPoolExecutor | None = None  # one thread, fsync only

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = try_lock(lock_path(self.directory, self.writer))
        if lock is None:
            raise OSError(f"audit spool {self.writer} is locked by another process")
        self._lock_fd = lock
        self._roll()

    def _roll(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)  # a finished segment is complete on disk before the next one exists
            os.close(self._fd)
        self._segment += 1
        path = segment_path(self.directory, self.writer, self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        header = _ENCODE({"og_spool": 1, "writer": self.writer, "fp": self._fingerprint,
                          "segment": self._segment, "boot": boot_id()}).encode("ascii") + b"\n"
        self._size = 0
        self._write(header)
        if self.reservation:  # the earlier segments holding it are deleted once written: carry it over
            self._write(_reserve_line(self.reservation))
        os.fsync(self._fd)
        _fsync_dir(self.directory)
        self.synced = self.written

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError("the audit spool is closed")
        view = memoryview(data)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        self._size += len(data)
        self.written += len(data)

    def append(self, seq: int, count: int, fields: tuple[Any, ...]) -> None:
        """One record, handed to the kernel now (raises OSError if it cannot be)."""
        try:
            line = json.dumps((seq, count, *fields))  # the C encoder's fast path (ASCII, cached)
        except (TypeError, ValueError):
            line = _ENCODE([seq, count, *fields])
        self._write(line.encode("ascii") + b"\n")
        if self._size >= self._segment_bytes:
            self._roll()

    def reserve(self, upto: int) -> None:
        """Reserve sequence numbers up to ``upto`` (durable once a later ``sync`` returns)."""
        self._write(_reserve_line(upto))
        self.reservation = max(self.reservation, upto)

    async def sync(self) -> None:
        """Return once everything appended so far is on disk (one fsync serves every waiter)."""
        target = self.written
        while self.synced < target:
            task = self._sync_task
            if task is None or task.done():
                task = self._sync_task = asyncio.get_running_loop().create_task(self._sync_now())
            await asyncio.shield(task)

    async def _sync_now(self) -> None:
        # runs one loop turn after the first waiter asked: answers finished in that turn share it.
        # Under load (records arrived while the last fsync ran) it first waits ``gather`` seconds, so
        # that one fsync serves more answers: fewer fsyncs, less kernel CPU; when idle, no wait.
        if self._loaded and self.gather:
            await asyncio.sleep(self.gather)
        mark = self.written
        if self._fd is None:
            raise OSError("audit spool closed")
        fd = os.dup(self._fd)  # a roll-over may close the segment's own fd while this one syncs
        try:
            if self._fsync_pool is None:  # its own thread: never queued behind other to_thread work
                self._fsync_pool = concurrent.futures.ThreadPoolExecutor(1, "og-audit-fsync")
            await asyncio.get_running_loop().run_in_executor(self._fsync_pool, os.fsync, fd)
        finally:
            os.close(fd)
        self.synced = max(self.synced, mark)
        self._loaded = self.written > mark

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._fsync_pool is not None:
            self._fsync_pool.shutdown(wait=False)
            self._fsync_pool = None

    def release(self) -> None:
        """Give up the lock (after the writer process has drained the spool); the lock file goes too
        when no segment is left."""
        if self._lock_fd is not None:
            if not segments(self.directory, self.writer):
                with contextlib.suppress(FileNotFoundError):
                    lock_path(self.directory, self.writer).unlink()
            os.close(self._lock_fd)
            self._lock_fd = None


def _reserve_line(upto: int) -> bytes:
    return b'{"reserve":%d}\n' % upto


class SpoolReader:
    """The writer process's side: the records of one writer's spool, in order, as they arrive."""

    def __init__(self, directory: Path, writer: str, fingerprint: str) -> None:
        self.directory = directory
        self.writer = writer
        self._fingerprint = fingerprint
        self._segment: int | None = None
        self._file: Any = None
        self._buffer = b""
        self._header_seen = False
        self._finished: list[int] = []  # segments read to the end, deleted once committed
        self.corrupt = 0  # lines that could not be read (torn or damaged)
        self.foreign = False  # the spool was written with another secret (left alone)
        self.boot: str | None = None  # the boot its last segment was written in (None: older spool)
        self.reserved = 0  # the highest sequence number reserved in it

    def _open(self, n: int) -> None:
        if self._file is not None:
            self._file.close()
        self._segment, self._buffer, self._header_seen = n, b"", False
        self._file = open(segment_path(self.directory, self.writer, n), "rb")

    def read(self, limit: int, *, final: bool = False) -> list[tuple[int, int, list[Any]]]:
        """Up to ``limit`` complete records. With ``final`` (the writing process is gone), a torn last
        line is counted as corrupt instead of waited for."""
        out: list[tuple[int, int, list[Any]]] = []
        while len(out) < limit and not self.foreign:
            if self._file is None:
                found = segments(self.directory, self.writer)
                if not found:
                    break
                self._open(found[0])
            chunk = self._file.read(1 << 20)
            if chunk:
                self._buffer += chunk
                for item in self._lines():
                    out.append(item)
                continue
            later = [n for n in segments(self.directory, self.writer) if n > (self._segment or 0)]
            if not later and not final:
                break
            # the segment is complete: a later one exists (or its writer is gone)
            self._buffer += self._file.read()
            out.extend(self._lines())
            if self._buffer:
                self.corrupt += 1
                self._buffer = b""
            self._finished.append(self._segment or 0)
            if not later:
                self._file.close()
                self._file = None
                self._segment = None
                break
            self._open(later[0])
        return out

    def _lines(self) -> Iterator[tuple[int, int, list[Any]]]:
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            if not self._header_seen:
                self._header_seen = True
                try:
                    header = json.loads(line)
                    ok = header.get("writer") == self.writer and header.get("fp") == self._fingerprint
                    boot = header.get("boot")
                except (ValueError, AttributeError):
                    ok = False
                if not ok:
                    self.foreign = True
                    return
                self.boot = boot if isinstance(boot, str) else None
                continue
            if line.startswith(b'{"reserve":'):
                try:
                    upto = json.loads(line)["reserve"]
                    if type(upto) is not int:
                        raise ValueError
                except (ValueError, KeyError, TypeError):
                    self.corrupt += 1
                    continue
                self.reserved = max(self.reserved, upto)
                continue
            try:
                seq, count, *fields = json.loads(line)
                if type(seq) is not int or type(count) is not int or len(fields) != 15:
                    raise ValueError
            except ValueError:
                self.corrupt += 1
                continue
            yield seq, count, fields

    def sync(self) -> None:
        """fsync the segment being read (the group commit of ordinary records)."""
        if self._file is not None:
            os.fsync(self._file.fileno())

    def drop_finished(self) -> None:
        """Delete segments whose records are all committed."""
        for n in self._finished:
            with contextlib.suppress(FileNotFoundError):
                segment_path(self.directory, self.writer, n).unlink()
        self._finished.clear()

    def exhausted(self) -> bool:
        return self._file is None and not segments(self.directory, self.writer)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
