"""The decoy's request log read as honeypot events (ECS names, sessions, upload evidence, rejections)."""

from __future__ import annotations

import hashlib
import http.client
import socket
from pathlib import Path

from ollama_guard.decoy.events import SessionTracker, read_events
from support.servers import start_decoy
from support.wire import exchange


def test_requests_uploads_and_rejections_become_ecs_events(tmp_path: Path) -> None:
    blob = b"GGUF\x03\x00\x00\x00" + b"\x00" * 100
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with start_decoy(tmp_path, seed_models=1, extra_args=("--request-log-max", "4K")) as decoy:
        conn = http.client.HTTPConnection(decoy.host, decoy.port, timeout=10)
        for _ in range(3):
            conn.request("GET", "/api/tags?x=1", headers={"User-Agent": "masscan/1.3"})
            conn.getresponse().read()
        conn.request("POST", f"/api/blobs/{digest}", body=blob)
        assert conn.getresponse().status == 201
        conn.close()
        assert exchange((decoy.host, decoy.port), b"garbage\xff\r\n\r\n").startswith(
            b"HTTP/1.1 400 Bad Request"
        )
        with socket.create_connection((decoy.host, decoy.port), source_address=("127.0.0.2", 0)) as other:
            other.sendall(b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while other.recv(4096):
                pass
        events = list(read_events(decoy.request_log))
    assert len(list(tmp_path.glob("decoy-requests.jsonl.*"))) >= 1  # rotated, and still all read
    tags = [e for e in events if e.get("url", {}).get("path") == "/api/tags"]
    assert len(tags) == 3
    first = tags[0]
    assert first["event"]["dataset"] == "decoy.requests" and first["event"]["kind"] == "event"
    assert first["source"]["ip"] == "127.0.0.1" and first["http"]["request"]["method"] == "GET"
    assert first["http"]["response"]["status_code"] == 200 and first["url"]["query"] == "x=1"
    assert first["user_agent"]["original"] == "masscan/1.3" and first["@timestamp"] == first["time"]
    assert len({e["decoy"]["session"]["id"] for e in tags}) == 1
    assert [e["decoy"]["session"]["sequence"] for e in tags] == [1, 2, 3]
    upload = next(e for e in events if e["path"].startswith("/api/blobs/"))
    assert upload["file"] == {"hash": {"sha256": digest[7:]}, "size": len(blob)}
    assert upload["decoy"]["upload"]["head_hex"] == blob[:64].hex()
    assert upload["decoy"]["session"]["id"] == first["decoy"]["session"]["id"]
    rejected = next(e for e in events if e["event"]["action"] == "http-rejected")
    assert rejected["http"]["response"]["status_code"] == 400 and rejected["raw_head"].startswith(
        "garbage\xff"
    )
    other = next(e for e in events if e["source"]["ip"] == "127.0.0.2")
    assert other["decoy"]["session"]["id"] != first["decoy"]["session"]["id"]


def test_sessions_end_after_idling_and_the_tracker_is_bounded() -> None:
    tracker = SessionTracker(idle=10, capacity=2)
    a1, n1 = tracker.touch("10.0.0.1", now=0)
    a2, n2 = tracker.touch("10.0.0.1", now=5)
    a3, n3 = tracker.touch("10.0.0.1", now=16)
    assert a1 == a2 != a3 and (n1, n2, n3) == (1, 2, 1)
    tracker.touch("10.0.0.2", now=17)
    tracker.touch("10.0.0.3", now=18)
    assert len(tracker._clients) == 2


def test_logged_headers_are_bounded() -> None:
    from ollama_guard.decoy.requestlog import HEADER_BUDGET, bounded_headers

    kept, cut = bounded_headers([("x-big", "\xff" * 65536)])
    assert cut and len(kept[0][1]) == 2048
    kept, cut = bounded_headers([(f"x-{n}", "v") for n in range(500)])
    assert cut and len(kept) == 100
    kept, cut = bounded_headers([(f"x-{n}", "v" * 2000) for n in range(60)])
    assert cut and sum(len(k) + len(v) for k, v in kept) <= HEADER_BUDGET
    assert bounded_headers([("host", "a")]) == ([["host", "a"]], False)
