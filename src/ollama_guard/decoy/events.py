"""The decoy's request log as honeypot events: every line keeps the original fields (time, client,
method, path, query, headers, body…, status, duration_ms) and adds Elastic Common Schema names, so a SIEM,
`investigate` and `watch` read it without a mapping. Schema: docs/decoy.md ("What is recorded").

Sessions: requests from one client address belong to one session until it has been idle for
SESSION_IDLE seconds; the id is random (not derived from the address) and the tracker is bounded.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSION_IDLE = 1800.0
MAX_TRACKED_CLIENTS = 65536
DATASET = "decoy.requests"


class SessionTracker:
    """Client address → (session id, requests so far, last seen), least recently seen dropped first."""

    def __init__(self, idle: float = SESSION_IDLE, capacity: int = MAX_TRACKED_CLIENTS) -> None:
        self.idle = idle
        self.capacity = capacity
        self._clients: OrderedDict[str, tuple[str, int, float]] = OrderedDict()

    def touch(self, ip: str, now: float | None = None) -> tuple[str, int]:
        """The session id and this request's number in it (1 = the session's first request)."""
        now = time.monotonic() if now is None else now
        known = self._clients.pop(ip, None)
        if known is None or now - known[2] > self.idle:
            session, count = secrets.token_hex(8), 0
        else:
            session, count = known[0], known[1]
        self._clients[ip] = (session, count + 1, now)
        while len(self._clients) > self.capacity:
            self._clients.popitem(last=False)
        return session, count + 1


def _split_client(client: str) -> tuple[str, int | None]:
    host, _, port = client.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return client, None


def ecs_fields(entry: dict[str, Any], *, session: str, sequence: int, version: str) -> dict[str, Any]:
    """The ECS view of one request-log entry (the original keys are kept alongside)."""
    ip, port = _split_client(entry.get("client", ""))
    status = entry.get("status") or 0
    headers = {name.lower(): value for name, value in entry.get("headers", [])}
    target = entry.get("path", "") + (f"?{entry['query']}" if entry.get("query") else "")
    fields: dict[str, Any] = {
        "@timestamp": entry.get("time"),
        "event": {
            "kind": "event",
            "category": ["web", "intrusion_detection"],
            "type": ["access"],
            "action": entry.get("action", "http-request"),
            "dataset": DATASET,
            "outcome": "success" if 0 < status < 400 else "failure",
            "duration": int((entry.get("duration_ms") or 0) * 1_000_000),
        },
        "source": {"ip": ip, **({"port": port} if port is not None else {})},
        "http": {
            "version": entry.get("http_version", "1.1"),
            "request": {"method": entry.get("method", ""), "body": {"bytes": entry.get("body_size", 0)}},
            "response": {"status_code": status},
        },
        "url": {"original": target, "path": entry.get("path", ""), "query": entry.get("query", "")},
        "observer": {"type": "honeypot", "version": version},
        "decoy": {"session": {"id": session, "sequence": sequence}},
    }
    if "user-agent" in headers:
        fields["user_agent"] = {"original": headers["user-agent"]}
    if entry.get("body_sha256"):
        fields["file"] = {
            "hash": {"sha256": entry["body_sha256"].removeprefix("sha256:")},
            "size": entry.get("body_size", 0),
        }
        fields["decoy"]["upload"] = {"head_hex": entry.get("body_head_hex", "")}
    return fields


def rotated_files(path: Path) -> list[Path]:
    """The log and its rotated predecessors, oldest first (FILE.3, FILE.2, FILE.1, FILE)."""
    older = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            older.append((int(suffix), candidate))
    return [p for _, p in sorted(older, reverse=True)] + ([path] if path.exists() else [])


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete event of a decoy request log, rotated files included, oldest first. A line cut by
    a crash or by rotation is skipped; nothing else is."""
    for file in rotated_files(path):
        with file.open("rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    continue
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
