"""Banned client addresses: stored in the gateway database (shared by every replica), cached in memory
by each gateway process and refreshed like the keys, so a ban made anywhere is enforced everywhere
within a second.

Tables (created on first use, so databases made before bans existed keep working):

* ``og_bans``      one row per banned address or network: ``until`` (naive UTC; NULL = until removed),
  ``reason``, ``source`` (``manual``, ``auto``, ``watch``), ``seq``. Removing a ban ends it (``until``
  set to now) rather than deleting the row, so pollers learn about removals incrementally.
* ``og_ban_state`` one row: ``generation``, bumped in the same transaction as every change; each
  changed row takes the new generation as its ``seq``. A poller reads the generation four times a
  second and, when it moved, only the rows with a newer ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ollama_guard.errors import InputError
from ollama_guard.gateway.bgloop import BackgroundLoop, engine_for_loop
from ollama_guard.gateway.db import immediate, is_postgres, short_db_error

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("ollama_guard.gateway")

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
POLL_INTERVAL = 0.25
KEEP_ENDED = timedelta(days=7)  # ended bans stay this long (listed with --all), then are deleted
_SCHEMA_LOCK_ID = 0x6F67_6261  # pg advisory lock while creating the ban tables

ban_metadata = MetaData()
bans_table = Table(
    "og_bans",
    ban_metadata,
    Column("address", String(64), primary_key=True),  # canonical address, or network "a.b.c.0/24"
    Column("until", DateTime, nullable=True),  # naive UTC; NULL: until removed
    Column("reason", Text, nullable=False),
    Column("source", String(80), nullable=False),  # manual, auto, watch, console:<key name>
    Column("created", DateTime, nullable=False),
    Column("seq", BigInteger, nullable=False),
)
ban_state_table = Table(
    "og_ban_state",
    ban_metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
)


def canonical(address: str) -> str:
    """``203.0.113.9``, ``::ffff:203.0.113.9`` → ``203.0.113.9``; ``2001:DB8::1`` → ``2001:db8::1``;
    ``203.0.113.0/24`` stays a network (a /32 or /128 becomes its address). InputError otherwise."""
    text_ = address.strip()
    try:
        if "/" in text_:
            net = ipaddress.ip_network(text_, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return canonical(str(net.network_address))
            if net.prefixlen == 0:
                raise InputError(f"refusing to ban every address ({text_})")
            return str(net)
        ip = ipaddress.ip_address(text_.strip("[]").split("%", 1)[0])
    except ValueError:
        raise InputError(f"{address!r} is not an IP address or network") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@dataclass(frozen=True)
class Ban:
    address: str
    until: datetime | None  # aware UTC
    reason: str
    source: str
    created: datetime

    def active(self, now: datetime | None = None) -> bool:
        return self.until is None or self.until > (now or datetime.now(UTC))

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "until": _iso(self.until), "reason": self.reason,
                "source": self.source, "created": _iso(self.created), "active": self.active()}


def _iso(t: datetime | None) -> str | None:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else None


def _naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def _aware(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _row(r: Any) -> Ban:
    return Ban(r.address, _aware(r.until), r.reason, r.source, _aware(r.created))  # type: ignore[arg-type]


async def ensure_schema(engine: AsyncEngine) -> None:
    """Create the ban tables if missing (safe when several processes start at once)."""
    for attempt in range(2):
        try:
            async with immediate(engine).begin() as conn:
                if is_postgres(engine):
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_ID})
                await conn.run_sync(ban_metadata.create_all, checkfirst=True)
                present = (await conn.execute(select(ban_state_table.c.id))).first()
                if present is None:
                    await conn.execute(ban_state_table.insert().values(id=1, generation=0))
            return
        except IntegrityError:
            if attempt:
                raise
        except SQLAlchemyError as exc:  # another process created them between check and create
            if attempt or "already exists" not in str(exc):
                raise


class BanStore:
    """Add, remove and list bans (the CLI, the gateway's auto-ban, `watch --ban`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def _bump(self, conn: AsyncConnection) -> int:
        await conn.execute(update(ban_state_table).where(ban_state_table.c.id == 1)
                           .values(generation=ban_state_table.c.generation + 1))
        return int((await conn.execute(select(ban_state_table.c.generation)
                                       .where(ban_state_table.c.id == 1))).scalar_one())

    async def add(self, address: str, minutes: float | None, reason: str, source: str = "manual") -> Ban:
        """Ban (or re-ban, replacing the old entry) for ``minutes`` (None: until removed)."""
        key = canonical(address)
        now = datetime.now(UTC)
        until = now + timedelta(minutes=minutes) if minutes is not None else None
        values = {"until": _naive(until) if until else None, "reason": reason[:500], "source": source[:80],
                  "created": _naive(now)}
        async with immediate(self.engine).begin() as conn:
            seq = await self._bump(conn)
            changed = await conn.execute(update(bans_table).where(bans_table.c.address == key)
                                         .values(seq=seq, **values))
            if changed.rowcount == 0:
                await conn.execute(bans_table.insert().values(address=key, seq=seq, **values))
            await conn.execute(bans_table.delete().where(bans_table.c.until < _naive(now - KEEP_ENDED)))
        return Ban(key, until, reason[:500], source, now)

    async def remove(self, address: str) -> bool:
        """End an active ban; False when there was none."""
        key = canonical(address)
        now = _naive(datetime.now(UTC))
        async with immediate(self.engine).begin() as conn:
            row = (await conn.execute(select(bans_table).where(bans_table.c.address == key))).first()
            if row is None or (row.until is not None and row.until <= now):
                return False
            seq = await self._bump(conn)
            await conn.execute(update(bans_table).where(bans_table.c.address == key)
                               .values(until=now, seq=seq))
        return True

    async def list(self, *, include_ended: bool = False) -> list[Ban]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(bans_table).order_by(bans_table.c.created))).all()
        bans = [_row(r) for r in rows]
        return bans if include_ended else [b for b in bans if b.active()]

    async def generation(self, conn: AsyncConnection) -> int:
        return int((await conn.execute(select(ban_state_table.c.generation)
                                       .where(ban_state_table.c.id == 1))).scalar_one())

    async def changed_since(self, conn: AsyncConnection, seq: int) -> list[Ban]:
        rows = (await conn.execute(select(bans_table).where(bans_table.c.seq > seq))).all()
        return [_row(r) for r in rows]


class BanList:
    """The bans in force, in memory (``is_banned`` is a dict lookup), refreshed from the database by a
    poller in its own thread. When the database cannot be read the last known bans stay in force and
    ``healthy`` turns False; new bans made elsewhere are then not seen until it can be read again."""

    def __init__(self, engine: AsyncEngine, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self._exact: dict[str, float] = {}  # canonical address → end (epoch seconds; inf: none)
        self._nets: dict[str, tuple[IPNet, float]] = {}
        self._seq: int | None = None
        self._background = BackgroundLoop("ollama-guard ban poller")
        self._poll_engine: AsyncEngine | None = None
        self._owns_poll_engine = False
        self._poller: Any = None
        self.last_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.last_error is None

    @property
    def count(self) -> int:
        return len(self._exact) + len(self._nets)

    def is_banned(self, client: str) -> bool:
        if not self._exact and not self._nets:
            return False
        end = self._exact.get(client)
        if end is None and ":" in client:
            with contextlib.suppress(InputError):
                end = self._exact.get(canonical(client))
        if end is not None and end > time.time():
            return True
        if self._nets:
            try:
                ip = ipaddress.ip_address(canonical(client))
            except (InputError, ValueError):
                return False
            now = time.time()
            return any(ip in net and until > now
                       for net, until in self._nets.values() if net.version == ip.version)
        return False

    def ban_locally(self, address: str, minutes: float) -> None:
        """Enforce at once in this process (the database row follows, and every replica polls it)."""
        self._apply([Ban(canonical(address), datetime.now(UTC) + timedelta(minutes=minutes), "", "auto",
                         datetime.now(UTC))])

    def _apply(self, bans: Iterable[Ban]) -> None:
        exact, nets = dict(self._exact), dict(self._nets)
        for ban in bans:
            end = math.inf if ban.until is None else ban.until.timestamp()
            if "/" in ban.address:
                nets[ban.address] = (ipaddress.ip_network(ban.address), end)
            else:
                exact[ban.address] = end
        now = time.time()
        # one assignment each: the serving thread sees the old or the new table
        self._exact = {a: e for a, e in exact.items() if e > now}
        self._nets = {a: v for a, v in nets.items() if v[1] > now}

    async def _poll(self) -> None:
        assert self._poll_engine is not None
        store = BanStore(self._poll_engine)
        async with self._poll_engine.connect() as conn:
            generation = await store.generation(conn)
            if generation != self._seq:
                self._apply(await store.changed_since(conn, self._seq or 0))
                self._seq = generation
        if self.last_error is not None:
            log.warning("ban list readable again")
            self.last_error = None

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await asyncio.wait_for(self._poll(), timeout=2.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep enforcing the last known bans; say so once
                message = f"{type(exc).__name__}: {short_db_error(exc)}"
                if message != self.last_error:
                    log.error("cannot read the ban list: %s", message)
                    self.last_error = message

    async def start(self) -> None:
        await ensure_schema(self.engine)
        self._poll_engine, self._owns_poll_engine = engine_for_loop(self.engine)
        self._background.start()
        await self._background.run(self._poll())
        self._poller = self._background.submit(self._poll_forever())

    def submit(self, coro: Any) -> Any:
        """Run a database coroutine on the poller's loop (auto-ban writes)."""
        return self._background.submit(coro)

    @property
    def store(self) -> BanStore:
        assert self._poll_engine is not None
        return BanStore(self._poll_engine)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        if self._background.running:
            if self._owns_poll_engine and self._poll_engine is not None:
                with contextlib.suppress(Exception):
                    await self._background.run(self._poll_engine.dispose())
            await self._background.stop()
