"""Attack suite for `ollama-guard serve`: every bypass attempt must be refused by the gateway, with the
right status, and must not reach Ollama (checked in the decoy's request log)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from support.gateway import (
    Gateway,
    KeySpec,
    audit_rows,
    create_keys,
    http_bytes,
    raw_request,
    read_response,
    start_gateway,
)
from support.servers import DecoyProcess, start_decoy

CORS_ORIGIN = "http://good.example"
CONFIG = f"""
[gateway]
allow_cidrs = ["127.0.0.1/32"]
trusted_proxies = ["127.0.0.1/32"]
max_body_bytes = 65536
request_timeout = 1.5
cors_origins = ["{CORS_ORIGIN}"]
"""


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), seed_models=2) as d:
        # a model no restricted key may touch
        req = urllib.request.Request(
            d.url + "/api/copy",
            data=json.dumps({"source": "llama3.2:1b", "destination": "secret"}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        yield d


@pytest.fixture(scope="module")
def gw(decoy: DecoyProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("gw")
    db = f"sqlite:///{work / 'guard.db'}"
    keys = create_keys(
        db,
        [
            KeySpec("admin", "admin"),
            KeySpec("limited-admin", "admin", models=["llama3.2*"]),
            KeySpec("inf", "inference", models=["llama3.2*", "qwen2.5:*"]),
            KeySpec("reader", "read", models=["llama3.2:1b"]),
        ],
    )
    with start_gateway(work, decoy.url, db_url=db, config_toml=CONFIG) as g:
        g.keys = keys
        yield g


class Probe:
    """Sends one request and reports what the decoy saw because of it."""

    def __init__(self, gw: Gateway, decoy: DecoyProcess) -> None:
        self.gw = gw
        self.decoy = decoy

    def raw(self, data: bytes, *, source: str | None = None, timeout: float = 10.0) -> tuple[Any, list[dict]]:
        before = len(self.decoy.requests())
        resp = raw_request(self.gw.host, self.gw.port, data, source=source, timeout=timeout)
        time.sleep(0.05)
        return resp, self.decoy.requests()[before:]

    def send(
        self,
        method: str,
        target: str,
        key: str | None = "admin",
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        host: str = "127.0.0.1",
    ) -> tuple[Any, list[dict]]:
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {self.gw.keys[key]}"
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return self.raw(http_bytes(method, target, headers=hdrs, body=body, host=host), source=source)

    def refused(self, status: int, method: str, target: str, key: str | None = "admin", **kw: Any) -> Any:
        resp, seen = self.send(method, target, key, **kw)
        assert resp.status == status, (resp.status, resp.body)
        assert seen == [], f"decoy saw {seen}"
        if method != "HEAD":
            assert "error" in json.loads(resp.body)
        return resp


@pytest.fixture
def probe(gw: Gateway, decoy: DecoyProcess) -> Probe:
    return Probe(gw, decoy)


# --- paths and methods ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method,target",
    [
        ("DELETE", "//api/delete"),
        ("DELETE", "/api/./delete"),
        ("DELETE", "/api/%64elete"),
        ("DELETE", "/API/DELETE"),
        ("DELETE", "/api/delete/"),
        ("DELETE", "/api/x/../delete"),
        ("GET", "/api/tags/"),
        ("GET", "/api//tags"),
        ("GET", "/api/tags%00"),
        ("GET", "/api/experimental/aliases"),  # removed route
        ("POST", "/v1/audio/transcriptions"),  # multipart: model cannot be checked
        ("GET", "/debug/pprof/"),
        ("PATCH", "/api/tags"),
        ("POST", "/api/tags"),
        ("GET", "/api/delete"),
        ("TRACE", "/api/tags"),
        ("OPTIONS", "/api/tags"),
    ],
)
def test_paths_outside_the_allowlist_are_refused(probe: Probe, method: str, target: str) -> None:
    probe.refused(403, method, target, body=b'{"model":"llama3.2:1b"}' if method != "GET" else None)


def test_unknown_method_is_refused(probe: Probe) -> None:
    resp, seen = probe.send("FOO", "/api/tags")
    assert resp.status in (400, 403, 405)
    assert seen == []


def test_query_string_does_not_change_routing_and_is_not_forwarded(probe: Probe) -> None:
    resp, seen = probe.send("GET", "/api/tags?x=/../delete", "reader")
    assert resp.status == 200
    assert [(r["method"], r["path"], r["query"]) for r in seen] == [("GET", "/api/tags", "")]
    probe.refused(403, "DELETE", "/api/tags?/api/delete", body={"model": "secret"})


def test_absolute_form_target_is_refused(probe: Probe, decoy: DecoyProcess) -> None:
    probe.refused(400, "GET", f"{decoy.url}/api/tags")
    probe.refused(400, "DELETE", "http://127.0.0.1/api/delete", body={"model": "secret"})


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
def test_method_override_headers_are_refused(probe: Probe, header: str) -> None:
    probe.refused(400, "POST", "/api/show", body={"model": "secret"}, headers={header: "DELETE"})


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:abc",
        "sha256:" + "g" * 64,
        "..%2F..%2Fetc%2Fpasswd",
        "sha256:" + "0" * 63,
        "sha512:" + "0" * 64,
        "sha256%3A" + "0" * 64,
    ],
)
def test_blob_routes_need_a_valid_digest(probe: Probe, digest: str) -> None:
    probe.refused(
        400, "HEAD" if digest.startswith("sha512") else "POST", f"/api/blobs/{digest}", body=b"data"
    )


def test_blob_upload_is_admin_only(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/blobs/sha256:" + "0" * 64, "inf", body=b"data")
    probe.refused(403, "HEAD", "/api/blobs/sha256:" + "0" * 64, "reader")


def test_blob_upload_streams_through_beyond_the_json_body_cap(probe: Probe, gw: Gateway) -> None:
    import hashlib

    blob = bytes(range(256)) * 1024  # 256 KiB, four times max_body_bytes (which is for JSON bodies)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    resp, seen = probe.send("POST", f"/api/blobs/{digest}", body=blob)
    assert resp.status in (200, 201), resp.body
    (upload,) = seen
    assert upload["path"] == f"/api/blobs/{digest}" and upload["body_size"] == len(blob)
    # chunked upload without Content-Length (a new blob: Ollama answers an existing one without reading)
    blob = blob[::-1]
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(blob[i : i + 65536]), blob[i : i + 65536]) for i in range(0, len(blob), 65536)
    )
    data = (
        http_bytes(
            "POST",
            f"/api/blobs/{digest}",
            headers={"Authorization": f"Bearer {gw.keys['admin']}", "Transfer-Encoding": "chunked"},
        )
        + chunks
        + b"0\r\n\r\n"
    )
    resp, seen = probe.raw(data)
    assert resp.status in (200, 201) and seen[0]["body_size"] == len(blob)
    head, seen = probe.send("HEAD", f"/api/blobs/{digest}")
    assert head.status == 200 and len(seen) == 1


# --- authentication ---------------------------------------------------------------------------------
def test_missing_and_bad_keys_get_401_with_bearer_challenge(probe: Probe, gw: Gateway) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer og_0000000000000000_nope"},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer"},
        {"x-api-key": "not-a-key"},
        {"Authorization": f"Bearer {gw.keys['admin']}x"},
        {"Authorization": f"bearer {gw.keys['reader']}", "x-api-key": gw.keys["admin"]},
    ):
        resp = probe.refused(401, "GET", "/api/tags", None, headers=headers)
        assert resp.headers["www-authenticate"].startswith("Bearer")


def test_repeated_authorization_header_is_refused(probe: Probe, gw: Gateway) -> None:
    data = http_bytes("GET", "/api/tags", headers={"Authorization": f"Bearer {gw.keys['reader']}"})
    data = data.replace(b"\r\n\r\n", f"\r\nAuthorization: Bearer {gw.keys['admin']}\r\n\r\n".encode(), 1)
    resp, seen = probe.raw(data)
    assert resp.status == 400 and seen == []


def test_x_api_key_header_works(probe: Probe, gw: Gateway) -> None:
    resp, seen = probe.send("GET", "/api/version", None, headers={"X-API-Key": gw.keys["reader"]})
    assert resp.status == 200 and len(seen) == 1


# --- roles and models -------------------------------------------------------------------------------
def test_roles_are_enforced(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/generate", "reader", body={"model": "llama3.2:1b"})
    probe.refused(403, "DELETE", "/api/delete", "inf", body={"model": "llama3.2:1b"})
    probe.refused(403, "POST", "/api/pull", "inf", body={"model": "llama3.2:1b"})
    probe.refused(403, "POST", "/api/create", "inf", body={"model": "x", "from": "llama3.2:1b"})


@pytest.mark.parametrize(
    "name",
    [
        "secret",
        "SECRET",
        "secret:latest",
        "library/secret",
        "registry.ollama.ai/library/secret:latest",
        "Registry.Ollama.AI/Library/Secret:LATEST",
        " secret",
        "secret:local",
    ],
)
def test_model_spellings_are_canonicalised(probe: Probe, name: str) -> None:
    probe.refused(403, "POST", "/api/show", "inf", body={"model": name})
    probe.refused(403, "POST", "/api/generate", "inf", body={"model": name, "prompt": "x"})
    probe.refused(403, "POST", "/v1/chat/completions", "inf", body={"model": name, "messages": []})


def test_invalid_model_names_are_malformed(probe: Probe) -> None:
    probe.refused(400, "POST", "/api/show", "inf", body={"model": "ſecret"})
    probe.refused(400, "POST", "/api/show", "inf", body={"model": "../secret"})
    probe.refused(400, "POST", "/api/show", "inf", body={"model": 5})


def test_every_field_naming_a_model_is_checked(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/show", "inf", body={"name": "secret"})
    probe.refused(403, "POST", "/api/show", "inf", body={"model": "llama3.2:1b", "name": "secret"})
    probe.refused(403, "DELETE", "/api/delete", "limited-admin", body={"model": "", "name": "SECRET"})
    probe.refused(
        403, "POST", "/api/copy", "limited-admin", body={"source": "secret", "destination": "llama3.2:x"}
    )
    probe.refused(
        403, "POST", "/api/copy", "limited-admin", body={"source": "llama3.2:1b", "destination": "secret"}
    )
    probe.refused(
        403, "POST", "/api/create", "limited-admin", body={"model": "llama3.2:new", "from": "secret"}
    )
    probe.refused(403, "GET", "/v1/models/secret", "inf")


def test_listings_show_only_allowed_models(probe: Probe, gw: Gateway) -> None:
    resp, _ = probe.send("GET", "/api/tags", "reader")
    assert [m["name"] for m in json.loads(resp.body)["models"]] == ["llama3.2:1b"]
    resp, _ = probe.send("GET", "/v1/models", "inf")
    assert sorted(m["id"] for m in json.loads(resp.body)["data"]) == ["llama3.2:1b", "qwen2.5:0.5b"]
    resp, _ = probe.send("GET", "/api/tags", "admin")
    assert "secret:latest" in [m["name"] for m in json.loads(resp.body)["models"]]


# --- egress and cloud -------------------------------------------------------------------------------
def test_push_is_refused_by_default(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/push", body={"model": "llama3.2:1b"})
    probe.refused(403, "POST", "/api/push", body={"model": "evil.example.com/x/llama3.2:1b"})


def test_pull_only_from_allowed_registries(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/pull", body={"model": "evil.example.com:5000/a/b"})
    probe.refused(403, "POST", "/api/pull", body={"model": "llama3.2:1b", "name": "evil.example.com/a/b"})
    probe.refused(403, "POST", "/api/pull", body={"model": "http://registry.ollama.ai/library/tiny"})
    probe.refused(403, "POST", "/api/pull", body={"model": "tiny", "insecure": True})
    probe.refused(403, "POST", "/api/create", body={"model": "mine", "from": "evil.example.com/a/b"})
    resp, seen = probe.send("POST", "/api/pull", body={"model": "tinyllama", "stream": False})
    assert resp.status == 200 and [r["path"] for r in seen] == ["/api/pull"]


def test_cloud_models_and_account_routes_are_refused(probe: Probe) -> None:
    probe.refused(403, "POST", "/api/generate", body={"model": "gpt-oss:20b-cloud", "prompt": "x"})
    probe.refused(403, "POST", "/api/chat", body={"model": "gpt-oss:120b:cloud", "messages": []})
    probe.refused(403, "POST", "/v1/chat/completions", body={"model": "qwen3-coder:cloud", "messages": []})
    probe.refused(403, "POST", "/api/me", body=b"")
    probe.refused(403, "POST", "/api/signout")
    probe.refused(403, "DELETE", "/api/user/keys/abc")
    probe.refused(403, "POST", "/api/experimental/web_search", body={"query": "x"})
    probe.refused(403, "POST", "/api/experimental/web_fetch", body={"url": "http://127.0.0.1/"})
    probe.refused(403, "POST", "/api/create", body={"model": "r", "remote_host": "https://ollama.com"})


# --- body parsing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"llama3.2:1b","MODEL":"secret"}',
        b'{"model":"llama3.2:1b","model":"secret"}',
        b'{"model":"llama3.2:1b","Model":"llama3.2:1b"}',
        '{"model":"llama3.2:1b","stream":false,"ſtream":true}'.encode(),
        b'{"model":"llama3.2:1b","\\u017ftream":true,"stream":false}',
        b'{"name":"llama3.2:1b","NAME":"secret"}',
    ],
)
def test_ambiguous_json_keys_are_refused(probe: Probe, body: bytes) -> None:
    probe.refused(400, "POST", "/api/show", "inf", body=body)


@pytest.mark.parametrize(
    "body",
    [
        b'["model"]',
        b'"x"',
        b"",
        b"{",
        b'{"model":"llama3.2:1b"} {"model":"secret"}',
        b'{"model":"llama3.2:1b","x":"\xff"}',
        b'{"model":"llama3.2:1b","x":NaN}',
        b'{"model":"llama3.2:1b","x":' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"model":"llama3.2:1b","x":"\\ud800"}',
    ],
)
def test_malformed_bodies_are_refused(probe: Probe, body: bytes) -> None:
    probe.refused(400, "POST", "/api/show", "inf", body=body)


@pytest.mark.parametrize("encoding", ["gzip", "zstd", "deflate, gzip"])
def test_compressed_bodies_are_refused(probe: Probe, encoding: str) -> None:
    probe.refused(
        415,
        "POST",
        "/api/show",
        "inf",
        body=b'{"model":"llama3.2:1b"}',
        headers={"Content-Encoding": encoding},
    )


def test_oversized_bodies_are_refused(probe: Probe, gw: Gateway) -> None:
    # a declared Content-Length over the cap is refused before the body is read
    head = http_bytes(
        "POST",
        "/api/generate",
        headers={"Authorization": f"Bearer {gw.keys['inf']}", "Content-Length": "70000"},
    )
    resp, seen = probe.raw(head)
    assert resp.status == 413 and seen == []
    # chunked, no Content-Length: counted while it arrives (the client never finishes the body)
    big = json.dumps({"model": "llama3.2:1b", "prompt": "x" * 70000}).encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(big[i : i + 8192]), big[i : i + 8192]) for i in range(0, len(big), 8192)
    )
    data = (
        http_bytes(
            "POST",
            "/api/generate",
            headers={"Authorization": f"Bearer {gw.keys['inf']}", "Transfer-Encoding": "chunked"},
        )
        + chunks
    )
    resp, seen = probe.raw(data)
    assert resp.status == 413 and seen == []


def test_slow_body_times_out(probe: Probe, gw: Gateway, decoy: DecoyProcess) -> None:
    before = len(decoy.requests())
    head = http_bytes(
        "POST", "/api/show", headers={"Authorization": f"Bearer {gw.keys['inf']}", "Content-Length": "100"}
    )
    with socket.create_connection((gw.host, gw.port), timeout=10) as sock:
        sock.sendall(head + b'{"model":')
        started = time.monotonic()
        resp = read_response(sock)
        waited = time.monotonic() - started
    assert resp.status == 408
    assert 1.0 < waited < 6
    assert decoy.requests()[before:] == []


def test_slow_headers_are_cut_off(gw: Gateway, decoy: DecoyProcess) -> None:
    before = len(decoy.requests())
    with socket.create_connection((gw.host, gw.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: x\r\n")
        closed = False
        for _ in range(40):  # one header byte every 0.2 s, never finishing
            try:
                sock.sendall(b"X")
                sock.settimeout(0.2)
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        waited = time.monotonic() - started
    assert closed and waited < 5
    assert decoy.requests()[before:] == []


def test_oversized_request_target_and_headers_are_refused(probe: Probe, gw: Gateway) -> None:
    resp, seen = probe.raw(http_bytes("GET", "/api/tags?" + "a" * 20000))
    assert resp.status == 400 and seen == []
    big = {f"X-Filler-{i}": "v" * 1000 for i in range(80)}
    resp, seen = probe.send("GET", "/api/tags", "reader", headers=big)
    assert resp.status == 400 and seen == []


# --- network policy ---------------------------------------------------------------------------------
def test_forwarded_for_is_believed_only_from_trusted_proxies(probe: Probe) -> None:
    # 127.0.0.1 is a trusted proxy: its X-Forwarded-For names the client, who is outside allow_cidrs
    probe.refused(403, "GET", "/api/version", "reader", headers={"X-Forwarded-For": "10.9.8.7"})
    resp, seen = probe.send("GET", "/api/version", "reader", headers={"X-Forwarded-For": "127.0.0.1"})
    assert resp.status == 200 and len(seen) == 1
    # 127.0.0.2 is not a trusted proxy (and not allowed): its X-Forwarded-For is ignored
    probe.refused(
        403, "GET", "/api/version", "reader", headers={"X-Forwarded-For": "127.0.0.1"}, source="127.0.0.2"
    )


def test_cors_preflight_is_answered_by_the_gateway(probe: Probe) -> None:
    resp, seen = probe.send(
        "OPTIONS",
        "/api/chat",
        None,
        headers={
            "Origin": CORS_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204 and seen == []
    assert resp.headers["access-control-allow-origin"] == CORS_ORIGIN
    probe.refused(
        403,
        "OPTIONS",
        "/api/chat",
        None,
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    probe.refused(403, "GET", "/api/tags", "reader", headers={"Origin": "http://evil.example"})
    resp, seen = probe.send("GET", "/api/version", "reader", headers={"Origin": CORS_ORIGIN})
    assert resp.status == 200 and resp.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "origin" not in {name for name, _ in seen[0]["headers"]}


def test_credentials_and_client_headers_never_reach_ollama(
    probe: Probe, gw: Gateway, decoy: DecoyProcess
) -> None:
    resp, seen = probe.send(
        "POST",
        "/api/show",
        "inf",
        body={"model": "llama3.2:1b"},
        headers={
            "Cookie": "session=1",
            "X-Forwarded-For": "127.0.0.1",
            "X-Forwarded-Host": "evil",
            "Forwarded": "for=x",
            "X-API-Key": gw.keys["inf"],
            "Proxy-Authorization": "Basic x",
        },
        host="evil.example",
    )
    assert resp.status == 200
    (seen_request,) = seen
    names = {name for name, _ in seen_request["headers"]}
    assert not names & {
        "authorization",
        "x-api-key",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "forwarded",
        "proxy-authorization",
        "origin",
    }
    assert dict(seen_request["headers"])["host"] == decoy.hostport
    assert gw.keys["inf"] not in json.dumps(seen_request)


def test_refusals_are_audited_without_secrets(gw: Gateway, probe: Probe) -> None:
    probe.refused(403, "POST", "/api/show", "inf", body={"model": "secret", "prompt": "TOP-SECRET-PROMPT"})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        rows = audit_rows(gw.db_url)
        if any(r["reason"] == "model-not-allowed" for r in rows):
            break
        time.sleep(0.2)
    denied = [r for r in rows if r["reason"] == "model-not-allowed"]
    assert denied and denied[-1]["decision"] == "deny" and denied[-1]["status"] == 403
    assert denied[-1]["key_name"] == "inf"
    dump = json.dumps(rows)
    for token in gw.keys.values():
        assert token not in dump and token.split("_", 2)[2] not in dump  # og_<hex id>_<secret>
    assert "TOP-SECRET-PROMPT" not in dump
