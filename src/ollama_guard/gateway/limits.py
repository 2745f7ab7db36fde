"""Per-key limits: requests per minute, concurrent requests, tokens per (UTC) day.

Two implementations behind one interface (``Limiter``):

* ``MemoryLimiter`` — state in this process. Right for one gateway process; ``build_limiter`` refuses
  ``workers > 1`` without Redis, because each process would then enforce its own copy of every limit.
  When given the database engine it seeds today's token use from the audit log at start, so a
  restart does not hand out a fresh daily budget.
* ``RedisLimiter`` — state in Redis, shared by every worker and replica. One Lua script checks all
  three limits and, only if all pass, records the request and takes a concurrency lease, atomically
  (Redis' own clock, so replicas with skewed clocks agree). Leases carry an expiry that a background
  task renews while the request runs; a crashed worker's slots free themselves after ``lease_ttl``.

Semantics (both): requests per minute is a sliding window — at most ``rpm`` admitted requests in any
60 s. Concurrency counts requests inside ``acquire``; the slot is released on exit, also when the task
is cancelled. Tokens per day: a request is refused once today's (UTC) recorded tokens reach the
budget; tokens are recorded after the fact with ``add_tokens`` (so the request that crosses the
budget completes, the next one is refused). A denial consumes nothing.

Failures never fail open: any Redis error raises ``StoreUnavailable`` (the gateway answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from ollama_guard.errors import GuardError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ollama_guard.gateway.keys import ApiKey

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60.0


class StoreUnavailable(Exception):
    """The key store or the limit store cannot be used right now. Callers must refuse (fail closed)."""


class Limited(Exception):
    """A per-key limit refuses this request. ``retry_after`` (whole seconds, ≥ 1) goes into Retry-After."""

    def __init__(self, reason: str, retry_after: float) -> None:
        self.reason = reason
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"{reason} (retry after {self.retry_after} s)")


def seconds_until_utc_midnight(now: datetime | None = None) -> float:
    current = now or datetime.now(UTC)
    tomorrow = (current + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - current).total_seconds()


def utc_day(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d")


class Limiter(Protocol):
    def acquire(self, key: ApiKey) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def add_tokens(self, key: ApiKey, n: int) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _has_limits(key: ApiKey) -> bool:
    return key.rpm is not None or key.concurrency is not None or key.tokens_per_day is not None


# ---------------------------------------------------------------------------------------------------
# in-process


@dataclass
class _KeyState:
    admitted: deque[float] = field(default_factory=deque)  # monotonic times within the window
    active: int = 0
    token_day: str = ""
    tokens: int = 0


class MemoryLimiter:
    """Limits kept in this process. ``clock`` (monotonic seconds) and ``today`` are injectable for tests."""

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._now = now
        self._states: dict[str, _KeyState] = {}

    def _state(self, key_id: str) -> _KeyState:
        state = self._states.get(key_id)
        if state is None:
            state = self._states[key_id] = _KeyState()
        return state

    async def start(self) -> None:
        if self._engine is not None:
            await self._seed_tokens_from_audit()

    async def close(self) -> None:
        return None

    async def _seed_tokens_from_audit(self) -> None:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        from ollama_guard.gateway.db import audit_table

        assert self._engine is not None
        now = self._now()
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0).replace(tzinfo=None)
        query = (
            select(audit_table.c.key_id, func.sum(audit_table.c.tokens))
            .where(audit_table.c.time >= midnight, audit_table.c.key_id.is_not(None))
            .group_by(audit_table.c.key_id)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except (SQLAlchemyError, OSError) as exc:
            raise StoreUnavailable(f"cannot read today's token use from the audit log: {exc}") from exc
        day = utc_day(now)
        for key_id, total in rows:
            state = self._state(key_id)
            state.token_day, state.tokens = day, int(total or 0)

    def _check_and_admit(self, key: ApiKey) -> None:
        """All checks first, then all updates (a denial consumes nothing). No await: atomic in asyncio."""
        state = self._state(key.id)
        if key.tokens_per_day is not None:
            now = self._now()
            day = utc_day(now)
            if state.token_day != day:
                state.token_day, state.tokens = day, 0
            if state.tokens >= key.tokens_per_day:
                raise Limited(
                    f"token budget of {key.tokens_per_day} per day used up", seconds_until_utc_midnight(now)
                )
        if key.concurrency is not None and state.active >= key.concurrency:
            raise Limited(f"more than {key.concurrency} concurrent requests", 1)
        t = self._clock()
        if key.rpm is not None:
            window = state.admitted
            while window and window[0] <= t - WINDOW_SECONDS:
                window.popleft()
            if len(window) >= key.rpm:
                raise Limited(f"more than {key.rpm} requests per minute", window[0] + WINDOW_SECONDS - t)
            window.append(t)
        state.active += 1

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey) -> AsyncIterator[None]:
        self._check_and_admit(key)
        try:
            yield
        finally:
            self._states[key.id].active -= 1

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        if n <= 0:
            return
        state = self._state(key.id)
        day = utc_day(self._now())
        if state.token_day != day:
            state.token_day, state.tokens = day, 0
        state.tokens += n

    async def tokens_today(self, key_id: str) -> int:
        state = self._states.get(key_id)
        return state.tokens if state and state.token_day == utc_day(self._now()) else 0


# ---------------------------------------------------------------------------------------------------
# Redis

# KEYS: 1 rpm zset, 2 lease zset, 3 token counter
# ARGV: 1 rpm (0 = none), 2 concurrency (0 = none), 3 token budget (-1 = none), 4 lease id,
#       5 lease ttl ms, 6 request id
# Returns {0} admitted, or {code, retry_after_ms}: 1 tokens, 2 concurrency, 3 rpm.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local conc = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local window = 60000
if budget >= 0 then
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= budget then
    local secs = 86400 - (math.floor(now / 1000) % 86400)
    return {1, secs * 1000}
  end
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then
    return {2, 1000}
  end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {3, tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]) * 2)
end
return {0}
"""

# KEYS: 1 lease zset; ARGV: 1 lease ttl ms, 2.. lease ids. Extends the leases that still exist.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

_TOKEN_TTL_SECONDS = 2 * 86400 + 3600


class RedisLimiter:
    """Limits shared through Redis. Any Redis failure → ``StoreUnavailable``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "og:",
        lease_ttl: float = 15.0,
        timeout: float = 1.0,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._lease_ttl_ms = int(lease_ttl * 1000)
        self._timeout = timeout
        self._client: Any = None
        self._acquire_script: Any = None
        self._renew_script: Any = None
        self._leases: dict[str, set[str]] = {}  # key id → lease ids held by this process
        self._renewer: asyncio.Task[None] | None = None

    def _keys(self, key_id: str) -> tuple[str, str, str]:
        # {key_id} is a Redis Cluster hash tag: one key's three entries live in one slot (one script)
        p = f"{self._prefix}{{{key_id}}}"
        return f"{p}:rpm", f"{p}:lease", f"{p}:tok:{utc_day()}"

    async def start(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import (
            Retry,  # the asyncio client takes the asyncio Retry (redis-py ≥ 8 warns otherwise)
        )
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        try:
            self._client = aioredis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 1),
            )
        except (ValueError, RedisError) as exc:
            raise GuardError(f"invalid Redis URL: {exc}") from None
        self._acquire_script = self._client.register_script(_ACQUIRE_LUA)
        self._renew_script = self._client.register_script(_RENEW_LUA)
        try:
            await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            await self._client.aclose()
            raise GuardError(f"cannot reach Redis: {exc}") from None
        self._renewer = asyncio.create_task(self._renew_forever(), name="ollama-guard lease renewer")

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _call(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        if self._client is None:
            raise StoreUnavailable("the Redis limiter is not started")
        try:
            return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"Redis {what} failed: {type(exc).__name__}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey) -> AsyncIterator[None]:
        if not _has_limits(key):
            yield
            return
        rpm_key, lease_key, token_key = self._keys(key.id)
        lease_id = uuid.uuid4().hex
        if self._client is None:
            raise StoreUnavailable("the Redis limiter is not started")
        result = await self._call(
            "limit check",
            self._acquire_script(
                keys=[rpm_key, lease_key, token_key],
                args=[
                    key.rpm or 0,
                    key.concurrency or 0,
                    -1 if key.tokens_per_day is None else key.tokens_per_day,
                    lease_id,
                    self._lease_ttl_ms,
                    lease_id,
                ],
            ),
        )
        code = int(result[0])
        if code == 1:
            raise Limited(f"token budget of {key.tokens_per_day} per day used up", int(result[1]) / 1000)
        if code == 2:
            raise Limited(f"more than {key.concurrency} concurrent requests", int(result[1]) / 1000)
        if code == 3:
            raise Limited(f"more than {key.rpm} requests per minute", int(result[1]) / 1000)
        if key.concurrency is None:
            yield
            return
        self._leases.setdefault(key.id, set()).add(lease_id)
        try:
            yield
        finally:
            held = self._leases.get(key.id)
            if held is not None:
                held.discard(lease_id)
                if not held:
                    del self._leases[key.id]
            await self._release(lease_key, lease_id)

    async def _release(self, lease_key: str, lease_id: str) -> None:
        """Give the slot back; if Redis is unreachable the lease simply expires (never raises)."""
        from redis.exceptions import RedisError

        client = self._client
        if client is None:
            return
        try:
            await asyncio.shield(client.zrem(lease_key, lease_id))
        except (RedisError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning(
                "could not release a concurrency lease (it expires by itself): %s", type(exc).__name__
            )

    async def _renew_forever(self) -> None:
        from redis.exceptions import RedisError

        interval = self._lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            for key_id, lease_ids in list(self._leases.items()):
                if not lease_ids:
                    continue
                try:
                    await self._renew_script(
                        keys=[self._keys(key_id)[1]], args=[self._lease_ttl_ms, *sorted(lease_ids)]
                    )
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("could not renew concurrency leases: %s", type(exc).__name__)

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        if n <= 0 or key.tokens_per_day is None:
            return
        token_key = self._keys(key.id)[2]
        if self._client is None:
            raise StoreUnavailable("the Redis limiter is not started")
        pipe = self._client.pipeline(transaction=True)
        pipe.incrby(token_key, n)
        pipe.expire(token_key, _TOKEN_TTL_SECONDS)
        await self._call("token update", pipe.execute())

    async def tokens_today(self, key_id: str) -> int:
        if self._client is None:
            raise StoreUnavailable("the Redis limiter is not started")
        value = await self._call("token read", self._client.get(self._keys(key_id)[2]))
        return int(value or 0)


def build_limiter(config: Any, workers: int | None = None, engine: AsyncEngine | None = None) -> Limiter:
    """Redis limiter when ``config.redis`` is set, else the in-process one.

    ``workers`` (default ``config.workers`` or 1): several processes without Redis would each enforce
    their own copy of every limit, so that combination is refused.
    """
    redis_url = (getattr(config, "redis", None) or "").strip() if config is not None else ""
    if workers is None:
        workers = int(getattr(config, "workers", 1) or 1) if config is not None else 1
    if redis_url:
        return RedisLimiter(redis_url, prefix=getattr(config, "redis_prefix", None) or "og:")
    if workers > 1:
        raise GuardError(
            f"{workers} workers need shared limit state: set redis (--redis URL) or run one worker"
        )
    return MemoryLimiter(engine)
