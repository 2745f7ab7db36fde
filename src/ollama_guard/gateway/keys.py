"""API keys: creation and management (``KeyStore``) and the request-path check (``KeyAuthenticator``).

Key format: ``og_<key id>_<secret>`` — ``og_`` says what it is (and lets secret scanners find leaked
keys), the key id (16 hex digits) is public and selects the record, the secret is 256 bits from
``secrets`` in base64url (43 characters). Only HMAC-SHA256(derived server key, "<id>:<secret>") is
stored; a presented key is hashed the same way and compared with ``hmac.compare_digest``.

The authenticator never touches the database on the request path in the common case: it keeps a
snapshot of every active key in memory and a background task polls ``og_state.key_generation``
(bumped in the same transaction as every key change) every ``poll_interval`` seconds, reloading the
snapshot when it moves (in its own thread and event loop, so a busy serving loop cannot starve
it) — so a revocation or rotation in any process or replica takes effect within
about ``poll_interval`` + one query. An unknown key id or a wrong secret triggers at most one
coalesced extra poll (rate-limited, so random keys cannot flood the database), and the result is
remembered in a bounded negative cache. If the store cannot be read for longer than ``stale_after``
seconds, ``authenticate`` raises ``StoreUnavailable`` (fail closed) instead of trusting old data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.bgloop import BackgroundLoop, engine_for_loop
from ollama_guard.gateway.db import (
    SecretMismatch,
    api_keys_table,
    bind_secret,
    immediate,
    short_db_error,
    sqlite_path,
    state_table,
)
from ollama_guard.gateway.limits import StoreUnavailable
from ollama_guard.gateway.secrets import PURPOSE_KEY_HASH, derive_key, secret_fingerprint

log = logging.getLogger(__name__)

KEY_PREFIX = "og_"
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_TOKEN_RE = re.compile(r"og_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}")
_PATTERN_CHARS_RE = re.compile(r"[A-Za-z0-9._:/*?\[\]!-]+")
MAX_PATTERNS = 64
MAX_PATTERN_LENGTH = 400


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


# ---------------------------------------------------------------------------------------------------
# helpers


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _to_db_time(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _from_db_time(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def parse_token(presented: str) -> tuple[str, str] | None:
    """``og_<id>_<secret>`` → (id, secret); None if it is not in that shape."""
    if not isinstance(presented, str) or len(presented) > 80:
        return None
    match = _TOKEN_RE.fullmatch(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def looks_like_key(text: str) -> bool:
    return parse_token(text) is not None


def _hash_secret(hash_key: bytes, key_id: str, secret: str) -> bytes:
    return hmac.new(hash_key, f"{key_id}:{secret}".encode("ascii"), hashlib.sha256).digest()


def key_version(secret_hash_hex: str) -> str:
    """A public label of a key's current secret (changes on rotation; reveals nothing of the hash)."""
    return hashlib.sha256(b"ollama-guard key version v1:" + secret_hash_hex.encode()).hexdigest()[:32]


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InputError(
            f"invalid key name {name!r}: use 1-64 letters, digits and . _ @ : + - "
            "(starting with a letter or digit)"
        )
    if _KEY_ID_RE.fullmatch(name):
        raise InputError(f"invalid key name {name!r}: it looks like a key id (16 hex digits)")
    return name


def _parses_as_model_name(candidate: str) -> bool:
    try:
        from ollama_guard.ollama.names import InvalidModelName, parse_model_name
    except ImportError:  # pragma: no cover - the knowledge base ships with the package
        return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._:/-]*", candidate))
    try:
        parse_model_name(candidate)
    except InvalidModelName:
        return False
    return True


def validate_model_pattern(pattern: str) -> str:
    """A model name or glob (``llama3*``, ``library/*``, ``hf.co/*/*``); returned unchanged.

    A glob matches within one name part (host, namespace, model, tag), so each pattern must still
    have the shape of a model name once every glob is replaced by a plain part; and the gateway's own
    matcher must accept it.
    """
    hint = "use a model name or a glob such as llama3*, library/* or hf.co/*/*"
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH or not _PATTERN_CHARS_RE.fullmatch(pattern):
        raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    if pattern != "*":
        without_classes = re.sub(r"\[[^\]]*\]", "x", pattern)
        if "[" in without_classes or "]" in without_classes:
            raise InputError(f"invalid model pattern {pattern!r}: unbalanced [ ]")
        candidate = re.sub(r"[*?]+", "x", without_classes)
        if not _parses_as_model_name(candidate):
            raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    try:
        from ollama_guard.gateway.patterns import pattern_is_valid
    except ImportError:  # pragma: no cover - policy ships with the gateway
        return pattern
    if not pattern_is_valid(pattern):
        raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    return pattern


ALL_MODELS = ("*",)


def validate_patterns(models: Iterable[str] | None) -> tuple[str, ...]:
    """The key's model grant: None (not given) → every model, stored explicitly as ``("*",)``.

    An empty list, or an empty or blank pattern in it (``--models ''``, ``--models ','``, an empty shell
    variable) is refused: it must never be read as "all models".
    """
    if models is None:
        return ALL_MODELS
    if isinstance(models, str):
        raise InputError("model patterns must be a list")
    given = list(models)
    if not given:
        raise InputError(
            "--models is empty: name the models the key may use (or leave --models out for every model)"
        )
    if any(not isinstance(p, str) or not p.strip() for p in given):
        raise InputError(f"--models has an empty pattern ({','.join(map(str, given))!r}); remove it")
    patterns = tuple(p.strip() for p in given)
    if len(patterns) > MAX_PATTERNS:
        raise InputError(f"at most {MAX_PATTERNS} model patterns per key")
    return tuple(dict.fromkeys(validate_model_pattern(p) for p in patterns))


def _positive_or_none(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a whole number of at least 1 (leave it out for no limit)")
    return value


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


def _row_to_key(row: Any) -> ApiKey:
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


async def _bump_generation(conn: AsyncConnection) -> None:
    await conn.execute(
        update(state_table)
        .where(state_table.c.id == 1)
        .values(key_generation=state_table.c.key_generation + 1)
    )


# ---------------------------------------------------------------------------------------------------
# management


class KeyStore:
    """Create, list, revoke and rotate keys. Every change bumps the key generation in its transaction."""

    def __init__(self, engine: AsyncEngine, secret: bytes) -> None:
        self._engine = engine
        self._writer = immediate(engine)
        self._hash_key = derive_key(secret, PURPOSE_KEY_HASH)
        self._fingerprint = secret_fingerprint(secret)

    def _new_secret(self, key_id: str) -> tuple[str, str]:
        """(token to hand out, hex hash to store)."""
        secret = secrets.token_urlsafe(32)
        token = f"{KEY_PREFIX}{key_id}_{secret}"
        return token, _hash_secret(self._hash_key, key_id, secret).hex()

    async def create(
        self,
        name: str,
        role: Role | str,
        models: Sequence[str] | None = None,
        rpm: int | None = None,
        concurrency: int | None = None,
        tokens_per_day: int | None = None,
        expires_days: float | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (shown once; only its hash is kept)."""
        validate_name(name)
        try:
            role = Role(role)
        except ValueError:
            raise InputError(f"invalid role {role!r}: use read, inference or admin") from None
        patterns = validate_patterns(models)
        rpm = _positive_or_none(rpm, "rpm")
        concurrency = _positive_or_none(concurrency, "concurrency")
        tokens_per_day = _positive_or_none(tokens_per_day, "tokens per day")
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = None
        if expires_days is not None:
            if isinstance(expires_days, bool) or not expires_days > 0 or expires_days > 36500:
                raise InputError("expiry must be between 0 and 36500 days")
            expires_at = now + timedelta(days=expires_days)
        key_id = secrets.token_hex(8)
        token, stored_hash = self._new_secret(key_id)
        key = ApiKey(key_id, name, role, patterns, rpm, concurrency, tokens_per_day, now, expires_at, False)
        try:
            async with self._writer.begin() as conn:
                await bind_secret(conn, self._fingerprint)
                if await self._active_by_name(conn, name) is not None:
                    raise InputError(f"a key named {name!r} already exists (revoke it or pick another name)")
                await conn.execute(
                    insert(api_keys_table).values(
                        id=key_id,
                        name=name,
                        role=str(role),
                        models=json.dumps(list(patterns)),
                        rpm=rpm,
                        concurrency=concurrency,
                        tokens_per_day=tokens_per_day,
                        secret_hash=stored_hash,
                        created_at=_to_db_time(now),
                        expires_at=_to_db_time(expires_at) if expires_at else None,
                        revoked=False,
                        revoked_at=None,
                        updated_at=_to_db_time(now),
                    )
                )
                await _bump_generation(conn)
        except IntegrityError:
            raise InputError(
                f"a key named {name!r} already exists (revoke it or pick another name)"
            ) from None
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot store the key: {short_db_error(exc)}") from None
        return key, token

    async def list(self) -> list[ApiKey]:
        try:
            async with self._engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(api_keys_table).order_by(api_keys_table.c.created_at, api_keys_table.c.name)
                    )
                ).all()
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot read keys: {short_db_error(exc)}") from None
        return [_row_to_key(r) for r in rows]

    async def get(self, name_or_id: str) -> ApiKey:
        async with self._engine.connect() as conn:
            return _row_to_key(await self._resolve(conn, name_or_id, allow_revoked=True))

    @staticmethod
    async def _active_by_name(conn: AsyncConnection, name: str) -> Any:
        return (
            await conn.execute(
                select(api_keys_table).where(
                    api_keys_table.c.name == name, api_keys_table.c.revoked.is_(False)
                )
            )
        ).first()

    async def _resolve(self, conn: AsyncConnection, name_or_id: str, *, allow_revoked: bool) -> Any:
        """By id first, then an active key by name, then (if allowed) the newest revoked key by name."""
        row = (await conn.execute(select(api_keys_table).where(api_keys_table.c.id == name_or_id))).first()
        if row is None:
            row = await self._active_by_name(conn, name_or_id)
        if row is None and allow_revoked:
            row = (
                await conn.execute(
                    select(api_keys_table)
                    .where(api_keys_table.c.name == name_or_id)
                    .order_by(api_keys_table.c.updated_at.desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            raise KeyNotFound(f"no key named {name_or_id!r} (see: ollama-guard keys list)")
        return row

    async def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the key (idempotent). Every gateway process stops accepting it within about a second."""
        now = datetime.now(UTC)
        try:
            async with self._writer.begin() as conn:
                await bind_secret(conn, self._fingerprint)
                row = await self._resolve(conn, name_or_id, allow_revoked=True)
                if row.revoked:
                    return _row_to_key(row)
                await conn.execute(
                    update(api_keys_table)
                    .where(api_keys_table.c.id == row.id)
                    .values(revoked=True, revoked_at=_to_db_time(now), updated_at=_to_db_time(now))
                )
                await _bump_generation(conn)
                row = (await conn.execute(select(api_keys_table).where(api_keys_table.c.id == row.id))).one()
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot revoke the key: {short_db_error(exc)}") from None
        return _row_to_key(row)

    async def rotate(self, name_or_id: str, *, expected_version: str | None = None) -> tuple[ApiKey, str]:
        """A new secret for the same key (same id, name and limits); the old secret stops working.

        ``expected_version``: rotate only if the key's ``key_version`` is still this one (a form sent
        twice must not rotate twice and throw away the secret shown the first time).
        """
        now = datetime.now(UTC)
        try:
            async with self._writer.begin() as conn:
                await bind_secret(conn, self._fingerprint)
                row = await self._resolve(conn, name_or_id, allow_revoked=True)
                if row.revoked:
                    raise InputError(f"key {row.name!r} ({row.id}) is revoked; create a new key instead")
                damaged = _row_to_key(row).damaged
                if damaged:  # a new secret would not make the stored grant trustworthy
                    raise InputError(
                        f"key {row.name!r} ({row.id}) has a damaged record ({damaged}); "
                        "revoke it and create a new key"
                    )
                if expected_version is not None and not hmac.compare_digest(
                    key_version(row.secret_hash), expected_version
                ):
                    raise InputError(f"key {row.name!r} was rotated since this form was made")
                token, stored_hash = self._new_secret(row.id)
                await conn.execute(
                    update(api_keys_table)
                    .where(api_keys_table.c.id == row.id)
                    .values(secret_hash=stored_hash, updated_at=_to_db_time(now))
                )
                await _bump_generation(conn)
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot rotate the key: {short_db_error(exc)}") from None
        return _row_to_key(row), token

    async def update(
        self,
        name_or_id: str,
        *,
        models: Sequence[str] | None,
        rpm: int | None,
        concurrency: int | None,
        tokens_per_day: int | None,
    ) -> ApiKey:
        """Replace an active key's model patterns and limits (validated as on create)."""
        if models is None:  # unlike create, "not given" here must not turn into "every model"
            raise InputError("give the models this key may use (patterns, or * for every model)")
        patterns = validate_patterns(models)
        values = {
            "models": json.dumps(list(patterns)),
            "rpm": _positive_or_none(rpm, "rpm"),
            "concurrency": _positive_or_none(concurrency, "concurrency"),
            "tokens_per_day": _positive_or_none(tokens_per_day, "tokens per day"),
        }
        now = datetime.now(UTC)
        try:
            async with self._writer.begin() as conn:
                await bind_secret(conn, self._fingerprint)
                row = await self._resolve(conn, name_or_id, allow_revoked=True)
                if row.revoked:
                    raise InputError(f"key {row.name!r} ({row.id}) is revoked")
                await conn.execute(
                    update(api_keys_table)
                    .where(api_keys_table.c.id == row.id)
                    .values(**values, updated_at=_to_db_time(now))
                )
                await _bump_generation(conn)
                row = (await conn.execute(select(api_keys_table).where(api_keys_table.c.id == row.id))).one()
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot update the key: {short_db_error(exc)}") from None
        return _row_to_key(row)


# ---------------------------------------------------------------------------------------------------
# request path



@dataclass(frozen=True)
class _Entry:
    key: ApiKey
    secret_hash: bytes


def _snapshot_of(rows: Sequence[Any]) -> dict[str, _Entry]:
    """Usable keys by id. A damaged row refuses that key only (logged), never every key or none."""
    snapshot: dict[str, _Entry] = {}
    for row in rows:
        key = _row_to_key(row)
        try:
            digest = bytes.fromhex(row.secret_hash or "")
        except (TypeError, ValueError):
            digest = b""
        if key.damaged is None and len(digest) != hashlib.sha256().digest_size:
            key = replace(key, damaged="its secret hash is not a SHA-256 digest")
        if key.damaged is not None:
            log.warning("API key %r (id %s) is refused: %s", key.name, key.id, key.damaged)
            continue
        snapshot[key.id] = _Entry(key, digest)
    return snapshot


class KeyAuthenticator:
    """Checks presented keys against an in-memory snapshot kept fresh by a background poller."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: bytes,
        *,
        poll_interval: float = 0.25,
        stale_after: float = 5.0,
        query_timeout: float = 2.0,
        miss_refresh_interval: float = 0.1,
        negative_cache_size: int = 10_000,
        negative_cache_ttl: float = 5.0,
    ) -> None:
        self._engine = engine
        self._hash_key = derive_key(secret, PURPOSE_KEY_HASH)
        self._fingerprint = secret_fingerprint(secret)
        self._poll_interval = poll_interval
        self._stale_after = stale_after
        self._query_timeout = query_timeout
        self._miss_refresh_interval = miss_refresh_interval
        self._negative_size = negative_cache_size
        self._negative_ttl = negative_cache_ttl
        self._snapshot: dict[str, _Entry] = {}
        self._generation: int | None = None
        self._last_ok = float("-inf")
        self._last_miss_refresh = float("-inf")
        self._poll_lock = asyncio.Lock()
        self._negative: OrderedDict[bytes, tuple[int | None, float]] = OrderedDict()
        self._poller: concurrent.futures.Future[None] | None = None
        self._last_error: str | None = None
        self._background = BackgroundLoop("ollama-guard key poller")
        self._poll_engine: AsyncEngine | None = None  # used in the poller thread only
        self._owns_poll_engine = False
        self._poll_conn: AsyncConnection | None = None  # the poller thread's persistent connection
        self._poll_file: tuple[int, int] | None = None  # SQLite: the file the connection has open

    # lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the keys (GuardError if that fails) and start polling for changes.

        Polling runs in a thread with its own event loop, so a busy serving loop cannot delay it:
        the snapshot only goes stale when the store itself does not answer.
        """
        try:
            async with immediate(self._engine).begin() as conn:
                await bind_secret(conn, self._fingerprint)
        except SecretMismatch:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise GuardError(f"cannot load API keys: {short_db_error(exc)}") from None
        if self._poll_engine is None:
            self._poll_engine, self._owns_poll_engine = engine_for_loop(self._engine)
        self._background.start()
        try:
            await self._background.run(asyncio.wait_for(self._poll(), timeout=self._query_timeout * 2))
        except SecretMismatch:
            await self._stop_background()
            raise
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            await self._stop_background()
            raise GuardError(f"cannot load API keys: {short_db_error(exc)}") from None
        if self._poller is None:
            self._poller = self._background.submit(self._poll_forever())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        await self._stop_background()

    async def _stop_background(self) -> None:
        if not self._background.running:
            return
        limit = self._query_timeout * 2  # stopping never waits on a database that does not answer
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._background.run(self._drop_poll_connection()), timeout=limit)
        if self._owns_poll_engine and self._poll_engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._background.run(self._poll_engine.dispose()), timeout=limit)
            self._poll_engine = None
        await self._background.stop()

    # polling (in the poller thread) ---------------------------------------------------------------
    async def _poll_connection(self) -> AsyncConnection:
        """The poller's one persistent connection (not one per poll: with SQLite's NullPool that was a
        new thread and connection every 0.25 s); reopened after an error or when the SQLite file was
        replaced."""
        assert self._poll_engine is not None
        path = sqlite_path(str(self._poll_engine.url))
        identity = None
        if path is not None:
            with contextlib.suppress(OSError):
                stat = os.stat(path)
                identity = (stat.st_dev, stat.st_ino)
        conn = self._poll_conn
        if conn is not None and (conn.closed or conn.invalidated or identity != self._poll_file):
            await self._drop_poll_connection()
            conn = None
        if conn is None:
            conn = self._poll_conn = await self._poll_engine.connect()
            self._poll_file = identity
        return conn

    async def _drop_poll_connection(self) -> None:
        conn, self._poll_conn = self._poll_conn, None
        if conn is not None:
            # bounded: a connection whose last operation was cut off (a poll cancelled by its timeout or
            # by close) may never answer, and closing must not hold the poll lock or close() forever
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=self._query_timeout)

    async def _poll(self) -> None:
        async with self._poll_lock:
            try:
                await self._poll_once(await self._poll_connection())
            except BaseException:
                await self._drop_poll_connection()
                raise
            self._last_ok = time.monotonic()
            if self._last_error is not None:
                log.warning("API key store readable again")
                self._last_error = None

    async def _poll_once(self, conn: AsyncConnection) -> None:
        async with conn.begin():
            state = (
                await conn.execute(
                    select(state_table.c.key_generation, state_table.c.secret_fingerprint).where(
                        state_table.c.id == 1
                    )
                )
            ).one()
            if state.secret_fingerprint not in (None, self._fingerprint):
                raise SecretMismatch("the server secret no longer matches the database")
            if state.key_generation != self._generation:
                rows = (
                    await conn.execute(select(api_keys_table).where(api_keys_table.c.revoked.is_(False)))
                ).all()
                # one assignment each: the serving thread sees the old or the new snapshot
                self._snapshot = _snapshot_of(rows)
                self._generation = state.key_generation

    async def _poll_guarded(self) -> None:
        try:
            # the poller's loop does nothing else, so this times out on the database alone
            await asyncio.wait_for(self._poll(), timeout=self._query_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the poller must survive; staleness makes authenticate fail closed
            message = self._describe_failure(exc)
            if message != self._last_error:
                log.error("cannot read API keys: %s", message)
                self._last_error = message

    def _describe_failure(self, exc: Exception) -> str:
        """One line an operator can act on (never ``TimeoutError: TimeoutError``)."""
        refused = f"keys are refused once the store has been unreadable for {self._stale_after:g} s"
        if isinstance(exc, TimeoutError):
            return (
                f"the key database did not answer within {self._query_timeout:g} s "
                f"(is it overloaded or unreachable?); {refused}"
            )
        detail = short_db_error(exc)
        name = type(exc).__name__
        text = detail if not detail or detail.startswith(name) else f"{name}: {detail}"
        return f"{text or name}; {refused}"

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            await self._poll_guarded()

    async def _refresh_after_miss(self) -> None:
        """At most one extra poll per ``miss_refresh_interval``; callers during a poll wait for it."""
        if not self._poll_lock.locked():
            now = time.monotonic()
            if now - self._last_miss_refresh < self._miss_refresh_interval:
                return
        await self._background.run(self._refresh_in_poller())

    async def _refresh_in_poller(self) -> None:
        if self._poll_lock.locked():
            async with self._poll_lock:
                return
        now = time.monotonic()
        if now - self._last_miss_refresh < self._miss_refresh_interval:
            return
        self._last_miss_refresh = now
        await self._poll_guarded()

    @property
    def fresh(self) -> bool:
        """Whether the key snapshot may be trusted (the store answered within ``stale_after``)."""
        return time.monotonic() - self._last_ok <= self._stale_after

    def _check_fresh(self) -> None:
        age = time.monotonic() - self._last_ok
        if age > self._stale_after:
            raise StoreUnavailable(
                f"API key store unreadable for {age:.1f} s"
                if self._last_ok > float("-inf")
                else "API key store not loaded"
            )

    # negative cache -------------------------------------------------------------------------------
    def _known_bad(self, digest: bytes) -> bool:
        hit = self._negative.get(digest)
        if hit is None:
            return False
        generation, expires = hit
        if generation != self._generation or time.monotonic() > expires:
            del self._negative[digest]
            return False
        return True

    def _remember_bad(self, digest: bytes) -> None:
        self._negative[digest] = (self._generation, time.monotonic() + self._negative_ttl)
        self._negative.move_to_end(digest)
        while len(self._negative) > self._negative_size:
            self._negative.popitem(last=False)

    # the check ------------------------------------------------------------------------------------
    def _match(self, key_id: str, digest: bytes) -> ApiKey | None:
        entry = self._snapshot.get(key_id)
        if entry is None or not hmac.compare_digest(entry.secret_hash, digest):
            return None
        return entry.key

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The key's record if ``presented`` is a valid, unexpired, unrevoked key; else None.

        Raises ``StoreUnavailable`` when the key store has been unreadable for too long.
        """
        parsed = parse_token(presented)
        if parsed is None:
            return None
        self._check_fresh()
        key_id, secret = parsed
        digest = _hash_secret(self._hash_key, key_id, secret)
        key = self._match(key_id, digest)
        if key is None:
            if self._known_bad(digest):
                return None
            await self._refresh_after_miss()  # a key created or rotated a moment ago elsewhere
            self._check_fresh()
            key = self._match(key_id, digest)
            if key is None:
                self._remember_bad(digest)
                return None
        if not key.is_usable():
            return None
        return key

    def usable_entry(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        """The usable key with this id and its stored secret hash, from the snapshot (no I/O)."""
        entry = self._snapshot.get(key_id)
        if entry is None or not entry.key.is_usable():
            return None
        return entry.key, entry.secret_hash

    # introspection (metrics, health) ----------------------------------------------------------------
    @property
    def snapshot_age(self) -> float:
        return time.monotonic() - self._last_ok

    @property
    def key_count(self) -> int:
        return len(self._snapshot)
