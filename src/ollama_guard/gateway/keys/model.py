"""A key's public record (``ApiKey``) and its role (``Role``): what the rest of the gateway sees of a key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ollama_guard.errors import InputError


class Role(StrEnum):
    """What a key may do; each role includes the ones before it."""

    READ = "read"
    INFERENCE = "inference"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]

    def includes(self, other: Role | str) -> bool:
        """True if this role grants everything ``other`` grants (read ⊂ inference ⊂ admin)."""
        return self.rank >= Role(other).rank


_ROLE_RANK = {Role.READ: 0, Role.INFERENCE: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class ApiKey:
    """A key's public record (never its secret or hash)."""

    id: str
    name: str
    role: Role
    models: tuple[str, ...]  # patterns as given; ("*",) = every model; empty = none (never "all")
    rpm: int | None
    concurrency: int | None
    tokens_per_day: int | None
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    revoked_at: datetime | None = None
    damaged: str | None = None  # why the stored record cannot be trusted (the key is refused)

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at

    def is_usable(self, now: datetime | None = None) -> bool:
        return self.damaged is None and not self.revoked and not self.is_expired(now)

    def status(self, now: datetime | None = None) -> str:
        if self.revoked:
            return "revoked"
        if self.damaged is not None:
            return "damaged"
        return "expired" if self.is_expired(now) else "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": str(self.role),
            "models": list(self.models),
            "rpm": self.rpm,
            "concurrency": self.concurrency,
            "tokens_per_day": self.tokens_per_day,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked": self.revoked,
            "revoked_at": _iso(self.revoked_at),
            "status": self.status(),
            **({"damaged": self.damaged} if self.damaged else {}),
        }


class KeyNotFound(InputError):
    """No key has this name or id."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")
