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

BODY_LOG_LIMIT = 64 * 1024


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
        elif len(self._head) < BODY_LOG_LIMIT:
            self._head += chunk[: BODY_LOG_LIMIT - len(self._head)]

    def entry(self) -> dict[str, Any]:
        """The body fields of a log line."""
        if self._sha is not None:
            return {"body": None, "body_size": self.size, "body_sha256": "sha256:" + self._sha.hexdigest()}
        return {
            "body": self._head.decode("utf-8", errors="replace"),
            "body_size": self.size,
            "body_truncated": self.size > len(self._head),
        }


class RequestLog:
    """An append-only JSON-lines file; each write is one flushed line (safe across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        # ASCII-only lines: no raw U+2028/U+0085 that line splitters other than "\n" would break on.
        line = json.dumps(entry, ensure_ascii=True, separators=(",", ":")) + "\n"
        with self._lock:
            os.write(self._fd, line.encode("ascii"))

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
