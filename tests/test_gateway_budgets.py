"""Token budgets that hold (issue 10, item 4): usage read from anywhere in the answer, reservations taken
at admission so concurrent requests cannot overshoot, the reservation charged when an answer says
nothing, usage that survives a Redis restart, and Redis Sentinel URLs."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.limits import Limited, MemoryLimiter, RedisLimiter, parse_sentinel_url
from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import token_accounting
from support.gateway import Gateway, KeySpec, audit_rows, create_keys, http_bytes, raw_request, start_gateway
from support.pg_redis import RedisServer, redis_server, redis_url  # noqa: F401
from support.servers import running_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"


def ollama_answer(prompt_tokens: int, eval_tokens: int, logprobs: int) -> str:
    """A non-streamed /api/generate answer with Ollama's field order (api.GenerateResponse): the
    metrics, `eval_count` among them, come before the `logprobs` array."""
    document = {
        "model": "llama3.2:1b", "created_at": "2026-12-07T03:00:00Z", "response": "x" * eval_tokens,
        "done": True, "done_reason": "stop", "context": [1, 2, 3],
        "total_duration": 5, "load_duration": 1, "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": 1, "eval_count": eval_tokens, "eval_duration": 1,
        "logprobs": [{"token": "x", "logprob": -0.25, "top_logprobs": [{"token": "y", "logprob": -2.5}] * 5}]
        * logprobs,
    }
    return json.dumps(document)


# --- usage found anywhere -------------------------------------------------------------------------
@pytest.mark.parametrize("logprobs", [10, 2_000, 20_000])  # a few hundred bytes to megabytes after the count
def test_usage_before_a_long_logprobs_array_is_found(logprobs: int) -> None:
    body = ollama_answer(3, 9, logprobs).encode()
    whole = TokenCounter(token_accounting("POST /api/generate"))
    whole.feed(body)
    assert whole.usage() == 12
    for size in (1, 7, 61, 4096, 65536):  # every way a stream can cut the field
        pieces = TokenCounter(token_accounting("POST /api/generate"))
        for start in range(0, min(len(body), 400_000), size):
            pieces.feed(body[start : start + size])
        if len(body) <= 400_000:
            assert pieces.usage() == 12, size


def test_generated_text_cannot_fake_usage_and_the_last_object_wins() -> None:
    counter = TokenCounter(token_accounting("POST /api/generate"))
    counter.feed(b'{"response":"say \\"eval_count\\": 1, \\"prompt_eval_count\\": 0","done":false}\n')
    assert counter.usage() is None
    counter.feed(b'{"done":true,"prompt_eval_count":40,"eval_count":70}\n')
    assert counter.usage() == 110
    openai = TokenCounter(token_accounting("POST /v1/chat/completions"))
    openai.feed(b'data: {"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}\n\n')
    openai.feed(b"data: [DONE]\n\n")
    assert openai.usage() == 12


def test_missing_usage_charges_the_reservation_never_one_token() -> None:
    counter = TokenCounter(token_accounting("POST /api/generate"))
    counter.feed(b'{"response":"a","done":false}\n')  # cut short after one line
    assert counter.total(sse=False, reserved=300) == 300
    assert counter.total(sse=False) == 1


# --- reservations in the limiters ------------------------------------------------------------------
def make_key(budget: int) -> ApiKey:
    return ApiKey(id=uuid.uuid4().hex[:16], name="k", role=Role.INFERENCE, models=("*",),
                  created_at=datetime.now(UTC), expires_at=None, revoked=False, rpm=None,
                  concurrency=None, tokens_per_day=budget)


async def _concurrent(limiter: MemoryLimiter | RedisLimiter, budget: int, reserve: int, used: int) -> int:
    """30 requests at once, each reserving `reserve` and really using `used`; returns how many ran."""
    key = make_key(budget)
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        try:
            async with limiter.acquire(key, reserve) as reservation:
                admitted += 1
                await asyncio.sleep(0.05)
                assert reservation is not None
                await limiter.settle(key, reservation, used)
        except Limited:
            pass

    await asyncio.gather(*(one() for _ in range(30)))
    assert await limiter.tokens_today(key.id) <= budget + reserve
    return admitted


async def test_concurrent_requests_cannot_overshoot_in_memory() -> None:
    limiter = MemoryLimiter()
    assert await _concurrent(limiter, budget=20, reserve=12, used=12) == 2


async def test_concurrent_requests_cannot_overshoot_through_redis(redis_url: str) -> None:  # noqa: F811
    limiter = RedisLimiter(redis_url)
    await limiter.start()
    try:
        assert await _concurrent(limiter, budget=20, reserve=12, used=12) == 2
    finally:
        await limiter.close()


async def test_a_settled_reservation_gives_back_what_was_not_used() -> None:
    limiter = MemoryLimiter()
    key = make_key(100)
    async with limiter.acquire(key, 90) as reservation:
        assert await limiter.tokens_today(key.id) == 90
        assert reservation is not None
        await limiter.settle(key, reservation, 10)
    assert await limiter.tokens_today(key.id) == 10


# --- through a running gateway ---------------------------------------------------------------------
@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    answers = tmp_path / "answers.json"
    final = json.loads(ollama_answer(3, 9, 2_000))  # 12 tokens, usage ~150 KB before the end
    answers.write_text(json.dumps({
        "POST /api/generate": {"body": json.dumps(final)},
        # a slow stream: the first line at once, the final object (12 tokens) after 0.6 s
        "POST /api/chat": {"content_type": "application/x-ndjson", "interval": 0.6, "chunks": [
            '{"message":{"role":"assistant","content":"x"},"done":false}\n',
            '{"message":{"role":"assistant","content":""},"done":true,"prompt_eval_count":3,"eval_count":9}\n',
        ]},
    }))
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url):
        yield url


def _generate(gw: Gateway, path: str = "/api/generate", **extra: object) -> int:
    body = json.dumps({"model": "llama3.2:1b", "prompt": "hi", **extra}).encode()
    request = http_bytes("POST", path, headers={"Authorization": f"Bearer {gw.keys['budget']}"}, body=body)
    return raw_request(gw.host, gw.port, request, timeout=30).status


def _charged(gw: Gateway, count: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in audit_rows(gw.db_url) if r["key_name"] == "budget"]
        if len(rows) >= count or time.monotonic() > deadline:
            return sum(r["tokens"] for r in rows)
        time.sleep(0.1)


def test_logprobs_answers_are_charged_their_real_usage(upstream: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("budget", "inference", tokens_per_day=20)])
    with start_gateway(tmp_path / "gw", upstream, db_url=db) as gw:
        gw.keys = keys
        statuses = [_generate(gw) for _ in range(10)]
        # 12 tokens each: the first two fit under 20, then the budget is spent
        assert statuses == [200, 200] + [429] * 8, statuses
        assert _charged(gw, 10) == 24


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_thirty_concurrent_requests_stay_within_one_reservation(
    upstream: str, tmp_path: Path, store: str, redis_server: RedisServer  # noqa: F811
) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("budget", "inference", tokens_per_day=20)])
    extra = ["--redis", redis_server.url] if store == "redis" else []
    with start_gateway(tmp_path / "gw", upstream, db_url=db, extra_args=extra) as gw:
        gw.keys = keys
        options = {"num_predict": 9}
        with ThreadPoolExecutor(30) as pool:
            statuses = list(pool.map(lambda _: _generate(gw, "/api/chat", options=options), range(30)))
        answered = statuses.count(200)
        sent = json.dumps({"model": "llama3.2:1b", "prompt": "hi", "options": options})
        reservation = 9 + len(sent) // 4 + 1
        charged = _charged(gw, 30)
        assert set(statuses) <= {200, 429}, statuses
        assert 1 <= answered <= 2, statuses
        assert charged <= 20 + reservation, (charged, statuses)


def test_usage_survives_a_redis_restart(
    upstream: str, tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("budget", "inference", tokens_per_day=20)])
    with start_gateway(tmp_path / "gw", upstream, db_url=db, extra_args=["--redis", redis_server.url]) as gw:
        gw.keys = keys
        assert [_generate(gw) for _ in range(3)] == [200, 200, 429]
        assert _charged(gw, 3) == 24  # in the audit log
        redis_server.stop()  # no persistence: Redis comes back empty
        redis_server.start()
        statuses = [_generate(gw) for _ in range(3)]
        assert statuses[-1] == 429 and 200 not in statuses, statuses


# --- Redis Sentinel ---------------------------------------------------------------------------------
def test_sentinel_urls_are_parsed() -> None:
    assert parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380/mymaster/2") == (
        [("10.0.0.1", 26379), ("::1", 26380)], "mymaster", "s@cret", 2)
    assert parse_sentinel_url("redis+sentinel://h:1/m") == ([("h", 1)], "m", None, 0)
    for bad in ("redis+sentinel://h:1", "redis+sentinel://h/m", "redis+sentinel://h:1/m/x"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    master_port, sentinel_port = _free_port(), _free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor guard 127.0.0.1 {master_port} 1\n")
    master = subprocess.Popen([binary, "--port", str(master_port), "--bind", "127.0.0.1", "--save", "",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, start_new_session=True)
    sentinel = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", sentinel_port), timeout=1) as conn:
                    conn.sendall(b"SENTINEL get-master-addr-by-name guard\r\n")
                    if str(master_port).encode() in conn.recv(256):
                        break
            except OSError:
                pass
            time.sleep(0.1)
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/guard"
    finally:
        for proc in (sentinel, master):
            proc.terminate()
            proc.wait(5)


async def test_limits_through_a_sentinel_managed_master(sentinel: str) -> None:
    limiter = RedisLimiter(sentinel)
    await limiter.start()
    try:
        assert await _concurrent(limiter, budget=20, reserve=12, used=12) == 2
    finally:
        await limiter.close()
