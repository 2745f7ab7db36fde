"""Shutdown without resets (issue 10, item 6): connections the kernel has queued on the listening socket
when it is finally closed are answered (`503`, `Connection: close`, `Retry-After`), not reset —
`gateway/drain.py` on its own, then a real `serve --workers 2` taken down with SIGTERM while clients
keep connecting (raw sockets, resets counted)."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest

from ollama_guard.gateway.drain import ListenerDrain, refuse_new_connections
from support.gateway import KeySpec, create_keys, http_bytes, read_response, start_gateway
from support.pg_redis import RedisServer, redis_server  # noqa: F401
from support.servers import running_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _queued_clients(port: int, count: int) -> list[socket.socket]:
    """`count` connections the kernel accepts for the listener, each with its request sent (half of them
    with a body nobody will read)."""
    clients = []
    for i in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
            client.sendall(http_bytes("POST", "/v1/chat/completions", body=body,
                                      headers={"Content-Type": "application/json"}))
        else:
            client.sendall(http_bytes("GET", "/api/version"))
        clients.append(client)
    return clients


def _outcome(client: socket.socket, request: bytes = b"") -> str:
    try:
        if request:
            client.sendall(request)
        return str(read_response(client).status)
    except ConnectionResetError:
        return "reset"
    except ConnectionError:
        return "closed"
    finally:
        client.close()


def test_closing_a_listener_resets_its_queue_but_the_drain_answers_every_queued_connection() -> None:
    # what a plain close does (the reason for the drain): every queued connection is reset
    plain = _listener()
    clients = _queued_clients(plain.getsockname()[1], 10)
    plain.close()
    assert collections.Counter(_outcome(c) for c in clients) == {"reset": 10}

    sock = _listener()
    port = sock.getsockname()[1]
    clients = _queued_clients(port, 20)
    drain = ListenerDrain(sock)
    finishing = threading.Thread(target=drain.finish)
    finishing.start()  # finish() alone: refuse new handshakes, answer the queue, close
    answers = []
    for i, client in enumerate(clients):
        resp = read_response(client)
        client.close()
        answers.append(resp.status)
        assert resp.headers["connection"] == "close" and resp.headers["retry-after"] == "1"
        document = json.loads(resp.body)
        if i % 2:  # OpenAI's error shape on /v1/ paths, Ollama's elsewhere
            assert document["error"]["type"] == "overloaded_error", document
        else:
            assert document == {"error": "the gateway is shutting down; retry"}
    finishing.join(10)
    assert answers == [503] * 20 and drain.answered == 20
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_client_still_uploading_its_body_gets_the_answer_not_a_reset() -> None:
    """The drain answers after the request head; a body still on its way is read and dropped until the
    client closes (closing with unread bytes would reset the connection under the client's upload)."""
    sock = _listener()
    drain = ListenerDrain(sock)
    drain.start()
    try:
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=5) as client:
            size = 4 * 1024 * 1024
            client.sendall(http_bytes("POST", "/api/create", headers={"Content-Length": str(size)}))
            time.sleep(0.3)  # answered by now
            client.sendall(b"x" * size)
            assert read_response(client).status == 503
    finally:
        drain.finish()


def test_the_drain_answers_connections_as_they_come_until_finished() -> None:
    sock = _listener()
    port = sock.getsockname()[1]
    drain = ListenerDrain(sock)
    drain.start()
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                client.sendall(http_bytes("HEAD", "/api/tags"))
                resp = read_response(client, head_request=True)
                assert resp.status == 503 and resp.body == b""
                client.settimeout(0.5)  # the drain closes its side at once (Connection: close)…
                assert client.recv(100) == b""  # …and there is nothing after the head of a HEAD answer
    finally:
        drain.finish()
    assert drain.answered == 3


class _LastMomentListener(socket.socket):
    """A listener that, just before it is closed, sees one more client try to connect (the race between
    the drain's last accept and the close)."""

    late_connected: bool | None = None

    def close(self) -> None:
        if self.late_connected is None and self.fileno() >= 0:
            late = socket.socket()
            late.settimeout(0.3)
            try:
                late.connect(self.getsockname())
                self.late_connected = True  # queued now: the close below would reset it
            except TimeoutError:
                self.late_connected = False  # its SYN was dropped: it will meet a closed port instead
            self._late = late
        super().close()


def test_the_drain_closes_its_listener_only_once_no_new_connection_can_join_the_queue() -> None:
    sock = _LastMomentListener(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    ListenerDrain(sock).finish()
    assert sock.late_connected is False
    sock._late.close()


def test_a_refusing_filter_stops_new_handshakes_and_keeps_the_queue() -> None:
    sock = _listener()
    port = sock.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port), timeout=5)
    queued.sendall(b"hello")
    assert refuse_new_connections(sock)
    late = socket.socket()
    late.settimeout(0.5)
    with pytest.raises(TimeoutError):  # its SYN is dropped: it never joins the queue…
        late.connect(("127.0.0.1", port))
    late.close()
    conn, _ = sock.accept()  # …while what was queued before is still there, data and all
    conn.settimeout(5)
    assert conn.recv(10) == b"hello"
    conn.close()
    queued.close()
    sock.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_the_drain_speaks_tls_on_a_tls_listener(tmp_path: Path) -> None:
    from support.tls import self_signed_cert

    cert, key = self_signed_cert(tmp_path, "127.0.0.1", ip_san="127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    sock = _listener()
    drain = ListenerDrain(sock, server_context)
    drain.start()
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        with socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=5) as raw, \
                client_context.wrap_socket(raw, server_hostname="127.0.0.1") as client:
            client.sendall(http_bytes("GET", "/api/version"))
            assert read_response(client).status == 503
    finally:
        drain.finish()


# --- a real `serve --workers 2` taken down while clients keep connecting --------------------------
@pytest.mark.slow
def test_serve_with_workers_answers_every_connection_during_sigterm_none_is_reset(
    tmp_path: Path, redis_server: RedisServer  # noqa: F811
) -> None:
    answers, db, keys = _slow_upstream_and_keys(tmp_path)
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_up, url), start_gateway(
        tmp_path / "gw", url, db_url=db, extra_args=["--redis", redis_server.url, "--workers", "2"],
        env={"OLLAMA_GUARD_SHUTDOWN_DELAY": "0.5"},
    ) as gw:
        gw.keys = keys
        address = (gw.host, gw.port)
        deadline = time.monotonic() + 20
        while read_response(_send(address, http_bytes("GET", "/-/ready"))).status != 200:
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.2)
        # a streamed answer keeps the workers in their graceful shutdown, the listener still open
        slow = _send(address, http_bytes("POST", "/api/generate", body=b'{"model":"m","prompt":"p"}',
                                         headers={**gw.auth("k"), "Content-Type": "application/json"}))
        request = http_bytes("GET", "/api/version", headers=gw.auth("k"))
        counts: collections.Counter[str] = collections.Counter()
        stop, lock = threading.Event(), threading.Lock()

        def client() -> None:  # connect, ask, classify — through the whole shutdown
            while not stop.is_set():
                try:
                    conn = socket.create_connection(address, timeout=10)
                except OSError:
                    outcome = "refused"
                    time.sleep(0.01)
                else:
                    outcome = _outcome(conn, request)
                with lock:
                    counts[outcome] += 1

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            os.kill(gw.proc.pid, signal.SIGTERM)  # to the supervisor only, as Kubernetes does
            time.sleep(1.2)  # the workers have stopped accepting; the slow answer still runs
            queued = [_send(address, request) for _ in range(20)]
            burst = collections.Counter(_outcome(conn) for conn in queued)
            assert gw.proc.wait(20) == 0
            time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
        slow_outcome = read_response(slow)
        slow.close()
    print(f"queued during the workers' shutdown: {dict(burst)}; continuous clients: {dict(counts)}")
    # queued while no worker accepted (a worker still accepting on a slow machine may serve some): all
    # answered, none reset
    assert sum(burst.values()) == 20 and burst["503"] > 0 and set(burst) <= {"200", "503"}, burst
    assert counts["reset"] == 0 and counts["closed"] == 0, counts
    assert counts["200"] > 0 and counts["503"] > 0, counts
    assert slow_outcome.status == 200  # the request in flight was finished


def _send(address: tuple[str, int], data: bytes) -> socket.socket:
    conn = socket.create_connection(address, timeout=10)
    conn.sendall(data)
    return conn


def _slow_upstream_and_keys(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    answers = tmp_path / "answers.json"  # a streamed answer of ~2.5 s
    slow_answer = {"chunks": ['{"response":"x","done":false}\n'] * 10 + ['{"done":true}\n'], "interval": 0.25}
    answers.write_text(json.dumps({"POST /api/generate": slow_answer}))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    return answers, db, create_keys(db, [KeySpec("k", "inference")])


def test_one_process_serve_serves_a_fresh_connections_first_request_and_answers_the_queue(
    tmp_path: Path,
) -> None:
    answers, db, keys = _slow_upstream_and_keys(tmp_path)
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_up, url), \
            start_gateway(tmp_path / "gw", url, db_url=db) as gw:
        gw.keys = keys
        address = (gw.host, gw.port)
        deadline = time.monotonic() + 20
        while read_response(_send(address, http_bytes("GET", "/-/ready"))).status != 200:
            assert time.monotonic() < deadline, gw.output()
            time.sleep(0.2)
        slow = _send(address, http_bytes("POST", "/api/generate", body=b'{"model":"m","prompt":"p"}',
                                         headers={**gw.auth("k"), "Content-Type": "application/json"}))
        fresh = socket.create_connection(address, timeout=10)  # accepted, its request not sent yet
        silent = socket.create_connection(address, timeout=10)  # accepted, and will never send one
        time.sleep(0.3)
        os.kill(gw.proc.pid, signal.SIGTERM)  # no drain delay in tests: shutdown starts at once
        term = time.monotonic()
        time.sleep(0.3)
        keep_alive = f"GET /api/version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys['k']}\r\n\r\n"
        fresh.sendall(keep_alive.encode())  # uvicorn alone closes such a connection at shutdown: a reset
        first = read_response(fresh)
        fresh.settimeout(2)
        assert fresh.recv(100) == b""  # served, then closed: no second request on it during shutdown
        fresh.close()
        request = http_bytes("GET", "/api/version", headers=gw.auth("k"))
        queued = [_send(address, request) for _ in range(10)]
        burst = collections.Counter(_outcome(conn) for conn in queued)
        assert silent.recv(1) == b""  # the grace is short: a client that says nothing cannot hold
        silent_for = time.monotonic() - term  # the shutdown (as long as a connection stays open)
        silent.close()
        gw.proc.wait(20)
        slow.close()
    assert first.status == 200 and first.headers.get("connection") == "close"
    assert burst == {"503": 10}, burst
    assert 1.5 < silent_for < 4, silent_for  # first_request_grace is 2 s


def test_an_unloadable_tls_certificate_is_one_clear_error(tmp_path: Path) -> None:
    from ollama_guard.errors import GuardError
    from ollama_guard.gateway.config import GatewayConfig
    from ollama_guard.gateway.shutdown import drain_tls_context

    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    config = GatewayConfig(tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem")
    with pytest.raises(GuardError, match="cannot load the TLS certificate"):
        drain_tls_context(config)
    assert drain_tls_context(GatewayConfig()) is None


def test_the_shutdown_timeout_and_the_error_log_pace_come_from_the_configuration() -> None:
    from pydantic import ValidationError

    from ollama_guard.gateway.config import GatewayConfig, load_config
    from ollama_guard.gateway.ratelog import GATEWAY_LOG
    from ollama_guard.gateway.server import _uvicorn_config, configure_protocol

    environ = {"OLLAMA_GUARD_SHUTDOWN_TIMEOUT": "42", "OLLAMA_GUARD_ERROR_LOG_INTERVAL": "3"}
    config = load_config(None, {}, environ)
    assert _uvicorn_config(config, object()).timeout_graceful_shutdown == 42
    before = GATEWAY_LOG.interval
    try:
        configure_protocol(config)
        assert GATEWAY_LOG.interval == 3
    finally:
        configure_protocol(GatewayConfig())
    assert GATEWAY_LOG.interval == before == 10
    for field in ("shutdown_timeout", "error_log_interval"):
        with pytest.raises(ValidationError):
            GatewayConfig(**{field: 0})
