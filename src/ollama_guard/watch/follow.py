"""Follow a log file like ``tail -F``: from its end (or start), through rotation by rename, truncation
(copytruncate) and a file that does not exist yet, without losing the lines written around a rotation.

Polling, not inotify: one ``fstat`` and one ``stat`` per file per tick (10 per second by default) cost
nothing, work on every filesystem (NFS, overlay, bind mounts) and keep the alert latency well under a
second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAX_READ = 4 << 20  # bytes per poll and file: other sources get their turn between reads

DATA = "data"
RESET = "reset"  # the file was replaced or truncated: what follows starts a new file (line 1)


@dataclass
class Lines:
    """Cuts a byte stream into complete lines (the last, unfinished one waits for its newline)."""

    partial: bytes = b""
    max_line: int = 1 << 20  # a line longer than this is cut (a log line never is; a flood must not grow us)

    def feed(self, data: bytes) -> list[str]:
        if self.partial:
            data = self.partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data if len(data) <= self.max_line else b""
            return [] if len(data) <= self.max_line else [data[: self.max_line].decode("utf-8", "replace")]
        self.partial = data[cut + 1 :]
        if len(self.partial) > self.max_line:
            self.partial = b""
        return data[:cut].decode("utf-8", "replace").split("\n")

    def feed_bytes(self, data: bytes) -> bytes:
        """``feed`` for a block driver: the complete lines as bytes (ending with a newline), or b""."""
        if self.partial:
            data = self.partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            if len(data) > self.max_line:  # cut an endless line, as feed does
                self.partial = b""
                return data[: self.max_line] + b"\n"
            self.partial = data
            return b""
        self.partial = data[cut + 1 :]
        if len(self.partial) > self.max_line:
            self.partial = b""
        return data[: cut + 1]

    def flush(self) -> list[str]:
        """The unfinished last line, when its file ends for good (rotation, end of a --once read)."""
        rest, self.partial = self.partial, b""
        return [rest.decode("utf-8", "replace")] if rest else []


@dataclass
class FileFollower:
    path: Path
    from_start: bool = False
    notices: list[str] = field(default_factory=list)  # what happened, for stderr
    _fh: BinaryIO | None = None
    _id: tuple[int, int] | None = None
    _pos: int = 0
    skipped_lines: int = 0  # complete lines before the point where following started
    _started: bool = False  # the first look at the path has been made
    _waiting: bool = False  # the path was missing at the last look

    def poll(self) -> tuple[list[tuple[str, bytes]], bool]:
        """What happened since the last poll: ``(DATA, bytes)`` and ``(RESET, b"")`` items in order, and
        whether more data is waiting (read again without sleeping)."""
        out: list[tuple[str, bytes]] = []
        if self._fh is None and not self._open(out, new=self._started):
            self._started = True
            return out, False
        self._started = True
        assert self._fh is not None
        try:
            size = os.fstat(self._fh.fileno()).st_size
        except OSError:
            size = self._pos
        if size < self._pos:  # truncated in place (logrotate copytruncate, `> server.log`)
            self.notices.append(f"{self.path} was truncated: reading it from the start")
            self._fh.seek(0)
            self._pos = 0
            out.append((RESET, b""))
        if self._drain(out):
            return out, True
        try:
            st = os.stat(self.path)
        except OSError:
            return out, False  # moved away, nothing new yet: keep reading the old file meanwhile
        if (st.st_dev, st.st_ino) != self._id:  # rotated: finish the old file, then the new one from 0
            self._drain(out, limit=None)
            self._close()
            self.notices.append(f"{self.path} was replaced (rotation): following the new file")
            out.append((RESET, b""))
            if self._open(out, new=True):
                return out, self._drain(out)
        return out, False

    def read_all(self) -> list[tuple[str, bytes]]:
        """Everything there is now, then stop (``--once``)."""
        out: list[tuple[str, bytes]] = []
        if self._fh is None and not self._open(out, new=True):
            return out
        self._drain(out, limit=None)
        return out

    def close(self) -> None:
        self._close()

    def _open(self, out: list[tuple[str, bytes]], *, new: bool) -> bool:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            if not self._waiting:
                self.notices.append(f"{self.path} does not exist (yet): waiting for it")
            self._waiting = True
            return False
        except OSError as exc:
            if not self._started:
                self.notices.append(f"cannot read {self.path}: {exc.strerror or exc}; retrying")
            return False
        st = os.fstat(fh.fileno())
        self._fh = fh
        self._id = (st.st_dev, st.st_ino)
        if new or self.from_start:
            self._pos = 0
        else:  # the file as it was when we started: only what is written from now on
            self._pos, self.skipped_lines = _skip_to_end(fh)
        if self._waiting:
            self.notices.append(f"{self.path} appeared: following it")
        self._waiting = False
        return True

    def _drain(self, out: list[tuple[str, bytes]], limit: int | None = 0) -> bool:
        """Read what is new (at most ``limit`` bytes, 0: MAX_READ, None: all); True when more is waiting."""
        assert self._fh is not None
        if limit == 0:
            limit = MAX_READ
        want = -1 if limit is None else limit
        try:
            data = self._fh.read(want)
        except OSError as exc:
            self.notices.append(f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if data:
            self._pos += len(data)
            out.append((DATA, data))
        return limit is not None and len(data) == limit

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        self._fh = None
        self._id = None
        self._pos = 0


def _skip_to_end(fh: BinaryIO) -> tuple[int, int]:
    """Move to the end of a file and count its lines on the way, so evidence names true line numbers
    (about 1 s per GB, once, at start)."""
    lines = 0
    pos = 0
    while True:
        block = fh.read(1 << 22)
        if not block:
            return pos, lines
        pos += len(block)
        lines += block.count(b"\n")
