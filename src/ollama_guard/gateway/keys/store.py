"""Key management (``KeyStore``): create, list, revoke, rotate and update keys in the gateway database.

Every change bumps ``og_state.key_generation`` in its own transaction, which is how every gateway process
and replica learns of it (see ``keys.poller``). A new secret is shown once; only its hash is stored.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.db import api_keys_table, bind_secret, immediate, short_db_error, state_table
from ollama_guard.gateway.keys.model import ApiKey, KeyNotFound, Role
from ollama_guard.gateway.keys.rows import row_to_key, to_db_time
from ollama_guard.gateway.keys.tokens import key_version, new_secret
from ollama_guard.gateway.keys.validation import positive_or_none, validate_name, validate_patterns
from ollama_guard.gateway.secrets import PURPOSE_KEY_HASH, derive_key, secret_fingerprint


async def _bump_generation(conn: AsyncConnection) -> None:
    await conn.execute(
        update(state_table)
        .where(state_table.c.id == 1)
        .values(key_generation=state_table.c.key_generation + 1)
    )


async def _set(conn: AsyncConnection, key_id: str, now: datetime, **values: Any) -> Any:
    """Change a key's row and bump the key generation, in the caller's transaction; the row as it is now."""
    await conn.execute(
        update(api_keys_table)
        .where(api_keys_table.c.id == key_id)
        .values(**values, updated_at=to_db_time(now))
    )
    await _bump_generation(conn)
    return (await conn.execute(select(api_keys_table).where(api_keys_table.c.id == key_id))).one()


class KeyStore:
    """Create, list, revoke and rotate keys. Every change bumps the key generation in its transaction."""

    def __init__(self, engine: AsyncEngine, secret: bytes) -> None:
        self._engine = engine
        self._writer = immediate(engine)
        self._hash_key = derive_key(secret, PURPOSE_KEY_HASH)
        self._fingerprint = secret_fingerprint(secret)

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
        rpm = positive_or_none(rpm, "rpm")
        concurrency = positive_or_none(concurrency, "concurrency")
        tokens_per_day = positive_or_none(tokens_per_day, "tokens per day")
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = None
        if expires_days is not None:
            if isinstance(expires_days, bool) or not expires_days > 0 or expires_days > 36500:
                raise InputError("expiry must be between 0 and 36500 days")
            expires_at = now + timedelta(days=expires_days)
        key_id = secrets.token_hex(8)
        token, stored_hash = new_secret(self._hash_key, key_id)
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
                        created_at=to_db_time(now),
                        expires_at=to_db_time(expires_at) if expires_at else None,
                        revoked=False,
                        revoked_at=None,
                        updated_at=to_db_time(now),
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
        return [row_to_key(r) for r in rows]

    async def get(self, name_or_id: str) -> ApiKey:
        async with self._engine.connect() as conn:
            return row_to_key(await self._resolve(conn, name_or_id, allow_revoked=True))

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

    @contextlib.asynccontextmanager
    async def _changing(self, what: str) -> AsyncIterator[AsyncConnection]:
        """A write transaction bound to this server secret; a database error is ``cannot <what>: …``."""
        try:
            async with self._writer.begin() as conn:
                await bind_secret(conn, self._fingerprint)
                yield conn
        except SQLAlchemyError as exc:
            raise GuardError(f"cannot {what}: {short_db_error(exc)}") from None

    async def revoke(self, name_or_id: str) -> ApiKey:
        """Revoke the key (idempotent). Every gateway process stops accepting it within about a second."""
        now = datetime.now(UTC)
        async with self._changing("revoke the key") as conn:
            row = await self._resolve(conn, name_or_id, allow_revoked=True)
            if not row.revoked:
                row = await _set(conn, row.id, now, revoked=True, revoked_at=to_db_time(now))
        return row_to_key(row)

    async def rotate(self, name_or_id: str, *, expected_version: str | None = None) -> tuple[ApiKey, str]:
        """A new secret for the same key (same id, name and limits); the old secret stops working.

        ``expected_version``: rotate only if the key's ``key_version`` is still this one (a form sent
        twice must not rotate twice and throw away the secret shown the first time).
        """
        now = datetime.now(UTC)
        async with self._changing("rotate the key") as conn:
            row = await self._resolve(conn, name_or_id, allow_revoked=True)
            if row.revoked:
                raise InputError(f"key {row.name!r} ({row.id}) is revoked; create a new key instead")
            damaged = row_to_key(row).damaged
            if damaged:  # a new secret would not make the stored grant trustworthy
                raise InputError(
                    f"key {row.name!r} ({row.id}) has a damaged record ({damaged}); "
                    "revoke it and create a new key"
                )
            if expected_version is not None and not hmac.compare_digest(
                key_version(row.secret_hash), expected_version
            ):
                raise InputError(f"key {row.name!r} was rotated since this form was made")
            token, stored_hash = new_secret(self._hash_key, row.id)
            row = await _set(conn, row.id, now, secret_hash=stored_hash)
        return row_to_key(row), token

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
            "rpm": positive_or_none(rpm, "rpm"),
            "concurrency": positive_or_none(concurrency, "concurrency"),
            "tokens_per_day": positive_or_none(tokens_per_day, "tokens per day"),
        }
        now = datetime.now(UTC)
        async with self._changing("update the key") as conn:
            row = await self._resolve(conn, name_or_id, allow_revoked=True)
            if row.revoked:
                raise InputError(f"key {row.name!r} ({row.id}) is revoked")
            row = await _set(conn, row.id, now, **values)
        return row_to_key(row)
