"""Readiness against real stores (issue 10, item 6): `/-/ready` is 503 — with nothing but "not ready" for
the public — while the key snapshot is stale (PostgreSQL stopped), while the audit backlog is over its
threshold (the real writer process stopped with SIGSTOP under keyed traffic) and while Redis is down;
200 again once each recovers. During each outage the log says so once per cause and interval, with a
count of what it held back — not once per request."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from support.gateway import Gateway, KeySpec, create_keys, http_bytes, raw_request, start_gateway
from support.pg_redis import (  # noqa: F401
    PostgresServer,
    RedisServer,
    pg_url,
    postgres_server,
    redis_server,
)
from support.servers import running_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"
# error lines about one dependency at most once a second here (10 s by default)
FAST_LOG = {"OLLAMA_GUARD_ERROR_LOG_INTERVAL": "1"}


@pytest.fixture
def upstream(tmp_path: Path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({}))
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url):
        yield url


def _get(gw: Gateway, path: str, key: str | None = None):
    return raw_request(gw.host, gw.port, http_bytes("GET", path, headers=gw.auth(key) if key else None))


def _wait_ready(gw: Gateway, status: int, within: float = 20.0) -> float:
    """Poll `/-/ready` until it answers `status`; returns how long that took."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < within:
        resp = _get(gw, "/-/ready")
        seen = resp.status
        if seen == status:
            expected = {"status": "ready"} if status == 200 else {"status": "not ready"}
            assert json.loads(resp.body) == expected  # no detail for the public, ever
            return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"/-/ready stayed {seen}, expected {status}; output:\n{gw.output()[-3000:]}")


def _lines(gw: Gateway, pattern: str, within: float = 2.0) -> list[str]:
    """The output lines matching `pattern` (waiting up to `within` seconds for a first one: the
    gateway's output reaches us through a pipe and a thread)."""
    deadline = time.monotonic() + within
    while True:
        found = [line for line in gw.output().splitlines() if re.search(pattern, line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _keyed_burst(gw: Gateway, seconds: float, expect: int) -> int:
    """Keyed requests for `seconds` (spanning more than one log interval); each must answer `expect`."""
    count = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert _get(gw, "/api/version", "k").status == expect
        count += 1
        time.sleep(0.02)
    return count


@pytest.mark.slow
def test_stopped_postgresql_makes_the_key_snapshot_stale_and_the_gateway_not_ready(
    upstream: str, tmp_path: Path, pg_url: str, postgres_server: PostgresServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "s" * 48  # keys made here and the gateway share the server secret
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", secret)
    keys = create_keys(pg_url, [KeySpec("k", "read")])
    env = {**FAST_LOG, "OLLAMA_GUARD_SECRET": secret}
    with start_gateway(tmp_path / "gw", upstream, db_url=pg_url, env=env) as gw:
        gw.keys = keys
        _wait_ready(gw, 200)
        before = len(gw.output().splitlines())
        postgres_server.stop()
        try:
            # nothing but readiness probes: the stale snapshot alone has to turn readiness off (the
            # poller cannot refresh it; keys are refused 5 s after the last good read)
            took = _wait_ready(gw, 503)
            assert took > 3, f"not ready after {took:.1f} s: before the snapshot could be stale?"
            assert _lines(gw, "not ready: the API key snapshot is stale")
            refused = _keyed_burst(gw, 2.5, 503)  # every keyed request: 503, key store unavailable
            time.sleep(0.2)
            errors = _lines(gw, "key store unavailable, refusing keyed requests")
            assert 2 <= len(errors) <= 4, errors  # one line a second, not one per request…
            held = sum(int(m) for line in errors for m in re.findall(r"\((\d+) more like it", line))
            assert 0 < held <= refused, (refused, errors)  # …counting the ones it held back
            assert len(_lines(gw, "cannot read API keys", within=0)) <= 2
            during = gw.output().splitlines()[before:]  # everything said during the outage
            assert len(during) <= 15, "\n".join(during)  # a few lines, not one per request
        finally:
            postgres_server.start()
        _wait_ready(gw, 200, within=30)
        assert _get(gw, "/api/version", "k").status == 200
        assert _lines(gw, "ready again")


def _writer(gw: Gateway) -> psutil.Process:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in psutil.Process(gw.proc.pid).children(recursive=True):
            if "ollama_guard.gateway.audit.writer" in " ".join(child.cmdline()):
                return child
        time.sleep(0.05)
    raise AssertionError("no audit writer process")


@pytest.mark.slow
def test_a_stopped_audit_writer_turns_readiness_off_once_the_backlog_passes_its_threshold(
    upstream: str, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    env = {**FAST_LOG, "OLLAMA_GUARD_READY_MAX_AUDIT_BACKLOG": "40"}
    with start_gateway(tmp_path / "gw", upstream, db_url=db, env=env) as gw:
        gw.keys = keys
        _wait_ready(gw, 200)
        writer = _writer(gw)
        writer.send_signal(signal.SIGSTOP)  # alive, writing nothing: only the backlog shows it
        try:
            # keyed requests go on (spooled and answered); readiness follows the backlog
            for requests, ready in ((10, 200), (40, 503), (10, 503)):
                for _ in range(requests):
                    assert _get(gw, "/api/version", "k").status == 200
                time.sleep(1.05)  # past readiness's one-second cache
                assert _get(gw, "/-/ready").status == ready, gw.output()[-2000:]
        finally:
            writer.send_signal(signal.SIGCONT)
        _wait_ready(gw, 200)
        # one line for the cause, although the backlog it names grew at every probe
        assert len(_lines(gw, "not ready: the audit backlog is")) == 1, gw.output()
        assert _lines(gw, r"ready again after \d+ s \(was: the audit backlog is")


@pytest.mark.slow
def test_redis_down_turns_readiness_off_and_its_errors_are_counted_not_repeated(
    tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    answers = tmp_path / "answers.json"  # a streamed answer (~1.5 s) to be in flight when Redis goes
    chunks = ['{"model":"m","response":"x","done":false}\n'] * 6
    chunks.append('{"model":"m","response":"","done":true,"prompt_eval_count":1,"eval_count":6}\n')
    answers.write_text(json.dumps({"POST /api/generate": {"chunks": chunks, "interval": 0.25}}))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "inference", rpm=100_000, concurrency=50, tokens_per_day=10**6)])
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_up, url), start_gateway(
        tmp_path / "gw", url, db_url=db, env=FAST_LOG, extra_args=["--redis", redis_server.url]
    ) as gw:
        gw.keys = keys
        _wait_ready(gw, 200)
        body = b'{"model":"m","prompt":"p","options":{"num_predict":8}}'
        generate = http_bytes("POST", "/api/generate", body=body,
                              headers={**gw.auth("k"), "Content-Type": "application/json"})
        streams = [socket.create_connection((gw.host, gw.port), timeout=10) for _ in range(12)]
        for stream in streams:  # in flight (slot leased, tokens reserved) when Redis goes away
            stream.sendall(generate)
        time.sleep(0.4)
        before = len(gw.output().splitlines())
        redis_server.stop()
        try:
            _wait_ready(gw, 503)
            refused = _keyed_burst(gw, 2.5, 503)
            for stream in streams:
                stream.close()
            time.sleep(0.2)
            errors = _lines(gw, "limit store unavailable, refusing limited keys")
            assert 2 <= len(errors) <= 4, errors
            held = sum(int(m) for line in errors for m in re.findall(r"\((\d+) more like it", line))
            assert 0 < held <= refused, (refused, errors)
            assert len(_lines(gw, "not ready: the limit store")) == 1
            # the 12 requests in flight could neither settle their tokens nor give their slots back:
            # a line each, and no traceback, would scale with the traffic
            assert len(_lines(gw, "could not record token use")) <= 2
            assert len(_lines(gw, "could not release a concurrency lease", within=0)) <= 2
            assert "Traceback" not in gw.output()
            during = gw.output().splitlines()[before:]  # everything said during the outage
            assert len(during) <= 15, "\n".join(during)
        finally:
            redis_server.start()
        _wait_ready(gw, 200)
        assert _get(gw, "/api/version", "k").status == 200
