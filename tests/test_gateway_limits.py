"""Per-key limits, in process and through Redis: requests per minute, concurrency (released on exit and
on cancellation, leases of crashed workers expire), tokens per day, and failing closed without Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from ollama_guard.errors import GuardError
from ollama_guard.gateway.audit import AuditRecord
from ollama_guard.gateway.db import create_engine_for, init_schema
from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.limits import (
    Limited,
    MemoryLimiter,
    RedisLimiter,
    StoreUnavailable,
    build_limiter,
    seconds_until_utc_midnight,
)
from support.audit import store_records
from support.pg_redis import redis_server, redis_url  # noqa: F401


def make_key(**limits) -> ApiKey:
    values = {"rpm": None, "concurrency": None, "tokens_per_day": None, **limits}
    return ApiKey(
        id=uuid.uuid4().hex[:16],
        name="k",
        role=Role.INFERENCE,
        models=("*",),
        created_at=datetime.now(UTC),
        expires_at=None,
        revoked=False,
        **values,
    )


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest):
    if request.param == "memory":
        instance = build_limiter(SimpleNamespace(redis=None, workers=1))
        assert isinstance(instance, MemoryLimiter)
    else:
        url = request.getfixturevalue("redis_url")
        instance = build_limiter(SimpleNamespace(redis=url, workers=4))
        assert isinstance(instance, RedisLimiter)
    await instance.start()
    yield instance
    await instance.close()


async def test_requests_per_minute(limiter) -> None:
    key = make_key(rpm=3)
    for _ in range(3):
        async with limiter.acquire(key):
            pass
    with pytest.raises(Limited) as denied:
        async with limiter.acquire(key):
            pass
    assert "per minute" in denied.value.reason
    assert 55 <= denied.value.retry_after <= 60
    # other keys are not affected
    async with limiter.acquire(make_key(rpm=3)):
        pass


async def test_concurrency_is_released_on_exit(limiter) -> None:
    key = make_key(concurrency=2)
    async with limiter.acquire(key), limiter.acquire(key):
        with pytest.raises(Limited) as denied:
            async with limiter.acquire(key):
                pass
        assert "concurrent" in denied.value.reason and denied.value.retry_after >= 1
    async with limiter.acquire(key), limiter.acquire(key):
        pass


async def test_concurrency_is_released_on_cancellation(limiter) -> None:
    key = make_key(concurrency=1)
    inside = asyncio.Event()

    async def long_request() -> None:
        async with limiter.acquire(key):
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(long_request())
    await asyncio.wait_for(inside.wait(), 5)
    with pytest.raises(Limited):
        async with limiter.acquire(key):
            pass
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with limiter.acquire(key):
        pass


async def test_a_denial_consumes_nothing(limiter) -> None:
    key = make_key(rpm=2, concurrency=1)
    async with limiter.acquire(key):
        for _ in range(5):
            with pytest.raises(Limited, match="concurrent"):
                async with limiter.acquire(key):
                    pass
    async with limiter.acquire(key):  # the second of two per minute: the denials did not count
        pass
    with pytest.raises(Limited, match="per minute"):
        async with limiter.acquire(key):
            pass


async def test_tokens_per_day(limiter) -> None:
    key = make_key(tokens_per_day=100)
    async with limiter.acquire(key):
        await limiter.add_tokens(key, 60)
    async with limiter.acquire(key):  # 60 < 100: allowed; this one crosses the budget
        await limiter.add_tokens(key, 50)
    with pytest.raises(Limited) as denied:
        async with limiter.acquire(key):
            pass
    assert "token" in denied.value.reason
    assert abs(denied.value.retry_after - seconds_until_utc_midnight()) <= 2
    async with limiter.acquire(make_key(tokens_per_day=100)):  # per key
        pass


async def test_unlimited_key_is_never_limited(limiter) -> None:
    key = make_key()
    for _ in range(50):
        async with limiter.acquire(key):
            await limiter.add_tokens(key, 1000)


def test_sliding_window_and_new_day_in_memory() -> None:
    now = [1000.0]
    today = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC)]
    limiter = MemoryLimiter(clock=lambda: now[0], now=lambda: today[0])
    key = make_key(rpm=2, tokens_per_day=10)

    async def run() -> None:
        for step in (0.0, 30.0):
            now[0] += step
            async with limiter.acquire(key):
                pass
        with pytest.raises(Limited) as denied:
            async with limiter.acquire(key):
                pass
        assert denied.value.retry_after == 30  # the first request leaves the window in 30 s
        now[0] += 30.0
        async with limiter.acquire(key):
            await limiter.add_tokens(key, 10)
        now[0] += 60.0
        with pytest.raises(Limited, match="token"):
            async with limiter.acquire(key):
                pass
        today[0] += timedelta(minutes=2)  # a new UTC day: a fresh budget
        async with limiter.acquire(key):
            pass

    asyncio.run(run())


async def test_memory_limiter_remembers_todays_tokens_from_the_audit_log(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    key = make_key(tokens_per_day=500)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await store_records(engine, b"x" * 48, [
        AuditRecord(key_id=key.id, decision="allow", status=200, tokens=300),
        AuditRecord(key_id=key.id, decision="allow", status=200, tokens=250),
        AuditRecord(time=yesterday, key_id="someone-else", tokens=10**6),
    ])
    limiter = build_limiter(SimpleNamespace(redis=None), 1, engine)
    await limiter.start()  # after a restart the day's budget is still spent
    with pytest.raises(Limited, match="token"):
        async with limiter.acquire(key):
            pass
    await limiter.close()
    await engine.dispose()


def test_several_workers_need_redis() -> None:
    with pytest.raises(GuardError, match="redis"):
        build_limiter(SimpleNamespace(redis=None, workers=2))
    with pytest.raises(GuardError, match="redis"):
        build_limiter(SimpleNamespace(redis=""), workers=3)
    assert isinstance(build_limiter(SimpleNamespace(redis="redis://127.0.0.1:1"), workers=3), RedisLimiter)


# --- Redis only -------------------------------------------------------------------------------------


async def test_workers_share_limits_through_redis(redis_url: str) -> None:  # noqa: F811
    first, second = RedisLimiter(redis_url), RedisLimiter(redis_url)
    await first.start()
    await second.start()
    try:
        key = make_key(rpm=4, concurrency=1, tokens_per_day=10)
        async with first.acquire(key):
            with pytest.raises(Limited, match="concurrent"):
                async with second.acquire(key):
                    pass
        for limiter in (second, first, second):
            async with limiter.acquire(key):
                pass
        with pytest.raises(Limited, match="per minute"):
            async with first.acquire(key):
                pass
        await first.add_tokens(key, 10)
        assert await second.tokens_today(key.id) == 10
    finally:
        await first.close()
        await second.close()


async def test_crashed_workers_lease_expires(redis_url: str) -> None:  # noqa: F811
    crashed, survivor = RedisLimiter(redis_url, lease_ttl=1.0), RedisLimiter(redis_url, lease_ttl=1.0)
    await crashed.start()
    await survivor.start()
    key = make_key(concurrency=1)
    slot = crashed.acquire(key)
    await slot.__aenter__()
    await asyncio.sleep(0.5)  # the lease is renewed while the worker lives...
    with pytest.raises(Limited):
        async with survivor.acquire(key):
            pass
    await crashed.close()  # ...then the worker dies without releasing its slot
    with pytest.raises(Limited):
        async with survivor.acquire(key):
            pass
    await asyncio.sleep(1.3)
    async with survivor.acquire(key):
        pass
    await survivor.close()


async def test_redis_down_fails_closed(redis_server) -> None:  # noqa: F811
    redis_server.start()
    limiter = RedisLimiter(redis_server.url, timeout=0.5)
    await limiter.start()
    key = make_key(rpm=100, concurrency=5, tokens_per_day=1000)
    try:
        async with limiter.acquire(key):
            pass
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            async with limiter.acquire(key):
                pass
        with pytest.raises(StoreUnavailable):
            await limiter.add_tokens(key, 5)
        # a key without limits needs no store at all
        async with limiter.acquire(make_key()):
            pass
    finally:
        redis_server.start()
        await limiter.close()
    with pytest.raises(GuardError, match="Redis"):
        await RedisLimiter("unix:///nonexistent/redis.sock").start()
