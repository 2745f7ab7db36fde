"""Limits shared through Redis by every worker and replica (``redis://``, ``rediss://``, ``unix://`` or a
Sentinel-managed master: ``redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]``).

One Lua script checks all three limits and, only if all pass, records the request, takes a
concurrency lease and reserves the request's tokens, atomically (Redis' own clock, so replicas with
skewed clocks agree). Leases carry an expiry that a background task renews while the request runs; a
crashed worker's slots free themselves after ``lease_ttl``. A reservation is settled with the tokens
really used (``settle``).

Redis may lose its data (a restart without persistence): each key's day is marked as seeded, and a
key whose marker is missing is seeded again from the audit log (today's tokens, the last minute's
requests) before it is admitted, so a Redis restart hands out no fresh budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ollama_guard.errors import GuardError
from ollama_guard.gateway.limits.base import (
    Limited,
    Reservation,
    StoreUnavailable,
    has_limits,
    seed_from_audit,
    utc_day,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ollama_guard.gateway.keys import ApiKey

log = logging.getLogger(__name__)

# KEYS: 1 rpm zset, 2 lease zset, 3 token counter, 4 reservations hash, 5 seeded marker
# ARGV: 1 rpm (0 = none), 2 concurrency (0 = none), 3 token budget (-1 = none), 4 lease id,
#       5 lease ttl ms, 6 request id, 7 tokens to reserve, 8 token ttl s
# Returns {0} admitted, {4} not seeded yet, {5} an argument is not a bounded integer (nothing changed),
# or {code, retry_after_ms}: 1 tokens, 2 concurrency, 3 rpm. The numbers are checked before anything
# is changed, and the reservation goes to INCRBY/HSET as the string it came as (a Lua number would be
# written as "1e+17", which INCRBY refuses — after the lease and the rpm entry were taken).
_ACQUIRE_LUA = """
for _, i in ipairs({1, 2, 5, 7, 8}) do
  if not string.match(ARGV[i], '^%d+$') or #ARGV[i] > 16 then return {5} end
end
if ARGV[3] ~= '-1' and (not string.match(ARGV[3], '^%d+$') or #ARGV[3] > 16) then return {5} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local conc = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local window = 60000
if (budget >= 0 or rpm > 0) and redis.call('EXISTS', KEYS[5]) == 0 then
  return {4}
end
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
if budget >= 0 and tonumber(ARGV[7]) > 0 then
  redis.call('INCRBY', KEYS[3], ARGV[7])
  redis.call('EXPIRE', KEYS[3], tonumber(ARGV[8]))
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[7])
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))
end
return {0}
"""

# KEYS: 1 token counter, 2 reservations hash (of the reservation's day); ARGV: 1 id, 2 tokens used,
# 3 tokens reserved, 4 token ttl s. A reservation Redis no longer holds (it lost its data and was
# seeded from the audit log since) is not taken back: only what was used is added. The counts go to
# Redis as the strings they came as (Lua would write a large number as "1.2e+14").
_SETTLE_LUA = """
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then
  redis.call('DECRBY', KEYS[1], ARGV[3])
end
local now = redis.call('INCRBY', KEYS[1], ARGV[2])
if now < 0 then redis.call('SET', KEYS[1], 0) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""

# KEYS: 1 token counter, 2 rpm zset, 3 seeded marker; ARGV: 1 tokens today, 2 token ttl s,
# 3.. admitted request times (epoch ms). Idempotent: the first replica to seed wins.
_SEED_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[2], ARGV[i], 'seed:' .. ARGV[i] .. ':' .. i)
end
if #ARGV >= 3 then redis.call('PEXPIRE', KEYS[2], 61000) end
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[2]))
return 1
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
_MAX_BUDGET = 10**16 - 1  # the acquire script takes numbers of up to 16 digits


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, str | None, int]:
    """(sentinels, service name, password, db) of a ``redis+sentinel://`` URL. ValueError when bad."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None if at else None
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("a redis+sentinel URL names the service: redis+sentinel://HOST:PORT/SERVICE")
    db = parts[1] if len(parts) > 1 else "0"
    if not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")
    return sentinels, parts[0], password, int(db)


class RedisLimiter:
    """Limits shared through Redis. Any Redis failure → ``StoreUnavailable``."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "og:",
        lease_ttl: float = 15.0,
        timeout: float = 1.0,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._lease_ttl_ms = int(lease_ttl * 1000)
        self._timeout = timeout
        self._engine = engine
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._leases: dict[str, set[str]] = {}  # key id → lease ids held by this process
        self._renewer: asyncio.Task[None] | None = None
        self._seeding: dict[str, asyncio.Task[None]] = {}

    def _keys(self, key_id: str, day: str | None = None) -> tuple[str, str, str, str, str]:
        # {key_id} is a Redis Cluster hash tag: one key's entries live in one slot (one script)
        p = f"{self._prefix}{{{key_id}}}"
        d = day or utc_day()
        return f"{p}:rpm", f"{p}:lease", f"{p}:tok:{d}", f"{p}:resv:{d}", f"{p}:seeded:{d}"

    def _connect(self) -> Any:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry  # the asyncio client takes the asyncio Retry
        from redis.backoff import NoBackoff

        options = {"socket_timeout": self._timeout, "socket_connect_timeout": self._timeout,
                   "retry": Retry(NoBackoff(), 1)}
        if self._url.startswith("redis+sentinel://"):
            from redis.asyncio.sentinel import Sentinel

            sentinels, service, password, db = parse_sentinel_url(self._url)
            sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": self._timeout,
                                                            "socket_connect_timeout": self._timeout})
            return sentinel.master_for(service, password=password, db=db, **options)
        return aioredis.from_url(self._url, **options)

    async def start(self) -> None:
        from redis.exceptions import RedisError

        try:
            self._client = self._connect()
        except (ValueError, RedisError) as exc:
            raise GuardError(f"invalid Redis URL: {exc}") from None
        for name, source in (("acquire", _ACQUIRE_LUA), ("settle", _SETTLE_LUA), ("seed", _SEED_LUA),
                             ("renew", _RENEW_LUA)):
            self._scripts[name] = self._client.register_script(source)
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

    async def ping(self) -> None:
        """StoreUnavailable unless Redis answers (readiness)."""
        await self._call("ping", self._client.ping() if self._client is not None else _not_started())

    async def _call(self, what: str, coro: Any) -> Any:
        from redis.exceptions import RedisError

        if self._client is None:
            with contextlib.suppress(Exception):
                coro.close()
            raise StoreUnavailable("the Redis limiter is not started")
        try:
            return await coro
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"Redis {what} failed: {type(exc).__name__}: {exc}") from exc

    async def _seed(self, key_id: str) -> None:
        """Seed one key's day from the audit log (one task per key at a time in this process)."""
        task = self._seeding.get(key_id)
        if task is None:
            task = self._seeding[key_id] = asyncio.create_task(self._seed_now(key_id))
            task.add_done_callback(lambda _t: self._seeding.pop(key_id, None))
        await asyncio.shield(task)

    async def _seed_now(self, key_id: str) -> None:
        tokens, recent = 0, []
        if self._engine is not None:
            seed = await seed_from_audit(self._engine, datetime.now(UTC), key_id)
            tokens, recent = seed.tokens.get(key_id, 0), seed.recent.get(key_id, [])
        rpm_key, _lease, token_key, _resv, seeded = self._keys(key_id)
        await self._call("seed", self._scripts["seed"](
            keys=[token_key, rpm_key, seeded], args=[tokens, _TOKEN_TTL_SECONDS, *recent]
        ))

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey, reserve: int = 0) -> AsyncIterator[Reservation | None]:
        if not has_limits(key):
            yield None
            return
        day = utc_day()
        keys = list(self._keys(key.id, day))
        lease_id = uuid.uuid4().hex
        # a budget above _MAX_BUDGET is one no day reaches: compared as _MAX_BUDGET
        budget = -1 if key.tokens_per_day is None else min(key.tokens_per_day, _MAX_BUDGET)
        args = [key.rpm or 0, key.concurrency or 0, budget,
                lease_id, self._lease_ttl_ms, lease_id, max(0, reserve), _TOKEN_TTL_SECONDS]
        result = await self._call("limit check", self._scripts["acquire"](keys=keys, args=args))
        if int(result[0]) == 4:  # Redis does not know this key's day (new day, or it lost its data)
            await self._seed(key.id)
            result = await self._call("limit check", self._scripts["acquire"](keys=keys, args=args))
        code = int(result[0])
        if code == 1:
            raise Limited(f"token budget of {key.tokens_per_day} per day used up", int(result[1]) / 1000)
        if code == 2:
            raise Limited(f"more than {key.concurrency} concurrent requests", int(result[1]) / 1000)
        if code == 3:
            raise Limited(f"more than {key.rpm} requests per minute", int(result[1]) / 1000)
        if code == 5:  # a caller's bug, not an outage: the script changed nothing
            raise ValueError(f"limit check arguments out of range (reservation {reserve})")
        if code != 0:
            raise StoreUnavailable("Redis limit check: the key's day could not be seeded")
        reservation = Reservation(lease_id, day, max(0, reserve)) if key.tokens_per_day is not None else None
        if key.concurrency is None:
            yield reservation
            return
        self._leases.setdefault(key.id, set()).add(lease_id)
        try:
            yield reservation
        finally:
            held = self._leases.get(key.id)
            if held is not None:
                held.discard(lease_id)
                if not held:
                    del self._leases[key.id]
            await self._release(keys[1], lease_id)

    async def _release(self, lease_key: str, lease_id: str) -> None:
        """Give the slot back; if Redis is unreachable the lease simply expires (never raises)."""
        from redis.exceptions import RedisError

        client = self._client
        if client is None:
            return
        try:
            await asyncio.shield(client.zrem(lease_key, lease_id))
        except (RedisError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            from ollama_guard.gateway.ratelog import GATEWAY_LOG

            GATEWAY_LOG.warning("limit-store-release",
                                "could not release a concurrency lease (it expires by itself): %s",
                                type(exc).__name__)

    async def _renew_forever(self) -> None:
        from redis.exceptions import RedisError

        interval = self._lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval)
            for key_id, lease_ids in list(self._leases.items()):
                if not lease_ids:
                    continue
                try:
                    await self._scripts["renew"](
                        keys=[self._keys(key_id)[1]], args=[self._lease_ttl_ms, *sorted(lease_ids)]
                    )
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("could not renew concurrency leases: %s", type(exc).__name__)

    async def settle(self, key: ApiKey, reservation: Reservation, tokens: int) -> None:
        _rpm, _lease, token_key, resv_key, _seeded = self._keys(key.id, reservation.day)
        await self._call("token update", self._scripts["settle"](
            keys=[token_key, resv_key],
            args=[reservation.id, max(0, tokens), reservation.tokens, _TOKEN_TTL_SECONDS],
        ))

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


async def _not_started() -> None:
    raise StoreUnavailable("the Redis limiter is not started")
