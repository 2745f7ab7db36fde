"""One audit record: its fields, how they are normalised for storage, and their canonical bytes.

The request path hands the audit a ``RecordFields`` tuple (cheap to build); the writer process turns it
into stored column values (``stored_values``: bounded printable text, clamped integers, naive UTC time)
and the MAC covers ``canonical(values)`` — sorted-key compact JSON of exactly what the database holds,
including the writer's id, the record's sequence number and its repeat ``count``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _encode_json_string
from typing import Any, NamedTuple

LIMITS = {
    "key_id": 32,
    "key_name": 64,
    "client": 256,
    "method": 16,
    "path": 4096,
    "model": 512,
    "decision": 8,
    "reason": 1024,
    "request_id": 64,
}
_INT_MAX = 2**62


class RecordFields(NamedTuple):
    """What the request path records: ``time`` is seconds since the epoch (``time.time()``)."""

    time: float
    key_id: str | None
    key_name: str | None
    client: str
    method: str
    path: str
    model: str | None
    status: int
    decision: str
    reason: str
    bytes_in: int
    bytes_out: int
    tokens: int
    latency_ms: float
    request_id: str


RECORD_FIELDS = RecordFields._fields


@dataclass
class AuditRecord:
    """One stored record. ``writer``/``seq`` place it in its writer's chain; ``count`` > 1 for an
    aggregated row (repeated refusals of unauthenticated traffic from one client for one reason)."""

    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_id: str | None = None
    key_name: str | None = None
    client: str = ""
    method: str = ""
    path: str = ""
    model: str | None = None
    status: int = 0
    decision: str = "deny"  # "allow" | "deny"
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0
    latency_ms: float = 0.0
    request_id: str = ""
    count: int = 1
    writer: str = ""
    seq: int | None = None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "writer": self.writer,
            "seq": self.seq,
            "time": time_text(self.time),
            "key_id": self.key_id,
            "key_name": self.key_name,
            "client": self.client,
            "method": self.method,
            "path": self.path,
            "model": self.model,
            "status": self.status,
            "decision": self.decision,
            "reason": self.reason,
            "count": self.count,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "tokens": self.tokens,
            "latency_ms": self.latency_ms,
            "request_id": self.request_id,
        }


def clean_text(value: Any, limit: int) -> str:
    """Printable, storable text: no NUL (PostgreSQL rejects it), no lone surrogates, bounded length."""
    if type(value) is str and len(value) <= limit and value.isascii() and "\x00" not in value:
        return value  # the common case: nothing to do
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and "\x00" not in text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit]


def clean_int(value: Any) -> int:
    if type(value) is int and -_INT_MAX <= value <= _INT_MAX:
        return value
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(-_INT_MAX, min(_INT_MAX, number))


def utc_naive(value: Any) -> datetime:
    if not isinstance(value, datetime):
        value = datetime.now(UTC)
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def time_text(value: datetime) -> str:
    return utc_naive(value).isoformat(timespec="microseconds") + "Z"


def _latency(value: Any) -> float:
    if type(value) is not float:
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            return 0.0
    return round(value, 3) if math.isfinite(value) else 0.0


def _optional(value: Any, limit: int) -> str | None:
    return None if value is None else clean_text(value, limit)


def stored_values(item: RecordFields | tuple[Any, ...] | AuditRecord, count: int = 1) -> dict[str, Any]:
    """The normalised column values of a record (``time`` as a naive UTC datetime)."""
    if isinstance(item, AuditRecord):
        stamp: Any = item.time
        count = item.count
        fields: tuple[Any, ...] = (
            item.key_id, item.key_name, item.client, item.method, item.path, item.model, item.status,
            item.decision, item.reason, item.bytes_in, item.bytes_out, item.tokens, item.latency_ms,
            item.request_id,
        )
    else:
        stamp, *rest = item
        fields = tuple(rest)
    (key_id, key_name, client, method, path, model, status, decision, reason, bytes_in, bytes_out,
     tokens, latency, request_id) = fields
    if isinstance(stamp, datetime):
        when = utc_naive(stamp)
    elif isinstance(stamp, int | float) and math.isfinite(stamp) and 0 <= stamp < 2**34:
        when = datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)
    else:
        when = utc_naive(None)
    return {
        "time": when,
        "key_id": _optional(key_id, 32),
        "key_name": _optional(key_name, 64),
        "client": clean_text(client, 256),
        "method": clean_text(method, 16),
        "path": clean_text(path, 4096),
        "model": _optional(model, 512),
        "status": clean_int(status),
        "decision": decision if decision in ("allow", "deny") else "deny",
        "reason": clean_text(reason, 1024),
        "count": max(1, clean_int(count)),
        "bytes_in": clean_int(bytes_in),
        "bytes_out": clean_int(bytes_out),
        "tokens": clean_int(tokens),
        "latency_ms": _latency(latency),
        "request_id": clean_text(request_id, 64),
    }


def _json_text(value: str | None) -> str:
    """A JSON string exactly as ``json.dumps(value, ensure_ascii=True)`` writes it (same C encoder)."""
    return "null" if value is None else _encode_json_string(value)


def canonical(writer: str, seq: int, values: dict[str, Any]) -> bytes:
    """Sorted-key compact JSON of the stored values plus ``writer`` and ``seq`` (latency as text with
    three decimals, time as ISO text with microseconds), built without the general JSON encoder."""
    return (
        f'{{"bytes_in":{values["bytes_in"]},"bytes_out":{values["bytes_out"]},'
        f'"client":{_json_text(values["client"])},"count":{values["count"]},'
        f'"decision":{_json_text(values["decision"])},'
        f'"key_id":{_json_text(values["key_id"])},"key_name":{_json_text(values["key_name"])},'
        f'"latency_ms":"{values["latency_ms"]:.3f}","method":{_json_text(values["method"])},'
        f'"model":{_json_text(values["model"])},"path":{_json_text(values["path"])},'
        f'"reason":{_json_text(values["reason"])},"request_id":{_json_text(values["request_id"])},'
        f'"seq":{seq},"status":{values["status"]},'
        f'"time":"{values["time"].isoformat(timespec="microseconds")}Z","tokens":{values["tokens"]},'
        f'"writer":{_json_text(writer)}}}'
    ).encode("ascii")


_REFERENCE_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def reference_canonical(writer: str, seq: int, values: dict[str, Any]) -> bytes:
    """``canonical`` with the general JSON encoder (the definition; tests compare the two)."""
    document = {
        **values,
        "time": values["time"].isoformat(timespec="microseconds") + "Z",
        "latency_ms": f"{float(values['latency_ms']):.3f}",
        "writer": writer,
        "seq": seq,
    }
    return _REFERENCE_ENCODER.encode(document).encode("ascii")


def row_values(row: Any) -> dict[str, Any]:
    """Stored values of a database row (for verification)."""
    when = row.time
    if isinstance(when, str):  # SQLite text, when read without the type
        when = datetime.fromisoformat(when)
    return {
        "time": utc_naive(when),
        "key_id": row.key_id,
        "key_name": row.key_name,
        "client": row.client,
        "method": row.method,
        "path": row.path,
        "model": row.model,
        "status": row.status,
        "decision": row.decision,
        "reason": row.reason,
        "count": row._mapping.get("count", 1),  # the old releases' og_audit_log has no count
        "bytes_in": row.bytes_in,
        "bytes_out": row.bytes_out,
        "tokens": row.tokens,
        "latency_ms": row.latency_ms,
        "request_id": row.request_id,
    }


def row_to_record(row: Any) -> AuditRecord:
    values = row_values(row)
    values["time"] = values["time"].replace(tzinfo=UTC)
    return AuditRecord(**values, writer=row.writer, seq=row.seq, id=row.id)
