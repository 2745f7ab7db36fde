"""The decoy at the HTTP level: Ollama's/gin's status codes and texts, Go-style JSON field matching, blob
endpoints per version, CORS, the Host-header guard, the request log and real streaming."""

from __future__ import annotations

import hashlib
import json
import re
import time

import httpx
import pytest

from support.servers import start_decoy


@pytest.fixture(scope="module")
def decoy(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoy")
    args = ("--stream-delay", "0", "--server-log", str(root / "server.log"))
    with start_decoy(root, seed_models=3, extra_args=args) as d:
        yield d


@pytest.fixture(scope="module")
def http(decoy):
    with httpx.Client(base_url=decoy.url, timeout=10) as client:
        yield client


def test_fingerprint_routes(http):
    r = http.get("/")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        200,
        "Ollama is running",
        "text/plain; charset=utf-8",
    )
    r = http.head("/")
    assert r.status_code == 200 and r.content == b""
    assert http.get("/api/version").json() == {"version": "0.6.5"}


def test_gin_404_and_trailing_slash(http):
    r = http.get("/api/nope")
    assert (r.status_code, r.text, r.headers["content-type"]) == (404, "404 page not found", "text/plain")
    r = http.get("/api/generate")  # 0.6.5: gin without HandleMethodNotAllowed (see test_decoy_fidelity)
    assert (r.status_code, r.text) == (404, "404 page not found")
    r = http.get("/api/tags/", follow_redirects=False)
    assert r.status_code == 301 and r.headers["location"] == "/api/tags"


def test_tags_lists_seeded_models(http):
    models = http.get("/api/tags").json()["models"]
    assert {m["name"] for m in models} == {"llama3.2:1b", "qwen2.5:0.5b", "gemma3:270m"}
    llama = next(m for m in models if m["name"] == "llama3.2:1b")
    assert llama["model"] == "llama3.2:1b" and len(llama["digest"]) == 64
    assert llama["details"]["family"] == "llama" and llama["details"]["parameter_size"] == "1.2B"
    assert llama["modified_at"][:4].isdigit() and llama["size"] > 0


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        ("/api/generate", {"model": "missing"}, 404, "model 'missing' not found"),
        (
            "/api/chat",
            {"model": "missing", "messages": [{"role": "user", "content": "x"}]},
            404,
            'model "missing" not found, try pulling it first',
        ),
        ("/api/chat", {"messages": []}, 400, "model is required"),
        ("/api/show", {}, 400, "model is required"),
        ("/api/show", {"model": "missing:1"}, 404, "model 'missing:1' not found"),
        ("/api/show", {"model": "bad name!"}, 400, "invalid model name"),
        (
            "/api/embed",
            {"model": "missing", "input": "x"},
            404,
            'model "missing" not found, try pulling it first',
        ),
        ("/api/embed", {"model": "llama3.2:1b", "input": 5}, 400, "invalid input type"),
        ("/api/embeddings", {"prompt": "x"}, 400, "model is required"),
        ("/api/pull", {"model": "bad name!"}, 400, "invalid model name"),
        ("/api/push", {}, 400, "model is required"),
        ("/api/copy", {"source": "bad name!", "destination": "x"}, 400, 'source "bad name!" is invalid'),
        ("/api/copy", {"source": "missing", "destination": "x"}, 404, 'model "missing" not found'),
        (
            "/api/generate",
            {"model": "llama3.2:1b", "stream": "yes"},
            400,
            "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type bool",
        ),
        (
            "/api/create",
            {"model": "x", "files": {"../etc/passwd": "sha256:" + "0" * 64}},
            400,
            "file path must be relative",
        ),
    ],
)
def test_error_texts_and_codes(http, path, body, status, error):
    r = http.post(path, json=body)
    assert r.status_code == status
    assert r.json() == {"error": error}


def test_delete_errors(http):
    r = http.request("DELETE", "/api/delete", json={"model": "missing"})
    assert (r.status_code, r.json()) == (404, {"error": "model 'missing' not found"})
    r = http.request("DELETE", "/api/delete", json={"model": "bad name!"})
    assert (r.status_code, r.json()) == (400, {"error": 'name "bad name!" is invalid'})


def test_missing_and_malformed_bodies(http):
    r = http.post("/api/show", content=b"")
    assert (r.status_code, r.json()) == (400, {"error": "missing request body"})
    r = http.post("/api/show", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]
    r = http.post("/api/show", content=b"[1]")
    assert r.status_code == 400 and "cannot unmarshal array" in r.json()["error"]


def test_go_style_field_matching(http):
    # Keys match struct fields case-insensitively (and by Unicode folding); the last one wins.
    r = http.post("/api/show", content=b'{"MODEL": "llama3.2:1b"}')
    assert r.status_code == 200 and r.json()["details"]["family"] == "llama"
    r = http.post("/api/show", content=b'{"model": "missing", "Model": "qwen2.5:0.5b"}')
    assert r.status_code == 200 and r.json()["details"]["family"] == "qwen2"
    r = http.post(
        "/api/generate", content='{"model": "llama3.2:1b", "prompt": "x", "ſtream": false}'.encode()
    )
    assert r.headers["content-type"].startswith("application/json") and r.json()["done"] is True
    # `name` is the deprecated spelling of `model`; `model` wins when both are set.
    r = http.post("/api/show", json={"name": "gemma3:270m"})
    assert r.json()["details"]["family"] == "gemma3"
    r = http.post("/api/show", json={"name": "gemma3:270m", "model": "qwen2.5:0.5b"})
    assert r.json()["details"]["family"] == "qwen2"
    # Names are case-insensitive, like Ollama's Name.EqualFold.
    r = http.post("/api/show", json={"model": "LLAMA3.2:1B"})
    assert r.status_code == 200


def test_show_leaks_absolute_models_dir(http, decoy):
    shown = http.post("/api/show", json={"model": "llama3.2:1b"}).json()
    from_line = next(line for line in shown["modelfile"].splitlines() if line.startswith("FROM "))
    blob = from_line[5:]  # where Ollama's Linux service keeps its store, not the decoy's real directory
    assert blob.startswith("/usr/share/ollama/.ollama/models/blobs/sha256-")
    with open(decoy.models_dir / "blobs" / blob.rsplit("/", 1)[1], "rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert "<|eot_id|>" in shown["template"] and "stop" in shown["parameters"]
    assert shown["capabilities"] == ["completion", "tools"]
    assert shown["model_info"]["general.architecture"] == "llama"
    assert shown["model_info"]["llama.context_length"] == 131072
    assert "general.name" not in shown["model_info"]
    assert shown["license"].startswith("LLAMA 3.2")


def test_blob_head_and_upload(http, decoy):
    content = b"arbitrary bytes for a blob"
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    assert http.head(f"/api/blobs/{digest}").status_code == 404
    assert http.head("/api/blobs/sha256:00").status_code == 400
    r = http.post("/api/blobs/sha256:00", content=b"x")
    assert (r.status_code, r.json()) == (400, {"error": "invalid digest format"})
    wrong = "sha256:" + "1" * 64
    r = http.post(f"/api/blobs/{wrong}", content=content)
    assert r.status_code == 400
    assert r.json()["error"] == f'digest mismatch, expected "{wrong}", got "{digest}"'
    r = http.post(f"/api/blobs/{digest}", content=content)
    assert r.status_code == 200  # the mismatching upload above already stored it, as Ollama does
    other = b"fresh upload"
    other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
    assert http.post(f"/api/blobs/{other_digest}", content=other).status_code == 201
    assert http.head(f"/api/blobs/{other_digest}").status_code == 200
    stored = decoy.models_dir / "blobs" / ("sha256-" + other_digest[7:])
    assert stored.read_bytes() == other
    assert not [p for p in stored.parent.iterdir() if p.name.endswith(".partial")]


def test_old_version_blob_and_route_differences(tmp_path):
    with (
        start_decoy(tmp_path, version="0.1.33", seed_models=1) as old,
        httpx.Client(base_url=old.url) as http,
    ):
        assert http.get("/api/version").json() == {"version": "0.1.33"}
        assert http.head("/api/blobs/sha256:00").status_code == 404  # no digest validation before 0.1.34
        assert (
            http.get("/", headers={"Origin": "http://localhost.evil.example"}).status_code == 200
        )  # cors 1.4
        assert http.get("/", headers={"Origin": "app://obsidian.md"}).status_code == 403  # not allowed yet
        assert "allow" not in http.get("/api/generate").headers  # gin 1.9 sent no Allow header
        assert http.get("/api/ps").status_code == 404  # /api/ps arrived in 0.1.38
        assert http.post("/api/embed", json={}).status_code == 404  # /api/embed arrived in 0.2.6
        assert http.get("/v1/models").status_code == 404
        assert http.post("/v1/chat/completions", json={}).status_code == 400  # OpenAI compat since 0.1.24
        modelfile = 'FROM llama3.2:1b\nSYSTEM """be\nterse"""\nPARAMETER temperature 0.2\nPARAMETER stop x'
        r = http.post("/api/create", json={"name": "legacy", "modelfile": modelfile, "stream": False})
        assert (r.status_code, r.json()) == (200, {"status": "success"})  # pre-0.5.5 Modelfile form
        shown = http.post("/api/show", json={"name": "legacy"}).json()
        assert shown["system"] == "be\nterse" and "temperature" in shown["parameters"]
        r = http.post("/api/create", json={"name": "x", "path": "/etc/shadow"})
        assert r.status_code == 400 and "no such file" in r.json()["error"]  # never reads server files
    with (
        start_decoy(tmp_path, version="0.17.0", seed_models=0) as new,
        httpx.Client(base_url=new.url) as http,
    ):
        r = http.get("/api/status")  # arrived in 0.16.2
        assert r.status_code == 200 and r.json() == {"cloud": {"disabled": False, "source": "none"}}
        r = http.post("/api/me")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.json()["signin_url"].startswith("https://ollama.com/connect?name=")


def test_routes_newer_than_the_version_are_absent(http):
    assert http.get("/api/status").status_code == 404  # 0.6.5 predates /api/status and /api/me
    assert http.post("/api/me").status_code == 404


def test_cors_default_allowlist(http):
    pre = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    r = http.options("/api/tags", headers={"Origin": "http://localhost:3000", **pre})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "Content-Type" in r.headers["access-control-allow-headers"]
    r = http.options("/api/tags", headers={"Origin": "https://evil.example", **pre})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers
    r = http.get("/api/tags", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403  # gin-contrib/cors aborts disallowed origins before the handler
    r = http.get("/api/tags", headers={"Origin": "http://127.0.0.1:8080"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    r = http.get("/api/tags", headers={"Origin": "http://localhost.evil.example"})
    assert r.status_code == 403
    for allowed in ("app://obsidian.md", "vscode-webview://abc", "tauri://localhost"):
        assert http.get("/", headers={"Origin": allowed}).status_code == 200


def test_cors_any_origin_with_star(tmp_path):
    with (
        start_decoy(tmp_path, seed_models=0, extra_args=("--origins", "*")) as d,
        httpx.Client(base_url=d.url) as http,
    ):
        r = http.options(
            "/api/tags", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
        )
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    with (
        start_decoy(tmp_path, seed_models=0, env={"OLLAMA_ORIGINS": "https://app.example"}) as d,
        httpx.Client(base_url=d.url) as http,
    ):
        assert http.get("/", headers={"Origin": "https://app.example"}).status_code == 200
        assert http.get("/", headers={"Origin": "https://other.example"}).status_code == 403


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:11434", 200),
        ("127.0.0.1", 200),
        ("10.1.2.3:11434", 200),
        ("[::1]:11434", 200),
        ("printer.local", 200),
        ("svc.internal", 200),
        ("", 200),
        ("evil.example", 403),
        ("8.8.8.8:11434", 403),
        ("localhost.evil.example", 403),
    ],
)
def test_host_header_guard_on_loopback(http, host, status):
    assert http.get("/api/version", headers={"Host": host}).status_code == status


def test_request_log_records_requests_before_responses_complete(http, decoy):
    marker = f"log-marker-{time.time_ns()}"
    r = http.post("/api/show?verbose=1", json={"model": marker})
    assert r.status_code == 404
    entry = next(e for e in reversed(decoy.requests()) if marker in (e.get("body") or ""))
    assert entry["method"] == "POST" and entry["path"] == "/api/show" and entry["query"] == "verbose=1"
    assert entry["status"] == 404 and entry["client"].startswith("127.0.0.1:")
    assert ["content-type", "application/json"] in entry["headers"]
    assert json.loads(entry["body"]) == {"model": marker}
    content = b"\x00binary\xff" * 100
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    http.post(f"/api/blobs/{digest}", content=content)
    blob_entry = decoy.requests()[-1]
    assert blob_entry["path"] == f"/api/blobs/{digest}"
    assert blob_entry["body"] is None and blob_entry["body_size"] == len(content)
    assert blob_entry["body_sha256"] == digest


def test_request_log_truncates_large_bodies(http, decoy):
    big = {"model": "missing", "prompt": "x" * 100_000}
    http.post("/api/generate", json=big)
    entry = decoy.requests()[-1]
    assert entry["body_truncated"] is True and len(entry["body"]) == 64 * 1024
    assert entry["body_size"] > 100_000


def test_streaming_is_flushed_chunk_by_chunk(tmp_path):
    with (
        start_decoy(tmp_path, seed_models=1, extra_args=("--stream-delay", "0.05")) as d,
        httpx.Client(base_url=d.url, timeout=20) as http,
    ):
        arrivals = []
        with http.stream(
            "POST", "/api/generate", json={"model": "llama3.2:1b", "prompt": "stream please"}
        ) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            for line in r.iter_lines():
                arrivals.append((time.monotonic(), json.loads(line)))
        assert len(arrivals) > 5
        assert all(not obj["done"] for _, obj in arrivals[:-1])
        final = arrivals[-1][1]
        assert final["done"] is True and final["done_reason"] in ("stop", "length")
        for key in (
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
        ):
            assert final[key] > 0
        assert final["eval_count"] == len(arrivals) - 1
        spread = arrivals[-1][0] - arrivals[0][0]
        assert spread > 0.05 * (len(arrivals) - 3)  # chunks arrived over time, not in one burst


def test_generate_non_streamed_and_num_predict(http):
    r = http.post(
        "/api/generate",
        json={"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 3}},
    )
    body = r.json()
    assert r.status_code == 200 and body["done"] is True
    assert body["eval_count"] == 3 and body["done_reason"] == "length"
    assert body["context"] and body["response"].strip()
    again = http.post(
        "/api/generate",
        json={"model": "llama3.2:1b", "prompt": "hi", "stream": False, "options": {"num_predict": 3}},
    ).json()
    assert again["response"] == body["response"]  # deterministic


def test_load_and_unload_via_empty_prompt(http):
    r = http.post("/api/generate", json={"model": "gemma3:270m"})
    assert r.json()["done_reason"] == "load"
    assert "gemma3:270m" in [m["name"] for m in http.get("/api/ps").json()["models"]]
    r = http.post("/api/generate", json={"model": "gemma3:270m", "keep_alive": 0})
    assert r.json()["done_reason"] == "unload"
    assert "gemma3:270m" not in [m["name"] for m in http.get("/api/ps").json()["models"]]


def test_ipv6_listener_no_host_guard_and_capability_errors(tmp_path):
    args = ("--no-host-guard", "--stream-delay", "0")
    with (
        start_decoy(tmp_path, host="::1", seed_models=5, extra_args=args) as d,
        httpx.Client(base_url=d.url) as http,
    ):
        assert d.url.startswith("http://[::1]:") and d.host == "::1"
        assert http.get("/api/version", headers={"Host": "evil.example"}).status_code == 200  # guard off
        r = http.post("/api/generate", json={"model": "nomic-embed-text", "prompt": "x"})
        assert (r.status_code, r.json()) == (400, {"error": '"nomic-embed-text" does not support generate'})
        r = http.post(
            "/api/chat",
            json={
                "model": "gemma3:270m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        )
        assert r.status_code == 400 and r.json()["error"].endswith("does not support tools")
        r = http.post(
            "/api/pull", json={"model": "http://127.0.0.1:9/ns/m:t", "insecure": True, "stream": False}
        )
        assert (r.status_code, r.json()) == (200, {"status": "success"})  # fabricated locally, no connection
        assert (d.models_dir / "manifests" / "127.0.0.1:9" / "ns" / "m" / "t").is_file()
        r = http.post("/api/embed", json={"model": "nomic-embed-text", "input": ["a"], "dimensions": 8})
        assert len(r.json()["embeddings"][0]) == 8


def test_server_log_in_ollama_format(http, decoy):
    http.get("/api/tags?x=1", headers={"X-Forwarded-For": "203.0.113.9, 10.0.0.2"})
    http.post("/api/pull", json={"model": "bad name!"})
    http.post("/api/pull", json={"model": "tinyllama:latest", "stream": False})
    lines = (decoy.models_dir.parent / "server.log").read_text().splitlines()
    assert any('msg="downloading ' in line and " in 1 " in line for line in lines)
    assert 'msg="server config"' in lines[0] and f"OLLAMA_HOST:http://127.0.0.1:{decoy.port}" in lines[0]
    assert f"OLLAMA_MODELS:{decoy.models_dir.resolve()}" in lines[0]
    assert f'msg="Listening on 127.0.0.1:{decoy.port} (version 0.6.5)"' in lines[3]
    gin = [line for line in lines if line.startswith("[GIN] ")]
    pattern = re.compile(
        r"\[GIN\] (\d{4}/\d{2}/\d{2}) - (\d{2}:\d{2}:\d{2}) \|\s*(\d{3})\s*\|\s*(\S+)\s*\|\s*(\S*)\s*\|"
        r'\s*([A-Z]+)\s+"((?:[^"\\]|\\.)*)"'
    )
    parsed = [pattern.match(line) for line in gin]
    assert all(parsed)
    tags = next(m for m in parsed if m and m.group(7) == "/api/tags?x=1")
    assert tags.group(3) == "200" and tags.group(5) == "203.0.113.9"  # gin believes X-Forwarded-For
    pulls = [(m.group(3), m.group(6), m.group(5)) for m in parsed if m and m.group(7) == "/api/pull"]
    assert pulls[-2:] == [("400", "POST", "127.0.0.1"), ("200", "POST", "127.0.0.1")]


def test_json_is_encoded_like_go(http, decoy):
    raw = http.post("/api/show", json={"model": "llama3.2:1b"}).content
    assert b"\\u003c|eot_id|\\u003e" in raw and b"<|eot_id|>" not in raw  # json.Marshal escapes HTML
    assert b'": ' not in raw  # compact, no spaces after separators
    text = "caf\u00e9 \u2028 <tag> & more"
    http.post("/api/generate", json={"model": "missing", "prompt": text})
    assert json.loads(decoy.requests()[-1]["body"])["prompt"] == text


def test_changes_made_on_disk_behind_the_decoys_back(tmp_path):
    with start_decoy(tmp_path, seed_models=2) as d, httpx.Client(base_url=d.url) as http:
        assert len(http.get("/api/tags").json()["models"]) == 2
        manifest = d.models_dir / "manifests" / "registry.ollama.ai" / "library" / "qwen2.5" / "0.5b"
        manifest.unlink()
        r = http.request("DELETE", "/api/delete", json={"model": "qwen2.5:0.5b"})
        assert r.status_code == 404  # cached entry, file already gone: still Ollama's answer
        deadline = time.monotonic() + 5
        while len(http.get("/api/tags").json()["models"]) != 1:  # the cache notices within its TTL
            assert time.monotonic() < deadline
            time.sleep(0.2)
