"""Connections (issue 10, item 5): under a low open-files limit, 1100 idle connections from one address
must not lock everyone else out (the soft limit is raised at start, each client address may hold only
so many connections, a connection that has not authenticated may idle only briefly); a client that
never reads a streamed answer is cut off after `write_timeout`, which frees its upstream connection
and its key's concurrency slot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollama_guard.gateway.server import raise_fd_limit
from support.gateway import KeySpec, create_keys, http_bytes, raw_request, read_response, start_gateway
from support.servers import running_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"
FD_LIMIT = 1024


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({
        # a long stream: 64 KiB lines as fast as the gateway takes them
        "POST /api/generate": {"content_type": "application/x-ndjson", "repeat": 2000, "interval": 0.001,
                               "chunks": ['{"response":"' + "x" * 65536 + '","done":false}\n']},
    }))
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url):
        yield url


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))  # soft = hard: nothing to raise


def _soft_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, hard))  # systemd's default soft limit


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))
        assert raise_fd_limit() == (hard if hard != resource.RLIM_INFINITY else raise_fd_limit())
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
@pytest.mark.parametrize("limits", [_low_fd_limit, _soft_fd_limit], ids=["hard-1024", "soft-1024"])
def test_idle_connections_from_one_address_do_not_lock_others_out(
    upstream: str, tmp_path: Path, limits: Callable[[], None]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))  # this test's own sockets
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    idle: list[socket.socket] = []
    with start_gateway(tmp_path / "gw", upstream, db_url=db, preexec_fn=limits) as gw:
        gw.keys = keys
        try:
            for _ in range(1100):  # an attacker on 127.0.0.2: connect, send nothing
                with contextlib.suppress(OSError):
                    sock = socket.create_connection((gw.host, gw.port), timeout=2,
                                                    source_address=("127.0.0.2", 0))
                    idle.append(sock)
            request = http_bytes("GET", "/api/version", headers=gw.auth("k"))
            ok = total = 0
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # a legitimate client, 20 requests a second
                total += 1
                with contextlib.suppress(OSError):
                    ok += raw_request(gw.host, gw.port, request, timeout=2).status == 200
                time.sleep(0.05)
            print(f"legitimate success rate under {len(idle)} idle connections: {ok}/{total}")
            assert ok >= 0.95 * total, (ok, total)
        finally:
            for sock in idle:
                sock.close()


def test_an_unauthenticated_connection_may_only_idle_briefly(upstream: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    with start_gateway(tmp_path / "gw", upstream, db_url=db,
                       env={"OLLAMA_GUARD_UNAUTHENTICATED_TIMEOUT": "0.5"}) as gw:
        gw.keys = keys
        silent = socket.create_connection((gw.host, gw.port), timeout=5)
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the gateway
        assert time.monotonic() - started < 3
        # a connection that authenticated keeps the longer keep-alive
        keyed = socket.create_connection((gw.host, gw.port), timeout=5)
        request = http_bytes("GET", "/api/version", headers=gw.auth("k"))
        keyed.sendall(request.replace(b"Connection: close", b"X: y"))
        assert keyed.recv(65536).startswith(b"HTTP/1.1 200")
        keyed.settimeout(1.5)
        with pytest.raises(TimeoutError):
            keyed.recv(1)  # still open after 1.5 s
        keyed.close()
        silent.close()


def test_connections_per_client_address_are_capped(upstream: str, tmp_path: Path) -> None:
    env = {"OLLAMA_GUARD_MAX_CONNECTIONS_PER_CLIENT": "5"}
    with start_gateway(tmp_path / "gw", upstream, env=env) as gw:
        held = [socket.create_connection((gw.host, gw.port), timeout=5, source_address=("127.0.0.3", 0))
                for _ in range(5)]
        extra = socket.create_connection((gw.host, gw.port), timeout=5, source_address=("127.0.0.3", 0))
        with pytest.raises(OSError):
            extra.sendall(http_bytes("GET", "/-/health"))
            if not extra.recv(1):
                raise ConnectionResetError
        other = raw_request(gw.host, gw.port, http_bytes("GET", "/-/health"), source="127.0.0.4")
        assert other.status == 200  # another address is not affected
        for sock in [*held, extra]:
            sock.close()


def test_a_client_that_never_reads_a_stream_frees_its_slots(upstream: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("one", "inference", concurrency=1)])
    with start_gateway(tmp_path / "gw", upstream, db_url=db, env={"OLLAMA_GUARD_WRITE_TIMEOUT": "1"}) as gw:
        gw.keys = keys
        body = json.dumps({"model": "llama3.2:1b", "prompt": "x", "options": {"num_predict": 1}}).encode()
        request = http_bytes("POST", "/api/generate", headers=gw.auth("one"), body=body)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect((gw.host, gw.port))
        stuck.sendall(request)  # …and never reads
        time.sleep(0.5)
        version = http_bytes("GET", "/api/version", headers=gw.auth("one"))
        assert raw_request(gw.host, gw.port, version).status == 429  # its one slot is taken
        deadline = time.monotonic() + 15
        status = 429
        while status == 429 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = raw_request(gw.host, gw.port, version).status
        assert status == 200, gw.output()[-2000:]  # cut off after write_timeout: the slot is free
        stuck.close()


def test_a_slow_upstream_is_not_a_slow_client(tmp_path: Path) -> None:
    # pauses of the upstream longer than write_timeout between chunks: the client reads everything
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({
        "POST /api/generate": {"content_type": "application/x-ndjson", "interval": 1.5,
                               "chunks": ['{"response":"a","done":false}\n', '{"done":true}\n']},
    }))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("one", "inference")])
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url), \
            start_gateway(tmp_path / "gw", url, db_url=db, env={"OLLAMA_GUARD_WRITE_TIMEOUT": "1"}) as gw:
        gw.keys = keys
        body = json.dumps({"model": "llama3.2:1b", "prompt": "x", "options": {"num_predict": 1}}).encode()
        sock = socket.create_connection((gw.host, gw.port), timeout=10)
        sock.sendall(http_bytes("POST", "/api/generate", headers=gw.auth("one"), body=body))
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"cut off: {data!r}"
            data += chunk
        assert b'{"done":true}' in data
        sock.close()


class _FakeTransport:
    """Just enough of an asyncio transport for the protocol's connection bookkeeping."""

    def __init__(self, peer: str) -> None:
        self.peer, self.aborted, self.closing = peer, False, False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": (self.peer, 40000, 0, 0), "sockname": ("::1", 11435, 0, 0)}.get(name, default)

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closing = True

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_ipv6_clients_are_capped_per_64(monkeypatch: pytest.MonkeyPatch) -> None:
    """One host or customer usually gets a whole /64: counted per /128, one client could open 2^64
    times the cap. Loopback has no second IPv6 /64 to connect from, so the protocol is driven directly."""
    import uvicorn
    from uvicorn.server import ServerState

    from ollama_guard.gateway.server import GuardHttpToolsProtocol

    async def app(scope: object, receive: object, send: object) -> None:
        pass

    monkeypatch.setattr(GuardHttpToolsProtocol, "max_per_client", 3)
    monkeypatch.setattr(GuardHttpToolsProtocol, "open_per_client", {})
    config = uvicorn.Config(app, lifespan="off")
    state = ServerState()

    def connect(peer: str) -> tuple[GuardHttpToolsProtocol, _FakeTransport]:
        protocol = GuardHttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
        transport = _FakeTransport(peer)
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return protocol, transport

    same_64 = [connect(f"2001:db8:1:2::{n:x}") for n in range(1, 4)]
    assert not any(t.aborted for _, t in same_64)
    assert connect("2001:db8:1:2:ffff:ffff:ffff:fffe")[1].aborted  # the 4th from that /64: refused
    assert not connect("2001:db8:1:3::1")[1].aborted  # the next /64 is another client
    assert not connect("10.0.0.1")[1].aborted and not connect("10.0.0.2")[1].aborted  # IPv4: per address
    protocol, _ = same_64[0]
    protocol.connection_lost(None)  # one closes: room for one more from that /64
    assert not connect("2001:db8:1:2::99")[1].aborted
    for protocol, _transport in same_64[1:]:
        protocol.connection_lost(None)


def _idle_open(sock: socket.socket, seconds: float) -> bool:
    """Whether the gateway keeps `sock` open (sends nothing, closes nothing) for `seconds`."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True


def test_the_header_deadline_restarts_after_each_answer(tmp_path: Path) -> None:
    # request_timeout 1.5 s: a connection must send a request's headers within 1.5 s of opening or of
    # its previous answer. The deadline is a time checked by one timer per connection (not a timer per
    # request): a check that fires after an answer moved the deadline must wait for the new one.
    answers = tmp_path / "answers.json"
    answers.write_text("{}")
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url), \
            start_gateway(tmp_path / "gw", url, env={"OLLAMA_GUARD_REQUEST_TIMEOUT": "1.5"}) as gw:
        sock = socket.create_connection((gw.host, gw.port), timeout=5)
        opened = time.monotonic()
        time.sleep(1.0)
        sock.sendall(http_bytes("GET", "/-/health").replace(b"Connection: close", b"X: y"))
        assert read_response(sock).status == 200
        answered = time.monotonic()
        # the first deadline (opened + 1.5 s) passes: the connection stays open …
        assert _idle_open(sock, max(0.1, opened + 2.0 - time.monotonic()))
        # … until 1.5 s after the answer
        sock.settimeout(5)
        assert sock.recv(1) == b""
        closed = time.monotonic()
        assert answered + 1.3 < closed < answered + 3.0, (closed - answered)
        sock.close()


def test_the_header_deadline_never_cuts_an_answer_in_progress(tmp_path: Path) -> None:
    # an answer that takes longer than request_timeout (a generation, a slow upstream) is relayed whole
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"GET /api/version": {
        "content_type": "application/json", "interval": 1.0, "chunks": ['{"version":', '"0.6.5"}']}}))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("k", "read")])
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url), \
            start_gateway(tmp_path / "gw", url, db_url=db, env={"OLLAMA_GUARD_REQUEST_TIMEOUT": "1.5"}) as gw:
        gw.keys = keys
        sock = socket.create_connection((gw.host, gw.port), timeout=10)
        started = time.monotonic()
        sock.sendall(http_bytes("GET", "/api/version", headers=gw.auth("k")))
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {time.monotonic() - started:.1f} s: {data!r}"
            data += chunk
        assert time.monotonic() - started > 1.5  # the answer outlasted the header deadline
        assert data.startswith(b"HTTP/1.1 200") and b'"0.6.5"}' in data
        sock.close()
