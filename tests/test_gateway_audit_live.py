"""The audit log of a running `serve` under attack and crashes: a keyless flood cannot drown keyed
admin actions (every one recorded; the flood stored as per-client counts), `kill -9` loses no answered
request, and a stalled writer makes keyed requests fail closed (503), never silently unrecorded."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import ollama
import psutil
import pytest

from support.gateway import Gateway, KeySpec, audit_rows, create_keys, start_gateway
from support.pg_redis import pg_url, postgres_server  # noqa: F401
from support.servers import GUARD_ARGV, DecoyProcess, start_decoy


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), seed_models=1) as d:
        yield d


def keys_for(db: str) -> dict[str, str]:
    return create_keys(db, [KeySpec("admin", "admin"), KeySpec("reader", "read")])


def get(gw: Gateway, path: str, key: str | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(gw.url + path, headers=gw.auth(key) if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("x-request-id", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("x-request-id", ""), exc.read()


def writer_process(gw: Gateway) -> psutil.Process:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in psutil.Process(gw.proc.pid).children(recursive=True):
            if "ollama_guard.gateway.audit.writer" in " ".join(child.cmdline()):
                return child
        time.sleep(0.05)
    raise AssertionError("no audit writer process")


def verify(db: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GUARD_ARGV, "logs", "verify", "--db", db], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def flood(host: str, port: int, source: str, requests: int, answered: list[int]) -> None:
    """Keyless requests pipelined on one connection from `source`; counts the answers."""
    request = f"GET /api/tags HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    count = 0
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=10,
                                                               source_address=(source, 0)) as sock:
        sent = 0
        while sent < requests:
            batch = min(100, requests - sent)
            sock.sendall(request * batch)
            sent += batch
            buf = b""
            while buf.count(b"HTTP/1.1 401") < batch:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
            count += buf.count(b"HTTP/1.1 401")
    answered.append(count)


@pytest.mark.slow
def test_keyless_flood_cannot_drown_keyed_admin_actions(decoy: DecoyProcess, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = keys_for(db)
    with start_gateway(tmp_path, decoy.url, db_url=db) as gw:
        gw.keys = keys
        admin = ollama.Client(host=gw.url, headers=gw.auth("admin"), timeout=30)
        answered: list[int] = []
        sources = [f"127.0.0.{n}" for n in range(2, 7)]
        attackers = [threading.Thread(target=flood, args=(gw.host, gw.port, src, 1500, answered))
                     for src in sources for _ in range(2)]
        for t in attackers:
            t.start()
        for i in range(40):
            admin.copy("llama3.2:1b", f"copy-{i}")
        for t in attackers:
            t.join(60)
        gw.stop()
    rows = audit_rows(db)
    copies = [r for r in rows if r["path"] == "/api/copy"]
    intents = {r["request_id"] for r in copies if r["reason"] == "forwarding"}
    outcomes = {r["request_id"] for r in copies if r["reason"] == "ok" and r["status"] == 200}
    assert len(intents) == 40 and outcomes == intents  # each copy: spooled before it went, and its result
    refusals = [r for r in rows if r["key_id"] is None]
    assert sum(r["count"] for r in refusals) == sum(answered) > 5000  # every refusal counted
    assert {r["client"] for r in refusals} == set(sources)
    # the database grows with attackers, not packets: at most two rows per client per interval
    times = [datetime.fromisoformat(r["time"]) for r in refusals]
    intervals = (max(times) - min(times)).total_seconds() + 2  # one-second aggregation intervals
    assert len(refusals) <= 2 * len(sources) * intervals, (len(refusals), intervals)
    assert len(refusals) < sum(answered) / 20


@pytest.mark.slow
@pytest.mark.parametrize("victims", ["serve", "serve-and-writer"])
def test_kill_9_mid_load_loses_no_answered_request(decoy: DecoyProcess, tmp_path: Path, victims: str) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = keys_for(db)
    env = {"OLLAMA_GUARD_HOME": str(tmp_path / "home")}
    answered: list[str] = []
    stop = threading.Event()
    with start_gateway(tmp_path, decoy.url, db_url=db) as gw:
        gw.keys = keys
        writer = writer_process(gw)

        def load() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    status, request_id, _ = get(gw, "/api/version", "reader")
                    if status == 200:
                        answered.append(request_id)

        clients = [threading.Thread(target=load) for _ in range(4)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 20
        while len(answered) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(gw.proc.pid, signal.SIGKILL)  # alone, its writer process survives and drains the spool
        if victims == "serve-and-writer":
            writer.kill()
        stop.set()
        for t in clients:
            t.join(15)
        gw.proc.wait(10)
        if victims == "serve":
            writer.wait(30)
            assert verify(db, env).returncode == 0
        else:
            writer.wait(10)  # killed with the gateway: its spool waits for the next start
    if victims == "serve-and-writer":  # the next start replays the dead process's spool
        with start_gateway(tmp_path, decoy.url, db_url=db) as again:
            again.stop()
    checked = verify(db, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.match(r"intact \(\d+ records, \d writers?\)", checked.stdout)
    stored = {r["request_id"] for r in audit_rows(db)}
    assert len(answered) >= 200
    assert [rid for rid in answered if rid not in stored] == []


def test_keyed_requests_get_503_while_the_audit_writer_is_stalled(
    decoy: DecoyProcess, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = keys_for(db)
    with start_gateway(tmp_path, decoy.url, db_url=db, env={"OLLAMA_GUARD_AUDIT_MAX_BACKLOG": "20"}) as gw:
        gw.keys = keys
        writer = writer_process(gw)
        assert get(gw, "/api/version", "reader")[0] == 200
        writer.suspend()
        try:
            statuses = [get(gw, "/api/version", "reader")[0] for _ in range(30)]
            assert statuses[:15] == [200] * 15 and statuses[-5:] == [503] * 5, statuses
            status, _, body = get(gw, "/api/version", "reader")
            assert status == 503 and b"audit" in body
            assert get(gw, "/api/version")[0] == 401  # keyless traffic is still answered (and counted)
        finally:
            writer.resume()
        deadline = time.monotonic() + 20
        while get(gw, "/api/version", "reader")[0] != 200:
            assert time.monotonic() < deadline, "keyed requests never came back"
            time.sleep(0.1)
        status, _, metrics = get(gw, "/-/metrics", "admin")
        text = metrics.decode()
        assert status == 200 and "ollama_guard_audit_dropped_total 0.0" in text
        assert re.search(r"ollama_guard_audit_backlog \d", text)
        gw.stop()
    with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
        query = "SELECT count(*) FROM og_audit_records WHERE reason = 'audit-unavailable'"
        refused = conn.execute(query).fetchone()
    assert refused[0] >= 6  # the 503s themselves are on the record


@pytest.mark.slow
def test_two_replicas_on_postgres_one_killed_lose_nothing(
    decoy: DecoyProcess, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Two `serve` replicas share one PostgreSQL (and, on this host, the spool directory): replica A is
    killed with its writer mid-load; B's writer replays A's spool; verify names two intact chains."""
    secret = "s" * 48
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", secret)
    home = tmp_path / "home"
    env = {"OLLAMA_GUARD_SECRET": secret, "OLLAMA_GUARD_HOME": str(home)}
    keys = create_keys(pg_url, [KeySpec("reader", "read")])
    answered: list[str] = []
    stop = threading.Event()
    with start_gateway(tmp_path / "a", decoy.url, db_url=pg_url, env=env) as a, \
            start_gateway(tmp_path / "b", decoy.url, db_url=pg_url, env=env) as b:
        for gw in (a, b):
            gw.keys = keys

        def load(gw: Gateway) -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    status, request_id, _ = get(gw, "/api/version", "reader")
                    if status == 200:
                        answered.append(request_id)

        clients = [threading.Thread(target=load, args=(gw,)) for gw in (a, b, a, b)]
        for t in clients:
            t.start()
        deadline = time.monotonic() + 20
        while len(answered) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        doomed = writer_process(a)
        os.killpg(a.proc.pid, signal.SIGKILL)
        doomed.kill()  # the writer runs in a session of its own
        time.sleep(0.5)
        stop.set()
        for t in clients:
            t.join(15)
        deadline = time.monotonic() + 30  # B's writer looks for dead processes' spools every 5 s
        while list((home / "audit-spool").rglob("*.spool")) and time.monotonic() < deadline:
            time.sleep(0.2)
        b.stop()
    checked = verify(pg_url, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("intact (") and "2 writers" in checked.stdout
    import asyncio

    from ollama_guard.gateway.audit import read_records
    from ollama_guard.gateway.db import create_engine_for

    async def stored() -> set[str]:
        engine = create_engine_for(pg_url)
        try:
            return {r.request_id for r in await read_records(engine)}
        finally:
            await engine.dispose()

    ids = asyncio.run(stored())
    assert len(answered) >= 200 and [rid for rid in answered if rid not in ids] == []
