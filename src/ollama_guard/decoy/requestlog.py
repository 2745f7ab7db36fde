"""The decoy's request log: one JSON object per request, appended to a file.

Guarantee: the line for a request is written and flushed *before* the last byte of its response is handed
to the server, so a client that has read a complete response can already find the line in the file.
(A request whose client disconnects mid-response is logged when the decoy notices, with the status sent.)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ollama_guard.decoy.events import SessionTracker, ecs_fields

BODY_LOG_LIMIT = 64 * 1024  # bytes of a request body kept in its log line
HEADER_VALUE_LIMIT = 2048  # characters of one header value kept
HEADER_BUDGET = 32 * 1024  # characters of all header names and values kept
HEADER_COUNT_LIMIT = 100
DEFAULT_MAX_BYTES = 256 << 20  # the log rotates past this size
DEFAULT_BACKUPS = 3  # rotated files kept (FILE.1 … FILE.3); the oldest is deleted
EVIDENCE_HEAD = 64  # first bytes of an upload kept (hex) as evidence


class BodyRecorder:
    """Keeps what the log needs from a request body while the handler reads it."""

    def __init__(self, *, digest_only: bool) -> None:
        self.digest_only = digest_only
        self.size = 0
        self._head = bytearray()
        self._sha = hashlib.sha256() if digest_only else None

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._sha is not None:
            self._sha.update(chunk)
            if len(self._head) < EVIDENCE_HEAD:
                self._head += chunk[: EVIDENCE_HEAD - len(self._head)]
        elif len(self._head) < BODY_LOG_LIMIT:
            self._head += chunk[: BODY_LOG_LIMIT - len(self._head)]

    def entry(self) -> dict[str, Any]:
        """The body fields of a log line."""
        if self._sha is not None:
            return {
                "body": None,
                "body_size": self.size,
                "body_sha256": "sha256:" + self._sha.hexdigest(),
                "body_head_hex": self._head.hex(),
            }
        return {
            "body": self._head.decode("utf-8", errors="replace"),
            "body_size": self.size,
            "body_truncated": self.size > len(self._head),
        }


def bounded_headers(headers: list[tuple[str, str]]) -> tuple[list[list[str]], bool]:
    """Headers for a log line within HEADER_COUNT_LIMIT, HEADER_VALUE_LIMIT and HEADER_BUDGET; and
    whether anything was cut."""
    kept: list[list[str]] = []
    budget = HEADER_BUDGET
    cut = False
    for name, value in headers:
        if len(kept) >= HEADER_COUNT_LIMIT or budget <= 0:
            cut = True
            break
        if len(value) > HEADER_VALUE_LIMIT:
            value, cut = value[:HEADER_VALUE_LIMIT], True
        name, value = name[: min(len(name), budget)], value[: max(0, budget - len(name))]
        budget -= len(name) + len(value)
        kept.append([name, value])
    return kept, cut


class RequestLog:
    """An append-only JSON-lines file; each write is one flushed line (safe across threads). Past
    `max_bytes` the file is rotated (FILE → FILE.1 → … → FILE.<backups>, the oldest dropped), so the
    log never holds more than about (backups + 1) × max_bytes."""

    def __init__(
        self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self.rotations = 0
        self.sessions = SessionTracker()

    def add_ecs(self, entry: dict[str, Any], version: str) -> None:
        """Add the ECS fields (and the client's session) to an entry about to be written."""
        ip = entry.get("client", "").rpartition(":")[0].strip("[]")
        session, sequence = self.sessions.touch(ip)
        entry.update(ecs_fields(entry, session=session, sequence=sequence, version=version))

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, entry: dict[str, Any]) -> None:
        # ASCII-only lines: no raw U+2028/U+0085 that line splitters other than "\n" would break on.
        data = (json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            if self._fd < 0:
                return
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self._fd, data)
            self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.backups > 0:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = self._open()
        self._size = 0
        self.rotations += 1

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def now_iso() -> str:
    """Current UTC time, ISO 8601 with microseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def read_request_log(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a request log (a half-written last line is skipped)."""
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):
        line = line.strip()
        if not line:
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries
