"""Stored key rows → ``ApiKey`` records, and the request path's snapshot of usable keys.

A row that cannot be trusted (a missing or empty model list, a limit of 0, an unknown role, no revoked
flag, a secret hash that is not a SHA-256 digest) becomes a refused ("damaged") key — never a wider grant.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ollama_guard.gateway.keys.model import ApiKey, Role

log = logging.getLogger("ollama_guard.gateway.keys")


def to_db_time(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _from_db_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _stored_models(raw: Any) -> tuple[tuple[str, ...], str | None]:
    """(patterns, problem) of a stored ``models`` column: a JSON list of at least one non-blank pattern.

    Anything else — NULL, "", "[]", not JSON, a blank pattern — is a damaged record, never "all models"
    (keys from before ``("*",)`` was stored for "every model" are among them: re-create them).
    """
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, list) or not value:
        return (), f"its model list is missing or empty ({raw!r})"
    if not all(isinstance(p, str) and p.strip() for p in value):
        return (), "its model list has an empty pattern"
    return tuple(value), None


def _stored_limit(value: Any, what: str) -> tuple[int | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None, f"its {what} limit is {value!r}"  # 0 or less must not read as "no limit"
    return value, None


def row_to_key(row: Any) -> ApiKey:
    """The key of a stored row; a row that cannot be trusted becomes a refused key (``damaged``)."""
    problems: list[str] = []
    try:
        role = Role(row.role)
    except ValueError:
        role = Role.READ
        problems.append(f"its role is {row.role!r}")
    models, problem = _stored_models(row.models)
    if problem:
        problems.append(problem)
    limits: dict[str, int | None] = {}
    for field, what in (("rpm", "rpm"), ("concurrency", "concurrency"), ("tokens_per_day", "token")):
        limits[field], problem = _stored_limit(getattr(row, field), what)
        if problem:
            problems.append(problem)
    if row.revoked is None:
        problems.append("its revoked flag is missing")
    created = _from_db_time(row.created_at) or datetime.fromtimestamp(0, UTC)
    return ApiKey(
        id=row.id,
        name=row.name,
        role=role,
        models=models,
        rpm=limits["rpm"],
        concurrency=limits["concurrency"],
        tokens_per_day=limits["tokens_per_day"],
        created_at=created,
        expires_at=_from_db_time(row.expires_at),
        revoked=bool(row.revoked) or row.revoked is None,
        revoked_at=_from_db_time(row.revoked_at),
        damaged="; ".join(problems) or None,
    )


@dataclass(frozen=True)
class KeyEntry:
    """A usable key and its stored secret hash, as the request path holds it in memory."""

    key: ApiKey
    secret_hash: bytes


def snapshot_of(rows: Sequence[Any]) -> dict[str, KeyEntry]:
    """Usable keys by id. A damaged row refuses that key only (logged), never every key or none."""
    snapshot: dict[str, KeyEntry] = {}
    for row in rows:
        key = row_to_key(row)
        try:
            digest = bytes.fromhex(row.secret_hash or "")
        except (TypeError, ValueError):
            digest = b""
        if key.damaged is None and len(digest) != hashlib.sha256().digest_size:
            key = replace(key, damaged="its secret hash is not a SHA-256 digest")
        if key.damaged is not None:
            log.warning("API key %r (id %s) is refused: %s", key.name, key.id, key.damaged)
            continue
        snapshot[key.id] = KeyEntry(key, digest)
    return snapshot
