"""Chain of custody: what exactly was analysed (every source's bytes, hashed as they were read) and by
what (tool version, the command line with credentials redacted, when, where).

An incident report may be handed to management or to the authorities; whoever receives it must be
able to check that the log they hold is the one analysed. Each source gets its SHA-256 and size over
the bytes actually read — standard input and command output as they stream (never read twice), a
gzip-rotated file as its compressed bytes on disk, a plain file over the bytes the scanner analysed
(a log that grows while it is read is analysed and hashed up to its size when the run began, and the
record says it changed).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

HASH_BLOCK = 8 << 20
THREAD_BLOCK = 1 << 20


@dataclass
class Digest:
    """SHA-256 and length of a byte stream, fed as it is read."""

    sha256: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    complete: bool = False  # every byte of the source went through update()
    error: str = ""  # why the hash could not be completed

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.sha256.update(data)
        self.size += len(data)

    @property
    def hexdigest(self) -> str:
        return self.sha256.hexdigest()  # type: ignore[no-any-return]


class HashingReader:
    """A binary stream that hashes what is read through it (``read``/``readinto``/``read1``)."""

    def __init__(self, raw: BinaryIO, digest: Digest) -> None:
        self._raw = raw
        self._digest = digest

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._digest.update(data)
        return data

    def read1(self, n: int = -1) -> bytes:
        reader = getattr(self._raw, "read1", self._raw.read)
        data = reader(n)
        if data:
            self._digest.update(data)
        return data  # type: ignore[no-any-return]

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._digest.update(memoryview(buffer)[:n])
        return n  # type: ignore[no-any-return]

    def drain(self) -> None:
        """Hash what is left (a gzip member's trailing bytes the decompressor did not need)."""
        while self.read(HASH_BLOCK):
            pass

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)


class FileHasher(threading.Thread):
    """Hashes the first ``size`` bytes of a file in a thread (while worker processes scan it: the
    hashing and the reads release the GIL)."""

    def __init__(self, path: Path, size: int, digest: Digest) -> None:
        super().__init__(name=f"sha256:{path.name}", daemon=True)
        self.path, self.limit, self.digest = path, size, digest
        self.stopped = threading.Event()  # the analysis ended early (an error, Ctrl-C): stop hashing

    def run(self) -> None:
        try:
            buffer = bytearray(THREAD_BLOCK)  # one small buffer, reused: no 8 MB objects in the main process
            view = memoryview(buffer)
            with open(self.path, "rb", buffering=0) as fh:
                left = self.limit
                while left > 0 and not self.stopped.is_set():
                    n = fh.readinto(view[: min(THREAD_BLOCK, left)])
                    if not n:
                        break
                    self.digest.update(view[:n])
                    left -= n
            self.digest.complete = self.digest.size == self.limit
        except OSError as exc:  # reported in the custody record, not fatal: the analysis read it
            self.digest.error = f"cannot hash {self.path}: {exc.strerror or exc}"


def file_state(path: Path | None) -> dict[str, Any]:
    """Size and modification time of a file, to tell whether it changed while it was read."""
    if path is None:
        return {}
    try:
        st = path.stat()
    except OSError:
        return {}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mtime(ns: int | None) -> str | None:
    return None if ns is None else iso(datetime.fromtimestamp(ns / 1e9, UTC))


def custody_record(
    name: str,
    kind: str,
    digest: Digest | None,
    *,
    path: Path | None = None,
    location: str | None = None,
    command: list[str] | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    stats: Any = None,
    hashed: str = "",
) -> dict[str, Any]:
    """One source's entry: where it came from, the SHA-256 and size of the bytes read, when the file
    was last modified, whether it changed during the run, its time range and line counts."""
    before, after = before or {}, after or {}
    record: dict[str, Any] = {
        "source": name,
        "kind": kind,
        "path": str(path.resolve()) if path is not None else None,
        "location": redact_argv([location])[0] if location else None,
        "command": shlex.join(redact_argv(command)) if command else None,
        "size": digest.size if digest is not None else None,
        "sha256": digest.hexdigest if digest is not None else None,
        "hashed": hashed,
        "complete": bool(digest is not None and digest.complete),
        "file_size": before.get("size"),
        "modified": _mtime(before.get("mtime_ns")),
        "changed_while_read": bool(before and after and before != after),
        "first_time": iso(getattr(stats, "first_time", None)),
        "last_time": iso(getattr(stats, "last_time", None)),
        "lines": getattr(stats, "lines", 0),
        "recognised_lines": getattr(stats, "recognised", 0),
    }
    if digest is not None and digest.error:
        record["error"] = digest.error
    return record


def redact_argv(argv: list[str]) -> list[str]:
    """Arguments with credentials replaced (URL userinfo, ``--password x``, ``NAME=secret``, …)."""
    from ollama_guard.redact import redact_argv as redact

    return list(redact(argv))


def command_line() -> list[str]:
    """This process's command line as it was typed (``python -m ollama_guard …`` or the script)."""
    argv = list(getattr(sys, "orig_argv", None) or sys.argv)
    if len(argv) > 1 and argv[1].endswith(("/ollama-guard", "\\ollama-guard.exe", "ollama-guard")):
        argv = argv[1:]  # the console script: its interpreter is the shebang's, not typed
    return argv


def provenance(started_at: datetime, finished_at: datetime | None = None) -> dict[str, Any]:
    """The tool, version and redacted command line behind a report, and where and when it ran."""
    from ollama_guard import __version__

    argv = redact_argv(command_line())
    return {
        "tool": "ollama-guard",
        "version": __version__,
        "command_line": shlex.join(argv),
        "argv": argv,
        "working_directory": os.getcwd(),
        "host": platform.node(),
        "user": _user(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
    }


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError, OSError):
        return os.environ.get("USER", "") or os.environ.get("USERNAME", "")
