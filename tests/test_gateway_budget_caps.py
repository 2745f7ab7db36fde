"""A request's own output cap cannot outrun its key's budget (issue 10, red team review 2):

* a key with 100 tokens a day asking `num_predict: 1e9` (or 2**63 - 1, which Go turns into "unbounded")
  reserves — and is bounded at — no more than its whole budget: the gateway appends the cap it reserved;
* a cap of 2**53 or more is read as no cap (the route's reservation applies and is appended);
* through Redis, a huge reservation never reaches the store's script unbounded, and the script checks
  its arguments before it changes anything (it used to take the concurrency lease and the rpm entry,
  then fail at INCRBY on "1e+17": 503, a false store-outage alarm, and a slot stuck for lease_ttl).
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.gateway.body import judge_json
from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.limits import Limited, RedisLimiter
from ollama_guard.gateway.routes import find_route
from ollama_guard.gateway.stages.account import bound_output, output_limit, reservation
from ollama_guard.ollama.generation import MAX_CAP, output_cap
from support.gateway import Gateway, KeySpec, audit_rows, create_keys, http_bytes, start_gateway
from support.pg_redis import RedisServer, redis_server, redis_url  # noqa: F401
from support.servers import running_process

UPSTREAM = Path(__file__).parent / "support" / "budget_upstream.py"
INT64_MAX = 2**63 - 1


def _key(budget: int | None, **limits: Any) -> ApiKey:
    values = {"rpm": None, "concurrency": None, **limits}
    return ApiKey(id=uuid.uuid4().hex[:16], name="k", role=Role.INFERENCE, models=("*",),
                  created_at=datetime.now(UTC), expires_at=None, revoked=False, tokens_per_day=budget,
                  **values)


def _route(path: str) -> Any:
    found = find_route("POST", path)
    assert found is not None
    return found[0]


# --- the cap read and the bound given --------------------------------------------------------------
def test_caps_from_2_53_on_are_no_cap() -> None:
    assert [output_cap(v) for v in (MAX_CAP, float(2**52))] == [2**53 - 1, 2**52]
    assert {output_cap(v) for v in (2**53, 1e17, INT64_MAX, 2**63 - 511, 1e300)} == {None}


@pytest.mark.parametrize(("path", "body", "budget", "limit"), [
    ("/api/generate", {"options": {"num_predict": 1_000_000_000}}, 100, 100),
    ("/api/generate", {"options": {"num_predict": INT64_MAX}}, 100, 100),  # no cap: the reservation
    ("/api/generate", {"options": {"num_predict": INT64_MAX}}, 100_000, 2048),
    ("/api/generate", {"options": {"num_predict": 100}}, 100, 100),
    ("/api/generate", {"options": {"num_predict": 99}}, 100, 99),
    ("/api/generate", {}, 100, 100),
    ("/api/generate", {}, 5000, 2048),
    ("/api/generate", {"options": {"num_predict": 5000}}, 100_000, 5000),
    ("/v1/chat/completions", {"max_tokens": 10**12}, 300, 300),
    ("/v1/messages", {"max_tokens": 10**12}, 300, 300),
    ("/v1/responses", {"max_output_tokens": 10**12}, 300, 300),
])
def test_the_output_limit_is_the_cap_within_the_budget(path: str, body: dict[str, Any], budget: int,
                                                       limit: int) -> None:
    raw = json.dumps({"model": "m", **body}).encode()
    route, judged = _route(path), judge_json(raw, 32)
    assert output_limit(route, _key(budget), judged, 2048) == limit
    assert reservation(route, _key(budget), judged, 2048, len(raw)) == limit + -(-len(raw) // 4)


CAP_100 = b'"options":{"num_predict":100}}'


@pytest.mark.parametrize(("path", "body", "appended"), [
    ("/api/generate", b'{"model":"m","options":{"num_predict":1000000000}}', CAP_100),
    ("/api/generate", b'{"model":"m","options":{"num_predict":101}}', CAP_100),
    ("/api/generate", b'{"model":"m","options":{"num_predict":100}}', None),
    ("/v1/messages", b'{"model":"m","max_tokens":1000}', b',"max_tokens":100}'),
    ("/v1/messages", b'{"model":"m","max_tokens":100}', None),
    ("/v1/messages", b'{"model":"m"}', None),  # Ollama refuses it: left to say so
])
def test_a_cap_above_the_limit_is_lowered(path: str, body: bytes, appended: bytes | None) -> None:
    judged = judge_json(body, 32)
    assert bound_output(_route(path), judged, 100) is (appended is not None)
    assert judged.raw == body if appended is None else judged.raw.endswith(appended), judged.raw


# --- through a running gateway ----------------------------------------------------------------------
def _stream(gw: Gateway, key: str, body: dict[str, Any], most: int = 3000) -> tuple[int, int]:
    """(status, NDJSON lines) of /api/generate; stops reading after `most` lines (an unbounded answer)."""
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {gw.keys[key]}"}
    request = http_bytes("POST", "/api/generate", headers=headers, body=data)
    with socket.create_connection((gw.host, gw.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while (chunk := sock.recv(65536)) and answer.count(b'"done": false') < most:
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer.count(b'"done": false')


def _tokens(gw: Gateway, key: str, count: int) -> list[int]:
    deadline = time.monotonic() + 15
    while True:
        rows = [r for r in audit_rows(gw.db_url) if r["key_name"] == key]
        if len(rows) >= count or time.monotonic() > deadline:
            return [r["tokens"] for r in rows]
        time.sleep(0.1)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_process([sys.executable, str(UPSTREAM)]) as (_proc, url):
        yield url


def test_a_huge_cap_is_bounded_at_the_budget_through_serve(upstream: str, tmp_path: Path) -> None:
    """Red team: 100 tokens/day, num_predict 1e9 and INT64_MAX admitted and forwarded unchanged."""
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("e9", "inference", tokens_per_day=100),
                            KeySpec("int64", "inference", tokens_per_day=100),
                            KeySpec("fits", "inference", tokens_per_day=100_000)])
    with start_gateway(tmp_path / "gw", upstream, db_url=db) as gw:
        gw.keys = keys
        for key, cap in (("e9", 1_000_000_000), ("int64", INT64_MAX)):
            body = {"model": "m:latest", "prompt": "hi", "x_interval": 0, "options": {"num_predict": cap}}
            assert _stream(gw, key, body) == (200, 100), key
            assert _stream(gw, key, body)[0] == 429  # the day's budget is spent: 100 + the prompt
        fits = {"model": "m:latest", "prompt": "hi", "x_interval": 0, "options": {"num_predict": 3000}}
        assert _stream(gw, "fits", fits, most=5000) == (200, 3000)  # a cap within the budget is kept
        assert _tokens(gw, "e9", 2) == [105, 0]
        assert _tokens(gw, "int64", 2) == [105, 0]
        assert _tokens(gw, "fits", 1) == [3005]


def test_a_huge_reservation_through_redis_neither_fails_nor_leaks_a_slot(
    upstream: str, tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    """Red team: --redis, num_predict 1e17 → 503 "limit store unavailable", then 429 (slot stuck)."""
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("c", "inference", concurrency=1, tokens_per_day=100_000)])
    with start_gateway(tmp_path / "gw", upstream, db_url=db, extra_args=["--redis", redis_server.url]) as gw:
        gw.keys = keys
        huge = {"model": "m:latest", "prompt": "hi", "x_interval": 0, "options": {"num_predict": 10**17}}
        assert _stream(gw, "c", huge) == (200, 2048)  # a cap beyond 2**53 is none: the reservation
        small = {"model": "m:latest", "prompt": "hi", "x_interval": 0, "options": {"num_predict": 5}}
        assert [_stream(gw, "c", small) for _ in range(2)] == [(200, 5)] * 2
        assert "limit store unavailable" not in gw.output()


async def test_the_acquire_script_checks_its_arguments_before_changing_anything(
    redis_url: str,  # noqa: F811
) -> None:
    limiter = RedisLimiter(redis_url)
    await limiter.start()
    try:
        key = _key(10**16 - 1, concurrency=1, rpm=2)
        for bad in (10**17, 10**16):  # "1e+17" for Lua; 17 digits
            with pytest.raises(ValueError, match="out of range"):
                async with limiter.acquire(key, bad):
                    pass
        async with limiter.acquire(key, 9 * 10**15 + 1) as held:  # 16 digits: sent as the string it is
            assert held is not None
            with pytest.raises(Limited, match="concurrent"):
                async with limiter.acquire(key, 5):
                    pass
            assert await limiter.tokens_today(key.id) == 9 * 10**15 + 1
        assert held is not None
        await limiter.settle(key, held, 3 * 10**15 + 7)  # no "3e+15" either
        assert await limiter.tokens_today(key.id) == 3 * 10**15 + 7
        # the refused calls took neither the slot nor a request of the minute: one more is admitted
        big = _key(10**17, concurrency=1)
        with pytest.raises(Limited, match="per minute"):
            for _ in range(2):
                async with limiter.acquire(key):
                    pass
        async with limiter.acquire(big, 10**15) as first:  # a budget above the store's bound: usable
            assert first is not None
    finally:
        await limiter.close()


@pytest.mark.parametrize("position", [0, 1, 2, 4, 6, 7])
@pytest.mark.parametrize("bad", ["1e+17", "-5", "5.5", "x", "12345678901234567", ""])
async def test_no_malformed_argument_changes_the_store(redis_url: str, position: int, bad: str) -> None:  # noqa: F811
    limiter = RedisLimiter(redis_url)
    await limiter.start()
    try:
        key_id = uuid.uuid4().hex[:16]
        keys = list(limiter._keys(key_id))
        await limiter._client.set(keys[4], "1")  # seeded: the script goes on to its checks
        args = ["5", "2", "1000", "lease", "15000", "lease", "10", "3600"]
        args[position] = bad
        assert await limiter._scripts["acquire"](keys=keys, args=args) == [5]
        assert [await limiter._client.exists(k) for k in keys[:4]] == [0, 0, 0, 0]
        args[position] = "-1" if position == 2 else "7"  # the well-formed call is admitted
        assert await limiter._scripts["acquire"](keys=keys, args=args) == [0]
    finally:
        await limiter.close()
