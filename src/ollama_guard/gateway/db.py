"""The gateway's database: engine creation (SQLite or PostgreSQL, both async) and the schema.

SQLAlchemy 2 Core only (no ORM). Tables:

* ``og_state``   one row (id=1): ``key_generation`` (bumped by every key change, polled by every
  gateway process so revocation spreads within a second), ``secret_fingerprint`` (which server secret
  this database belongs to), the head of the audit checkpoint chain (``audit_seq``, ``audit_mac``,
  ``audit_head_mac``).
* ``og_api_keys`` one row per key; only an HMAC of the key's secret is stored.
* ``og_audit_records`` the hash-chained audit records, one chain per writer;
  ``og_audit_writers`` each writer's chain head and prune base; ``og_audit_checkpoints`` the shared
  checkpoint chain anchoring every writer's head (see the ``audit`` package).

SQLite connections are opened per use (``NullPool``): each one sees the file as it is now (a replaced
or unreadable file is noticed at once) and WAL mode (set once by ``init_schema``) + a busy timeout let
several processes share it.
Write transactions that need the chain head use ``BEGIN IMMEDIATE`` (``immediate(engine)``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ollama_guard.errors import GuardError
from ollama_guard.paths import data_dir

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 5000
GENESIS_MAC = "0" * 64
_BEGIN_OPTION = "ollama_guard_begin"
_SCHEMA_LOCK_ID = 0x6F67_5F73  # pg advisory lock id used while creating the schema

metadata = MetaData()

state_table = Table(
    "og_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("key_generation", BigInteger, nullable=False, default=0),
    Column("secret_fingerprint", String(64), nullable=True),
    Column("audit_seq", BigInteger, nullable=False, default=0),
    Column("audit_mac", String(64), nullable=False, default=GENESIS_MAC),
    Column("audit_head_mac", String(64), nullable=True),
)

api_keys_table = Table(
    "og_api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("models", Text, nullable=False, default="[]"),  # JSON list of patterns
    Column("rpm", Integer, nullable=True),
    Column("concurrency", Integer, nullable=True),
    Column("tokens_per_day", BigInteger, nullable=True),
    Column("secret_hash", String(64), nullable=False),  # hex HMAC-SHA256(server key, id:secret)
    Column("created_at", DateTime, nullable=False),  # naive UTC
    Column("expires_at", DateTime, nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("revoked_at", DateTime, nullable=True),
    Column("updated_at", DateTime, nullable=False),
    # a name is unique among keys that are not revoked (a revoked key's name may be reused)
    Index(
        "ux_og_api_keys_active_name",
        "name",
        unique=True,
        sqlite_where=text("revoked = 0"),
        postgresql_where=text("NOT revoked"),
    ),
)

audit_table = Table(
    "og_audit_records",
    metadata,
    # insertion order across writers (for tail and investigate); the chain is per (writer, seq)
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("writer", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("time", DateTime, nullable=False),  # naive UTC, microseconds
    Column("key_id", String(32), nullable=True),
    Column("key_name", String(64), nullable=True),
    Column("client", Text, nullable=False),
    Column("method", String(16), nullable=False),
    Column("path", Text, nullable=False),
    Column("model", Text, nullable=True),
    Column("status", Integer, nullable=False),
    Column("decision", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    Column("count", BigInteger, nullable=False),  # > 1: aggregated refusals of unauthenticated traffic
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("prev_mac", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
    Index("ux_og_audit_records_writer_seq", "writer", "seq", unique=True),
    Index("ix_og_audit_records_time", "time"),
)

# one row per audit writer (a gateway process): its chain head and, after `logs prune`, its base
audit_writers_table = Table(
    "og_audit_writers",
    metadata,
    Column("writer", String(64), primary_key=True),
    Column("started", DateTime, nullable=False),
    Column("updated", DateTime, nullable=False),
    Column("seq", BigInteger, nullable=False),  # last record in the chain (0: none yet)
    Column("mac", String(64), nullable=False),
    Column("head_mac", String(64), nullable=False),  # HMAC over (writer, seq, mac)
    Column("closed", Boolean, nullable=False, default=False),
    Column("base_seq", BigInteger, nullable=False, default=0),  # records <= base_seq were pruned
    Column("base_mac", String(64), nullable=False, default=GENESIS_MAC),
    Column("base_time", DateTime, nullable=True),
    Column("base_anchor_mac", String(64), nullable=True),  # HMAC over (writer, base_seq, base_mac)
)

# the shared checkpoint chain: every writer anchors its head here (at start, about once a second
# while writing, at close); its head is og_state.audit_seq / audit_mac / audit_head_mac
audit_checkpoints_table = Table(
    "og_audit_checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("time", DateTime, nullable=False),
    Column("writer", String(64), nullable=False),
    Column("writer_seq", BigInteger, nullable=False),
    Column("writer_mac", String(64), nullable=False),
    Column("prev_mac", String(64), nullable=False),
    Column("mac", String(64), nullable=False),
)


def default_db_url() -> str:
    """``sqlite:///<data dir>/guard.db``."""
    return f"sqlite:///{data_dir() / 'guard.db'}"


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for messages)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def is_sqlite_url(url: str) -> bool:
    return url.split(":", 1)[0].lower() in ("sqlite", "sqlite+aiosqlite")


def sqlite_path(url: str) -> str | None:
    """The file path of a ``sqlite:///path`` URL (None for other databases or in-memory)."""
    if not is_sqlite_url(url):
        return None
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return database


def _async_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise GuardError(f"database URL {redact_url(url)!r} is not scheme://…")
    lowered = scheme.lower()
    if lowered in ("sqlite", "sqlite+aiosqlite"):
        return f"sqlite+aiosqlite://{rest}"
    if lowered in ("postgresql", "postgres", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    raise GuardError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
    )


def check_url(url: str) -> None:
    """GuardError unless ``url`` is a database URL the gateway supports."""
    _async_url(url)


def create_engine_for(url: str) -> AsyncEngine:
    """An async engine: ``sqlite:///path`` (aiosqlite, WAL, busy timeout) or ``postgresql://…`` (asyncpg)."""
    async_url = _async_url(url)
    try:
        parsed = make_url(async_url)
    except ArgumentError as exc:
        raise GuardError(f"invalid database URL {redact_url(url)!r}: {exc}") from None
    if parsed.drivername.startswith("sqlite"):
        if not parsed.database or parsed.database == ":memory:":
            raise GuardError("the gateway needs a SQLite file: use sqlite:///PATH (in-memory is not shared)")
        parent = Path(parsed.database).expanduser().parent
        try:
            parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise GuardError(f"cannot create database directory {parent}: {exc.strerror or exc}") from None
        _create_private_file(Path(parsed.database).expanduser())
        engine = create_async_engine(parsed, poolclass=NullPool)
        _install_sqlite_hooks(engine)
        return engine
    return create_async_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 10},
    )


def _create_private_file(path: Path) -> None:
    """Create a missing database file as 0600 (SQLite gives its -wal/-shm files the same mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise GuardError(f"cannot create database {path}: {exc.strerror or exc}") from None
    os.close(fd)


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # we emit BEGIN ourselves (below), so the driver must not
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # per-connection settings only: nothing here writes to the file (WAL mode, which is
            # stored in the file's header, is set by init_schema, i.e. only by commands that create
            # or prepare a gateway database — never by read-only ones on a file that may not be ours)
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")


def immediate(engine: AsyncEngine) -> AsyncEngine:
    """The same engine, but its transactions take SQLite's write lock at BEGIN (no-op for PostgreSQL)."""
    return engine.execution_options(**{_BEGIN_OPTION: "immediate"})


def is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def _ensure_state_row(conn: AsyncConnection) -> None:
    row = (await conn.execute(select(state_table.c.id).where(state_table.c.id == 1))).first()
    if row is None:
        await conn.execute(
            insert(state_table).values(
                id=1, key_generation=0, audit_seq=0, audit_mac=GENESIS_MAC, audit_head_mac=None
            )
        )


def _set_wal(sync_conn: Any) -> str:
    """Switch a SQLite file to WAL mode, outside any transaction (SQLite refuses it inside one)."""
    cursor = sync_conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return str(row[0]).lower() if row else ""


async def init_schema(engine: AsyncEngine) -> None:
    """Create the gateway tables (and the state row) if they are missing. Safe to run concurrently.

    A SQLite database is switched to WAL mode here (persistent in the file), so several processes
    can share it."""
    try:
        if not is_postgres(engine):
            async with engine.connect() as conn:
                mode = await conn.run_sync(_set_wal)
                if mode != "wal":
                    log.debug("could not switch %s to WAL mode (%s)", engine.url.database, mode)
        async with immediate(engine).begin() as conn:
            if is_postgres(engine):
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_ID})
            await conn.run_sync(metadata.create_all, checkfirst=True)
            await _ensure_state_row(conn)
    except SQLAlchemyError as exc:
        raise GuardError(f"cannot prepare database {redact_url(str(engine.url))}: {_short(exc)}") from None
    except OSError as exc:
        raise GuardError(f"cannot reach database {redact_url(str(engine.url))}: {exc}") from None


async def require_schema(engine: AsyncEngine) -> None:
    """GuardError unless the database already holds the gateway's tables. Commands that only read or
    change existing keys or records call this instead of ``init_schema``, so pointing them at some
    other database changes nothing in it."""
    def missing(sync_conn: Any) -> list[str]:
        from sqlalchemy import inspect

        present = set(inspect(sync_conn).get_table_names())
        return [t.name for t in metadata.sorted_tables if t.name not in present]

    try:
        async with engine.connect() as conn:
            absent = await conn.run_sync(missing)
    except SQLAlchemyError as exc:
        raise GuardError(f"cannot read database {redact_url(str(engine.url))}: {_short(exc)}") from None
    except OSError as exc:
        raise GuardError(f"cannot reach database {redact_url(str(engine.url))}: {exc}") from None
    if absent:
        shown = redact_url(str(engine.url)).replace("+aiosqlite", "").replace("+asyncpg", "")
        raise GuardError(f"{shown} is not an ollama-guard gateway database (no {absent[0]} table)")


def _short(exc: BaseException) -> str:
    """A one-line description of a database error (no SQL, no parameters)."""
    orig = getattr(exc, "orig", None)
    text_ = str(orig if orig is not None else exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__


short_db_error = _short


async def bind_secret(conn: AsyncConnection, fingerprint: str) -> None:
    """Record which server secret this database belongs to, or refuse a different one.

    Keys hashed and MACs made with one secret cannot be checked with another, so a mismatch (a wrong
    ``--db``/``secret_file`` pairing, a replica without ``OLLAMA_GUARD_SECRET``) is an error, not a
    silent "every key is invalid".
    """
    await _ensure_state_row(conn)
    stored = (
        await conn.execute(select(state_table.c.secret_fingerprint).where(state_table.c.id == 1))
    ).scalar_one()
    if stored is None:
        await conn.execute(
            update(state_table)
            .where(state_table.c.id == 1, state_table.c.secret_fingerprint.is_(None))
            .values(secret_fingerprint=fingerprint)
        )
        stored = (
            await conn.execute(select(state_table.c.secret_fingerprint).where(state_table.c.id == 1))
        ).scalar_one()
    if stored != fingerprint:
        raise SecretMismatch(
            f"the server secret (fingerprint {fingerprint}) is not the one this database was set up with "
            f"({stored}); use the same secret_file or OLLAMA_GUARD_SECRET as the gateway"
        )


class SecretMismatch(GuardError):
    """The server secret does not belong to this database."""
