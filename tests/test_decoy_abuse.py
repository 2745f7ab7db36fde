"""The decoy on the open internet: what an attacker sends must not stall other clients, grow memory,
fill the disk or the request log, or make the decoy connect anywhere.

Each test runs a real `ollama-guard decoy` process, attacks it over loopback, and meanwhile measures a
well-behaved client's latency (< 500 ms) and the decoy's RSS (< 300 MB, psutil).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from support.servers import DecoyProcess, start_decoy
from support.wire import exchange

MAX_LATENCY = 0.5
MAX_RSS = 300 * 1024 * 1024


class Watch:
    """A polite client polling /api/version over one keep-alive connection, plus an RSS sampler."""

    def __init__(self, decoy: DecoyProcess) -> None:
        self.decoy = decoy
        self.latencies: list[float] = []
        self.rss: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll, daemon=True),
            threading.Thread(target=self._sample, daemon=True),
        ]

    def _poll(self) -> None:
        conn = http.client.HTTPConnection(self.decoy.host, self.decoy.port, timeout=10)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/api/version")
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    self.errors.append(f"status {response.status}")
            except OSError as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(self.decoy.host, self.decoy.port, timeout=10)
            self.latencies.append(time.perf_counter() - started)
            self._stop.wait(0.02)
        conn.close()

    def _sample(self) -> None:
        proc = psutil.Process(self.decoy.proc.pid)
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.rss.append(proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def check(self) -> None:
        assert self.latencies, "the polite client never got an answer"
        assert not self.errors, self.errors[:3]
        assert max(self.latencies) < MAX_LATENCY, f"worst latency {max(self.latencies):.3f}s"
        assert max(self.rss) < MAX_RSS, f"RSS peaked at {max(self.rss) >> 20} MiB"


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    """One decoy for the module (each test's bound holds whatever the others did before it)."""
    args = ("--stream-delay", "0", "--upload-quota", "48M", "--request-log-max", "256K")
    with start_decoy(tmp_path_factory.mktemp("abuse"), seed_models=1, extra_args=args) as running:
        yield running


def _send_streaming(decoy: DecoyProcess, head: bytes, body_size: int, fill: bytes = b"a") -> bytes:
    """Send `head` then `body_size` bytes of filler in 1 MiB pieces; return the answer (possibly cut)."""
    with socket.create_connection((decoy.host, decoy.port), timeout=30) as sock:
        piece = fill * (1 << 20)
        with contextlib.suppress(OSError):
            sock.sendall(head)
            sent = 0
            while sent < body_size:
                sock.sendall(piece[: body_size - sent])
                sent += len(piece)
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks)


def test_64_mib_header_of_ff_bytes_is_refused_like_go(decoy: DecoyProcess) -> None:
    with Watch(decoy) as watch:
        answer = _send_streaming(
            decoy, b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\nX-A: ", 64 << 20, b"\xff"
        )
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    watch.check()
    assert decoy.request_log.stat().st_size < 1 << 20


def test_keyless_64_mib_json_body_is_cut_at_the_route_cap(decoy: DecoyProcess) -> None:
    size = 64 << 20
    head = (
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % size + b'{"model":"x","prompt":"'
    )
    with Watch(decoy) as watch:
        started = time.perf_counter()
        answer = _send_streaming(decoy, head, size - 23)
        elapsed = time.perf_counter() - started
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert answer.endswith(b'{"error":"http: request body too large"}')
    assert elapsed < 20
    watch.check()


def test_json_with_a_million_elements_is_refused_before_parsing(decoy: DecoyProcess) -> None:
    body = b'{"model":"x","context":[' + b",".join([b"1"] * 1_000_000) + b"]}"
    with Watch(decoy) as watch:
        answer = exchange(
            (decoy.host, decoy.port),
            b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body,
            timeout=30,
        )
    assert b'{"error":"http: request body too large"}' in answer
    watch.check()


def _gguf_with_entries(count: int) -> bytes:
    parts = [b"GGUF", struct.pack("<IQQ", 3, 0, count)]
    for i in range(count):
        key = b"k%06d" % i
        parts.append(struct.pack("<Q", len(key)) + key + struct.pack("<IB", 0, 1))
    return b"".join(parts)


def test_gguf_with_200k_metadata_entries_through_create(decoy: DecoyProcess) -> None:
    blob = _gguf_with_entries(200_000)
    assert 3 << 20 < len(blob) < 5 << 20
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with Watch(decoy) as watch:
        conn = http.client.HTTPConnection(decoy.host, decoy.port, timeout=30)
        conn.request("POST", f"/api/blobs/{digest}", body=blob)
        assert conn.getresponse().read() == b""
        for attempt in range(3):  # a second and third create hit the (bounded) summary cache
            started = time.perf_counter()
            conn.request(
                "POST",
                "/api/create",
                body=json.dumps({"model": f"evil{attempt}", "files": {"m.gguf": digest}, "stream": False}),
            )
            response = conn.getresponse()
            response.read()
            assert time.perf_counter() - started < 3
            assert response.status in (200, 400)
        conn.close()
    watch.check()


def test_upload_flood_stays_within_the_disk_quota(decoy: DecoyProcess) -> None:
    blobs = decoy.models_dir / "blobs"
    answers: list[bytes] = []

    def upload(n: int) -> None:
        fill = bytes([0x41 + n])  # ten different 8 MiB blobs: 80 MiB against a 48 MiB quota
        digest = "sha256:" + hashlib.sha256(fill * (8 << 20)).hexdigest()
        head = b"POST /api/blobs/%s HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % (
            digest.encode(),
            8 << 20,
        )
        answers.append(_send_streaming(decoy, head, 8 << 20, fill))

    with Watch(decoy) as watch:
        threads = [threading.Thread(target=upload, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    used = sum(p.stat().st_blocks * 512 for p in blobs.rglob("*") if p.is_file())
    assert used <= 48 << 20
    full = [a for a in answers if b"no space left on device" in a]
    assert full, [a[:120] for a in answers]
    assert all(a.startswith(b"HTTP/1.1 500 Internal Server Error\r\n") for a in full)
    assert b"ollama-guard" not in b"".join(answers)
    watch.check()


def test_request_log_rotates_within_its_cap(decoy: DecoyProcess) -> None:
    conn = http.client.HTTPConnection(decoy.host, decoy.port, timeout=10)
    for n in range(200):
        conn.request("GET", f"/api/tags?n={n}", headers={"X-Pad": "\xff" * 6000})
        conn.getresponse().read()
    conn.close()
    logs = sorted(decoy.request_log.parent.glob(decoy.request_log.name + "*"))
    assert len(logs) == 4, logs  # the live file and three rotated ones
    assert sum(p.stat().st_size for p in logs) <= 4 * 256 * 1024
    assert all(p.stat().st_size <= 256 * 1024 for p in logs)


def test_keep_alive_1e300_unloads_instead_of_crashing(decoy: DecoyProcess) -> None:
    conn = http.client.HTTPConnection(decoy.host, decoy.port, timeout=10)
    model = "llama3.2:1b"  # the seeded model (others here were created by the attacks above)
    conn.request(
        "POST",
        "/api/generate",
        body=json.dumps({"model": model, "prompt": "hi", "stream": False, "keep_alive": 1e300}),
    )
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.request("GET", "/api/ps")
    assert json.loads(conn.getresponse().read())["models"] == []
    conn.close()


def test_many_large_bodies_at_once_share_a_bounded_memory_budget(decoy: DecoyProcess) -> None:
    """40 clients each hold a 7 MiB body open (under the per-route cap): without the shared budget the
    decoy would keep 280 MiB of them in memory."""
    size = 7 << 20
    head = (
        b"POST /api/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size
        + b'{"model":"x","prompt":"'
    )
    socks = []
    with Watch(decoy) as watch:
        for _ in range(40):
            sock = socket.create_connection((decoy.host, decoy.port), timeout=30)
            with contextlib.suppress(OSError):
                sock.sendall(head + b"a" * (size - len(head) + 23 - 3))
            socks.append(sock)
        time.sleep(0.5)
        answers = []
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b'"}')
                sock.shutdown(socket.SHUT_WR)
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    data += chunk
            sock.close()
            answers.append(data)
    watch.check()
    refused = [a for a in answers if a.endswith(b'{"error":"http: request body too large"}')]
    assert refused and len(refused) < len(answers)


def test_pull_push_and_create_never_connect_anywhere(decoy: DecoyProcess) -> None:
    """A registry the attacker names is a loopback listener here: the decoy must never dial it."""
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.5)
    registry = f"127.0.0.1:{trap.getsockname()[1]}"
    conn = http.client.HTTPConnection(decoy.host, decoy.port, timeout=10)
    conn.request("GET", "/api/tags")
    existing = json.loads(conn.getresponse().read())["models"][0]["name"]
    bodies = [
        ("/api/pull", {"model": f"{registry}/library/evil:latest", "insecure": True, "stream": False}),
        ("/api/pull", {"model": f"http://{registry}/x/y", "stream": False}),
        ("/api/push", {"model": existing, "insecure": True, "stream": False}),
        ("/api/copy", {"source": existing, "destination": f"{registry}/stolen/model:latest"}),
        ("/api/push", {"model": f"{registry}/stolen/model:latest", "insecure": True, "stream": False}),
        ("/api/create", {"model": "m2", "from": f"{registry}/other/base:1", "stream": False}),
    ]
    for path, body in bodies:
        conn.request("POST", path, body=json.dumps(body))
        conn.getresponse().read()
    conn.close()
    with pytest.raises(TimeoutError):
        trap.accept()
    trap.close()
    own = psutil.Process(decoy.proc.pid).net_connections(kind="inet")
    outward = [c for c in own if c.raddr and c.status == psutil.CONN_SYN_SENT]
    assert outward == []


def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    with start_decoy(tmp_path, seed_models=0, extra_args=("--max-conns-per-ip", "8")) as running:
        idle = [socket.create_connection((running.host, running.port), timeout=5) for _ in range(8)]
        time.sleep(0.2)
        extra = socket.create_connection((running.host, running.port), timeout=5)
        with contextlib.suppress(OSError):
            extra.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        try:
            refused = extra.recv(100) == b""
        except ConnectionResetError:
            refused = True
        assert refused
        extra.close()
        # another address is not affected by the first one's connections
        other = socket.create_connection(
            (running.host, running.port), timeout=5, source_address=("127.0.0.2", 0)
        )
        other.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert other.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        other.close()
        for sock in idle:
            sock.close()
        time.sleep(0.2)
        again = socket.create_connection((running.host, running.port), timeout=5)
        again.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert again.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")
        again.close()


def test_stalled_one_megabyte_headers_share_a_bounded_buffer(tmp_path: Path) -> None:
    """300 connections each send 1 MB of header and stall (Go would hold them all: 300 MB)."""
    args = ("--max-conns-per-ip", "400")
    with start_decoy(tmp_path, seed_models=0, extra_args=args) as running, Watch(running) as watch:
        socks = []
        head = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Stall: " + b"s" * 1_000_000
        for _ in range(300):
            sock = socket.create_connection((running.host, running.port), timeout=10)
            with contextlib.suppress(OSError):
                sock.sendall(head)
            socks.append(sock)
        time.sleep(0.5)
        refused = 0
        for sock in socks:
            sock.settimeout(0.05)
            with contextlib.suppress(OSError):
                refused += sock.recv(64).startswith(b"HTTP/1.1 431 ")
            sock.close()
    assert refused > 200
    watch.check()
