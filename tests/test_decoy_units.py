"""In-process checks of the decoy's building blocks: CORS matching, the Host guard, body decoding,
Go-style values, routing and deterministic generation."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ollama_guard.decoy import bodies
from ollama_guard.decoy.cors import CorsPolicy, default_origins, legacy_wildcard
from ollama_guard.decoy.hostguard import check_host, is_loopback_listener, split_host_port
from ollama_guard.decoy.modelfile import modelfile_to_create, parameters_text, parse_modelfile
from ollama_guard.decoy.respond import go_time
from ollama_guard.decoy.router import Router
from ollama_guard.decoy.routes import HANDLERS, gin_pattern
from ollama_guard.decoy.serverlog import gin_access_line, gin_client_ip, go_duration
from ollama_guard.decoy.textgen import complete, embedding
from ollama_guard.ollama.endpoints import ENDPOINTS


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost", True),
        ("https://127.0.0.1:8443", True),
        ("http://0.0.0.0:3000", True),
        ("app://anything", True),
        ("file://", True),  # `file://*` is a prefix rule
        ("http://localhost.evil.example", False),
        ("http://127.0.0.2", False),
        ("chrome-extension://abcdef", False),
        ("null", False),
    ],
)
def test_default_origins(origin, allowed):
    assert CorsPolicy(default_origins()).origin_allowed(origin) is allowed


def test_cors_history():
    old = CorsPolicy(default_origins(version="0.1.33"), legacy_wildcard=legacy_wildcard("0.1.33"))
    assert old.origin_allowed("http://localhost.evil.example")  # gin-contrib/cors v1.4.0 wildcard bug
    assert not old.origin_allowed("app://obsidian.md")  # app:// arrived in 0.1.42
    mid = CorsPolicy(default_origins(version="0.3.0"), legacy_wildcard=legacy_wildcard("0.3.0"))
    assert not mid.origin_allowed("http://localhost.evil.example")
    assert mid.origin_allowed("app://obsidian.md") and not mid.origin_allowed("vscode-webview://x")


def test_cors_decisions():
    policy = CorsPolicy(default_origins(["https://app.example"]))
    assert policy.decide("GET", None, "127.0.0.1:11434").action == "pass"
    assert policy.decide("GET", "http://127.0.0.1:11434", "127.0.0.1:11434").action == "pass"  # same origin
    assert policy.decide("POST", "https://evil.example", "127.0.0.1:11434").action == "deny"
    pre = policy.decide("OPTIONS", "https://app.example", "127.0.0.1:11434")
    assert pre.action == "preflight" and ("Access-Control-Allow-Origin", "https://app.example") in pre.headers
    star = CorsPolicy(default_origins(["*"]))
    assert star.decide("GET", "https://evil.example", "x").headers == (("Access-Control-Allow-Origin", "*"),)


@pytest.mark.parametrize(
    ("header", "host"),
    [("localhost:11434", "localhost"), ("[::1]:80", "::1"), ("::1", "::1"), ("example.com", "example.com")],
)
def test_split_host_port(header, host):
    assert split_host_port(header) == host


def test_host_guard_rules():
    assert check_host(socket.gethostname() + ":11434", "GET") is None
    assert check_host("192.168.1.10", "GET") is None
    assert check_host("172.16.0.1", "GET") is None
    assert check_host("0.0.0.0:11434", "GET") is None
    assert check_host("100.64.0.1", "GET") == 403  # CGNAT is not "private" for Go
    assert check_host("attacker.example", "GET") == 403
    assert check_host("attacker.example", "OPTIONS") == 403
    assert check_host("app.localhost", "OPTIONS") == 204  # allowed by name: OPTIONS answered at once
    assert is_loopback_listener("127.0.0.1") and is_loopback_listener("::1")
    assert not is_loopback_listener("0.0.0.0") and not is_loopback_listener("192.168.1.2")


def test_body_decoding_follows_go():
    view = bodies.decode(b'{"Model": "a", "model": "b", "STREAM": false, "options": null}', bodies.GENERATE)
    assert view == {"model": "b", "stream": False}
    assert bodies.decode(b"null", bodies.GENERATE) == {}
    with pytest.raises(bodies.BadRequest) as err:
        bodies.decode(b"   ", bodies.GENERATE)
    assert err.value.message == "missing request body"
    with pytest.raises(bodies.BadRequest) as err:
        bodies.decode(b'{"model": 1}', bodies.GENERATE)
    assert err.value.message == (
        "json: cannot unmarshal number into Go struct field GenerateRequest.model of type string"
    )
    with pytest.raises(bodies.BadRequest) as err:
        bodies.decode(b'{"keep_alive": "5 minutes"}', bodies.GENERATE)
    assert "time: " in err.value.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("-1s", -1), ("0", 0), ("1.5h", 5400)],
)
def test_go_durations(text, seconds):
    assert bodies.parse_go_duration(text) == pytest.approx(seconds)


def test_keep_alive_values():
    assert bodies.keep_alive_seconds(None, 300) == 300
    assert bodies.keep_alive_seconds(-1, 300) == float("inf")
    assert bodies.keep_alive_seconds("10m", 300) == 600
    assert bodies.keep_alive_seconds(0, 300) == 0


def test_go_time_format():
    assert go_time(datetime(2024, 5, 1, 12, 0, 0, 123400, tzinfo=UTC)) == "2024-05-01T12:00:00.1234Z"
    assert go_time(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)) == "2024-05-01T12:00:00Z"
    east = timezone(timedelta(hours=5, minutes=30))
    assert go_time(datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=east)) == "2024-05-01T12:00:00.000005+05:30"


def test_parameters_text_like_ollama_show():
    text = parameters_text({"temperature": 0.7, "stop": ["<|a|>", "<|b|>"]})
    assert text.splitlines() == [
        'stop                           "<|a|>"',
        'stop                           "<|b|>"',
        "temperature                    0.7",
    ]


async def _noop(state, req, send):  # pragma: no cover - never awaited
    return None


def test_router_matches_like_gin():
    router = Router()
    router.add("GET,HEAD", "/api/tags", _noop)
    router.add("HEAD", "/api/blobs/:digest", _noop)
    assert router.resolve("GET", "/api/tags").handler is _noop
    assert router.resolve("HEAD", "/api/blobs/sha256:1").params == {"digest": "sha256:1"}
    assert router.resolve("POST", "/api/blobs/x").status == 405
    assert router.resolve("POST", "/api/tags").allowed == ("HEAD", "GET")
    assert router.resolve("HEAD", "/api/blobs/").status == 404
    assert router.resolve("GET", "/api/blobs/a/b").status == 404
    resolution = router.resolve("GET", "/api/tags/")
    assert (resolution.status, resolution.location) == (301, "/api/tags")
    assert router.resolve("POST", "/api/tags/").status == 404  # gin: no redirect, no 405 for POST


def test_every_catalog_endpoint_has_a_handler():
    assert {e.key for e in ENDPOINTS} == set(HANDLERS)
    assert gin_pattern("/api/blobs/{digest}") == "/api/blobs/:digest"


def test_generation_is_deterministic_and_bounded():
    a = complete("m", "prompt one")
    assert a == complete("m", "prompt one") and a.chunks
    assert complete("m", "prompt two").text != a.text
    capped = complete("m", "prompt one", max_tokens=2)
    assert capped.eval_count == 2 and capped.done_reason == "length"
    assert complete("m", "p", json_format=True).text.startswith('{"answer": ')
    vec = embedding("m", "x", 16)
    assert len(vec) == 16 and sum(v * v for v in vec) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (512, "512ns"),
        (971_777, "971.777µs"),
        (1_193_025, "1.193025ms"),
        (1_000_000, "1ms"),
        (32_779_561_288, "32.779561288s"),
        (991_000_000_000, "16m31s"),
        (3_600_000_000_000, "1h0m0s"),
    ],
)
def test_go_duration_strings(ns, text):
    assert go_duration(ns) == text


def test_gin_access_line_and_client_ip():
    line = gin_access_line(datetime(2026, 1, 20, 23, 15, 46), 200, 1_193_025, "127.0.0.1", "GET", "/api/ps")
    expected = '[GIN] 2026/01/20 - 23:15:46 | 200 |    1.193025ms |       127.0.0.1 | GET      "/api/ps"\n'
    assert line == expected
    assert gin_client_ip([("x-forwarded-for", "6.6.6.6, 10.0.0.1")], "127.0.0.1") == "6.6.6.6"
    assert gin_client_ip([("x-forwarded-for", "nonsense")], "127.0.0.1") == "127.0.0.1"
    assert gin_client_ip([("x-real-ip", "7.7.7.7")], "127.0.0.1") == "7.7.7.7"


def test_legacy_modelfile_conversion():
    body = modelfile_to_create(
        '# comment\nFROM @sha256:abc\nTEMPLATE """{{ .Prompt }}\nmore"""\nPARAMETER stop "<a>"\n'
        "PARAMETER stop <b>\nPARAMETER num_ctx 4096\nMESSAGE user hi there\nLICENSE MIT\n"
    )
    assert body == {
        "files": {"model.gguf": "sha256:abc"},
        "template": "{{ .Prompt }}\nmore",
        "parameters": {"stop": ["<a>", "<b>"], "num_ctx": 4096},
        "messages": [{"role": "user", "content": "hi there"}],
        "license": ["MIT"],
    }
    with pytest.raises(ValueError):
        parse_modelfile("RUN rm -rf /")
