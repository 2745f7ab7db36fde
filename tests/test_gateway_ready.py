"""Readiness and shutdown (issue 10, item 6; issue 9, items 10 and 11): `/-/ready` says 503 while Ollama
cannot serve and from the moment SIGTERM arrives — while the listener is still open; `/-/health` stays
liveness; error lines during an outage are rate-limited; a dead upstream is a warning at start; Ctrl-C
ends `serve` with exit 0. Readiness against the real key store, audit writer and Redis:
`test_gateway_ready_stores.py`; no connection reset at shutdown: `test_gateway_drain.py`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ollama_guard.gateway.ratelog import RateLimitedLog
from ollama_guard.gateway.readiness import Readiness
from support.gateway import (
    Gateway,
    KeySpec,
    create_keys,
    http_bytes,
    raw_request,
    read_response,
    start_gateway,
)
from support.pg_redis import RedisServer, redis_server  # noqa: F401
from support.servers import GATEWAY_READY, GUARD_ARGV, running_process, start_process, stop_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"


def _status(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> int:
    return raw_request(gw.host, gw.port, http_bytes("GET", path, headers=headers), timeout=10).status


def _wait_for(gw: Gateway, path: str, status: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    seen = None
    while time.monotonic() < deadline:
        seen = _status(gw, path)
        if seen == status:
            return
        time.sleep(0.2)
    pytest.fail(f"{path} stayed {seen}, expected {status}; output:\n{gw.output()[-2000:]}")


@pytest.fixture
def upstream(tmp_path: Path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({}))
    with running_process([sys.executable, str(CANNED), str(answers)]) as (proc, url):
        yield proc, url


def test_ready_follows_the_upstream_and_health_stays_liveness(upstream, tmp_path: Path) -> None:
    proc, url = upstream
    with start_gateway(tmp_path / "gw", url) as gw:
        _wait_for(gw, "/-/ready", 200)
        resp = raw_request(gw.host, gw.port, http_bytes("GET", "/-/ready"))
        assert json.loads(resp.body) == {"status": "ready"}  # no details for the public
        stop_process(proc)  # Ollama goes away
        _wait_for(gw, "/-/ready", 503)
        resp = raw_request(gw.host, gw.port, http_bytes("GET", "/-/ready"))
        assert json.loads(resp.body) == {"status": "not ready"} and url not in resp.body.decode()
        assert _status(gw, "/-/health") == 200
        time.sleep(0.5)
        assert "not ready: upstream" in gw.output()


def test_a_dead_upstream_at_start_is_a_warning_and_upstream_failures_are_logged_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    with start_gateway(tmp_path / "gw", "http://127.0.0.1:9", db_url=db) as gw:
        gw.keys = keys
        for _ in range(30):
            assert _status(gw, "/api/version", gw.auth("k")) == 502
        time.sleep(1.5)
        out = gw.output()
        assert "upstream http://127.0.0.1:9 does not answer" in out and "trying again" in out
        assert 1 <= out.count("upstream unavailable") <= 2, out


def test_sigterm_turns_ready_off_before_the_listener_closes(upstream, tmp_path: Path) -> None:
    _proc, url = upstream
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    with start_gateway(tmp_path / "gw", url, db_url=db, env={"OLLAMA_GUARD_SHUTDOWN_DELAY": "2"}) as gw:
        gw.keys = keys
        _wait_for(gw, "/-/ready", 200)
        pooled = socket.create_connection((gw.host, gw.port), timeout=10)  # a balancer's pooled connection
        again = f"GET /api/version HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {keys['k']}\r\n\r\n".encode()
        pooled.sendall(again)
        assert "connection" not in read_response(pooled).headers  # kept alive
        os.killpg(gw.proc.pid, signal.SIGTERM)
        time.sleep(0.3)
        assert _status(gw, "/-/ready") == 503  # the listener is still open…
        assert _status(gw, "/api/version", gw.auth("k")) == 200  # …and still serves
        # in the drain window every answer retires its connection, so no pooled connection is still
        # open (and about to carry a request) when the server stops
        pooled.sendall(again)
        resp = read_response(pooled)
        assert resp.status == 200 and resp.headers.get("connection") == "close"
        assert pooled.recv(100) == b""
        pooled.close()
        assert gw.proc.wait(15) == 0 or gw.proc.returncode == -signal.SIGTERM
        with pytest.raises(OSError):
            socket.create_connection((gw.host, gw.port), timeout=1).close()


def test_ctrl_c_ends_serve_cleanly_with_exit_0(upstream, tmp_path: Path) -> None:
    _proc, url = upstream
    argv = [*GUARD_ARGV, "serve", "--listen", "127.0.0.1:0", "--upstream", url,
            "--db", f"sqlite:///{tmp_path / 'guard.db'}"]
    proc, _url = start_process(argv, GATEWAY_READY, 40, env={"OLLAMA_GUARD_HOME": str(tmp_path / "home")})
    try:
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        stop_process(proc)


# --- the pieces ----------------------------------------------------------------------------------------
class _Upstream:
    def __init__(self, status: int | None) -> None:
        self.status = status

    async def open(self, *_args: object) -> SimpleNamespace:
        if self.status is None:
            raise ConnectionRefusedError("refused")

        async def read() -> bytes:
            return b""

        return SimpleNamespace(status=self.status, read=read, close=lambda: None)


async def test_readiness_checks_each_dependency() -> None:
    async def ping() -> None:
        return None

    async def broken_ping() -> None:
        raise ConnectionError("redis gone")

    def services(fresh: bool = True, backlog: int = 0, pinger=ping, writing: bool = True) -> SimpleNamespace:
        audit = SimpleNamespace(backlog=backlog, healthy=lambda: writing)
        return SimpleNamespace(authenticator=SimpleNamespace(fresh=fresh),
                               limiter=SimpleNamespace(ping=pinger), audit=audit)

    ready = Readiness(_Upstream(200), "http://ollama", max_backlog=100)

    async def why(readiness: Readiness, **kwargs: object) -> tuple[str, str] | None:
        reason = await readiness.check(services(**kwargs))  # type: ignore[arg-type]
        return None if reason is None else (reason.kind, reason.text)

    assert await why(ready) is None
    assert await why(ready, fresh=False) == ("keys", "the API key snapshot is stale (key store unreadable)")
    assert await why(ready, pinger=broken_ping) == ("limits",
                                                    "the limit store does not answer (ConnectionError)")
    assert await why(ready, backlog=100) == ("audit-backlog", "the audit backlog is 100 records (limit 100)")
    assert await why(ready, backlog=99) is None
    assert await why(ready, writing=False) == ("audit-writer", "the audit pipeline is not writing")
    assert await why(Readiness(_Upstream(502), "u", 100)) == ("upstream", "upstream u answers 502")
    assert await why(Readiness(_Upstream(500), "u", 100)) == ("upstream", "upstream u answers 500")
    assert await why(Readiness(_Upstream(404), "u", 100)) is None  # it answers: that is all we ask
    down = await why(Readiness(_Upstream(None), "u", 100))
    assert down is not None and down[0] == "upstream" and down[1].startswith("upstream u does not answer")
    assert await ready.ready(services()) is True
    ready.draining = True
    assert await ready.ready(services()) is False


async def test_readiness_logs_each_cause_once_and_reminds_while_it_lasts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ollama_guard.gateway import readiness

    monkeypatch.setattr(readiness, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(readiness, "REMIND_EVERY", 0.2)
    backlog = [0]
    keys = SimpleNamespace(fresh=True)
    audit = SimpleNamespace(backlog=lambda: backlog[0])
    services = SimpleNamespace(authenticator=keys, limiter=None, audit=audit)
    ready = Readiness(_Upstream(200), "u", max_backlog=10)
    with caplog.at_level(logging.WARNING, logger="ollama_guard.gateway"):
        assert await ready.ready(services)  # the first check, ready: nothing to say
        for size in (10, 11, 12):  # one cause, its detail changing at every probe: one line
            backlog[0] = size
            assert not await ready.ready(services)
        await asyncio.sleep(0.25)
        backlog[0] = 13
        assert not await ready.ready(services)  # a reminder while it lasts
        keys.fresh = False
        assert not await ready.ready(services)  # another cause: a line of its own
        keys.fresh, backlog[0] = True, 0
        assert await ready.ready(services)
    assert [r.getMessage() for r in caplog.records] == [
        "not ready: the audit backlog is 10 records (limit 10)",
        "still not ready: the audit backlog is 13 records (limit 10) (for 0 s)",
        "not ready: the API key snapshot is stale (key store unreadable)",
        "ready again after 0 s (was: the API key snapshot is stale (key store unreadable))",
    ]


def test_error_lines_are_rate_limited_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    limited = RateLimitedLog(logging.getLogger("test.ratelog"), interval=0.2)
    with caplog.at_level(logging.ERROR, logger="test.ratelog"):
        for _ in range(100):
            limited.error("redis", "limit store unavailable")
        time.sleep(0.25)
        limited.error("redis", "limit store unavailable")
        limited.error("db", "key store unavailable")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["limit store unavailable", "limit store unavailable (99 more like it in the last 0.2 s)",
                     "key store unavailable"]


def test_serve_with_workers_drains_on_sigterm(upstream, tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    _proc, url = upstream
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    args = ["--redis", redis_server.url, "--workers", "2"]
    with start_gateway(tmp_path / "gw", url, db_url=db, extra_args=args,
                       env={"OLLAMA_GUARD_SHUTDOWN_DELAY": "2"}) as gw:
        gw.keys = keys
        _wait_for(gw, "/-/ready", 200)
        results: list[int] = []

        async def clients() -> None:
            loop = asyncio.get_running_loop()
            request = http_bytes("GET", "/api/version", headers=gw.auth("k"))
            os.killpg(gw.proc.pid, signal.SIGTERM)
            for _ in range(10):  # requests during the drain window still get answers, not resets
                resp = await loop.run_in_executor(None, raw_request, gw.host, gw.port, request)
                results.append(resp.status)
                await asyncio.sleep(0.05)

        asyncio.run(clients())
        assert results == [200] * 10, results
        gw.proc.wait(20)
