"""The overview's health tiles: upstream, database, key snapshot, limiter store, audit pipeline.

Each probe is bounded in time and says in one line what it saw; none shows a secret or a URL's password.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from sqlalchemy import text

from ollama_guard.gateway.db import short_db_error

PROBE_SECONDS = 2.0


async def _upstream(base: str) -> tuple[bool, str]:
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=PROBE_SECONDS)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{base}/api/version") as response,
        ):
            body = await response.json(content_type=None) if response.status == 200 else {}
            ms = (time.perf_counter() - started) * 1000
            if response.status != 200:
                return False, f"answered {response.status}"
            version = body.get("version", "?") if isinstance(body, dict) else "?"
            return True, f"Ollama {version}, {ms:.0f} ms"
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return False, f"unreachable ({type(exc).__name__})"


async def _database(engine: Any) -> tuple[bool, str]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_SECONDS), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure is the answer
        return False, f"unreachable: {short_db_error(exc)}"
    return True, f"{engine.dialect.name}, {(time.perf_counter() - started) * 1000:.0f} ms"


def _keys(authenticator: Any) -> tuple[bool, str]:
    age = authenticator.snapshot_age
    return age <= 5.0, f"{authenticator.key_count} active keys, snapshot {age:.1f} s old"


async def _limiter(limiter: Any, redis_configured: bool) -> tuple[bool, str]:
    if not redis_configured:
        return True, "in this process (no Redis)"
    ping = getattr(limiter, "ping", None)
    if ping is None:
        return True, "Redis (not probed)"
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await ping()
    except Exception as exc:  # any failure is the answer
        return False, f"Redis unreachable ({type(exc).__name__})"
    return True, "Redis reachable"


def _audit(audit: Any) -> tuple[bool, str]:
    backlog = audit.backlog
    backlog = backlog() if callable(backlog) else backlog
    healthy = audit.healthy
    healthy = healthy() if callable(healthy) else healthy
    return bool(healthy), f"backlog {backlog:,} records"


async def probe(services: Any, config: Any) -> dict[str, tuple[bool, str]]:
    upstream, database, limiter = await asyncio.gather(
        _upstream(config.upstream),
        _database(services.engine),
        _limiter(services.limiter, bool(config.redis)),
    )
    return {
        "upstream": upstream,
        "database": database,
        "keys": _keys(services.authenticator),
        "limiter": limiter,
        "audit": _audit(services.audit),
    }
