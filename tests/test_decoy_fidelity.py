"""What one request tells a scanner about the decoy, per emulated Ollama version, on the wire.

Each item of "How one request unmasks it" (issue 12) is asserted as raw bytes for 0.1.33, 0.5.7, 0.6.5
and the newest version in the endpoint catalog; the transport itself is compared with Go's net/http in
test_decoy_transport.py.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.servers import DecoyProcess, start_decoy
from support.wire import exchange, mask_date

VERSIONS = ["0.1.33", "0.5.7", "0.6.5", "0.33.0"]


@pytest.fixture(scope="module", params=VERSIONS)
def decoy(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(
        tmp_path_factory.mktemp("v"), version=request.param, seed_models=1, extra_args=("--stream-delay", "0")
    ) as running:
        running.version = request.param  # type: ignore[attr-defined]
        yield running


def _at_least(decoy: DecoyProcess, version: str) -> bool:
    from ollama_guard.ollama.versions import parse_version

    return parse_version(decoy.version) >= parse_version(version)  # type: ignore[attr-defined]


def send(decoy: DecoyProcess, raw: bytes) -> bytes:
    return mask_date(exchange((decoy.host, decoy.port), raw))


def get(decoy: DecoyProcess, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
    if body is not None:
        head += b"Content-Length: %d\r\n" % len(body)
    return send(decoy, head + b"\r\n" + (body or b""))


def split(answer: bytes) -> tuple[bytes, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def test_header_names_order_and_date_are_go_s(decoy: DecoyProcess) -> None:
    answer = get(decoy, "/api/version")
    body = json.dumps({"version": decoy.version}, separators=(",", ":")).encode()  # type: ignore[attr-defined]
    assert answer == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Date: <masked>\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    date = exchange((decoy.host, decoy.port), b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert re.search(rb"\r\nDate: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT\r\n", date)


def test_http_1_0_is_answered_as_1_0(decoy: DecoyProcess) -> None:
    assert send(decoy, b"GET / HTTP/1.0\r\n\r\n") == (
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nDate: <masked>\r\n"
        b"Content-Length: 17\r\n\r\nOllama is running"
    )


def test_malformed_requests_get_go_s_answers(decoy: DecoyProcess) -> None:
    close = b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
    assert send(decoy, b"GET / HTTP/1.1\r\n\r\n") == (
        b"HTTP/1.1 400 Bad Request: missing required Host header"
        + close
        + b"400 Bad Request: missing required Host header"
    )
    assert send(decoy, b"garbage\r\n\r\n") == b"HTTP/1.1 400 Bad Request" + close + b"400 Bad Request"
    assert send(decoy, b"POST /api/show HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n") == (
        b"HTTP/1.1 501 Not Implemented" + close + b"Unsupported transfer encoding"
    )
    big = (
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX: " + b"a" * ((1 << 20) + 8192) + b"\r\n\r\n"
    )  # Go: 1 MB + 4 KiB
    assert send(decoy, big).startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_wrong_method_is_gin_s_404_before_0_7_0(decoy: DecoyProcess) -> None:
    head, body = split(get(decoy, "/api/generate"))
    if _at_least(decoy, "0.7.0"):
        assert head.startswith(
            b"HTTP/1.1 405 Method Not Allowed\r\nAllow: POST\r\nContent-Type: text/plain\r\n"
        )
        assert body == b"405 method not allowed"
    else:
        assert head.startswith(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n")
        assert b"Allow:" not in head and body == b"404 page not found"


def test_unclean_paths_and_trailing_slashes_redirect_keeping_the_query(decoy: DecoyProcess) -> None:
    head, body = split(get(decoy, "/api/tags/?a=1"))
    assert head.startswith(
        b"HTTP/1.1 301 Moved Permanently\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Location: /api/tags?a=1\r\n"
    )
    assert body == b'<a href="/api/tags?a=1">Moved Permanently</a>.\n\n'
    head, body = split(get(decoy, "/api/show/", "POST", b"{}"))
    assert head.startswith(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /api/show\r\n") and body == b""
    for unclean in ("//api/tags", "/api//tags?x=y", "/api/./tags"):
        head, body = split(get(decoy, unclean))
        if _at_least(decoy, "0.1.46"):  # Ollama serves through http.DefaultServeMux from 0.1.46
            clean = "/api/tags" + ("?x=y" if "?" in unclean else "")
            assert head.startswith(b"HTTP/1.1 301 Moved Permanently\r\n"), unclean
            assert f"\r\nLocation: {clean}\r\n".encode() in head
        else:
            assert head.startswith(b"HTTP/1.1 404 Not Found\r\n") and body == b"404 page not found"


def test_json_errors_are_go_s_and_trailing_data_is_ignored(decoy: DecoyProcess) -> None:
    head, body = split(get(decoy, "/api/show", "POST", b"{bad}"))
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert body == b'{"error":"invalid character \'b\' looking for beginning of object key string"}'
    _, body = split(get(decoy, "/api/show", "POST", b'{"model":'))
    assert body == b'{"error":"unexpected EOF"}'
    head, _ = split(get(decoy, "/api/show", "POST", b'{"model":"nope:1"} and then some'))
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_show_and_tags_fields_per_version(decoy: DecoyProcess) -> None:
    _, body = split(get(decoy, "/api/tags"))
    tags = json.loads(body)["models"]
    name = tags[0]["name"]
    head, raw = split(get(decoy, "/api/show", "POST", json.dumps({"model": name}).encode()))
    if b"Transfer-Encoding: chunked" in head:  # past 2048 bytes Go's net/http chunks gin's single write
        raw = _unchunk(raw)
    show = json.loads(raw)
    assert ("model_info" in show) == _at_least(decoy, "0.1.45")
    assert ("modified_at" in show) == _at_least(decoy, "0.1.45")
    assert ("capabilities" in show) == _at_least(decoy, "0.6.4")
    assert ("capabilities" in tags[0]) == _at_least(decoy, "0.30.0")
    assert ("context_length" in tags[0]["details"]) == _at_least(decoy, "0.30.0")
    if "model_info" in show:
        keys = list(show["model_info"])
        assert keys == sorted(keys)  # a Go map: sorted keys
        section = raw[raw.index(b'"model_info"') :]
        assert not re.search(rb"\d\.0[,}\]]|\de-0\d", section[: section.index(b"}") + 1])  # Go floats


def test_streams_are_chunked_one_chunk_per_flush(decoy: DecoyProcess) -> None:
    _, body = split(get(decoy, "/api/tags"))
    name = json.loads(body)["models"][0]["name"]
    head, raw = split(
        get(decoy, "/api/generate", "POST", json.dumps({"model": name, "prompt": "hi"}).encode())
    )
    assert head.startswith(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nDate: <masked>\r\n"
        b"Transfer-Encoding: chunked"
    )
    chunks = _chunks(raw)
    assert len(chunks) > 2 and all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in chunks)


def _chunks(raw: bytes) -> list[bytes]:
    out = []
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(raw[:size])
        raw = raw[size + 2 :]
    return out


def _unchunk(raw: bytes) -> bytes:
    return b"".join(_chunks(raw))


def test_idle_keep_alive_survives_five_seconds(tmp_path: Path) -> None:
    """uvicorn closed idle connections after 5 s; Go (as Ollama configures it) keeps them."""
    with start_decoy(tmp_path, seed_models=0) as running:
        with socket.create_connection((running.host, running.port), timeout=10) as sock:
            request = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n"
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
            time.sleep(5.5)
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")


def test_paths_are_where_ollama_keeps_them_and_nothing_names_the_product(decoy: DecoyProcess) -> None:
    _, body = split(get(decoy, "/api/tags"))
    name = json.loads(body)["models"][0]["name"]
    answers = [
        get(decoy, "/api/show", "POST", json.dumps({"model": name}).encode()),
        get(decoy, "/api/push", "POST", b'{"model":"nobody/none:1","stream":false}'),
        get(
            decoy,
            "/api/create",
            "POST",
            json.dumps({"model": "x", "files": {"a.gguf": "sha256:" + "0" * 64}, "stream": False}).encode(),
        ),
        get(decoy, "/"),
        get(decoy, "/api/ps"),
        get(decoy, "/v1/models"),
        get(decoy, "/nope"),
        send(decoy, b"garbage\r\n\r\n"),
    ]
    everything = b"".join(answers)
    assert b"ollama-guard" not in everything.lower() and b"ollama_guard" not in everything.lower()
    assert str(decoy.models_dir).encode() not in everything and b"/tmp/" not in everything
    if _at_least(decoy, "0.1.45") or b"FROM " in answers[0]:
        assert b"FROM /usr/share/ollama/.ollama/models/blobs/sha256-" in answers[0]


def test_values_ollama_refuses_are_refused_with_its_words(decoy: DecoyProcess) -> None:
    _, body = split(get(decoy, "/api/tags"))
    name = json.loads(body)["models"][0]["name"]

    def generate(extra: dict) -> tuple[bytes, bytes]:
        payload = {"model": name, "prompt": "hi", "stream": False, **extra}
        return split(get(decoy, "/api/generate", "POST", json.dumps(payload).encode()))

    head, body = generate({"images": ["not base64!"]})
    assert head.startswith(b"HTTP/1.1 400 ") and body == b'{"error":"illegal base64 data at input byte 3"}'
    head, body = generate({"context": [1, 2.5]})
    assert body == (
        b'{"error":"json: cannot unmarshal number 2.5 into Go struct field '
        b'GenerateRequest.context of type int"}'
    )
    head, body = generate({"context": [18446744073709551616]})
    assert b"cannot unmarshal number 18446744073709551616 into" in body
    head, body = generate({"options": {"temperature": "hot"}})
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert body == b'{"error":"option \\"temperature\\" must be of type float32"}'
    head, body = generate({"options": {"temperature": 0.2, "stop": ["a"], "num_ctx": 2048}})
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), body


def test_generate_names_a_missing_model_in_each_version_s_words(decoy: DecoyProcess) -> None:
    head, body = split(get(decoy, "/api/generate", "POST", b"{}"))
    missing_head, missing = split(get(decoy, "/api/generate", "POST", b'{"model":"nope"}'))
    if _at_least(decoy, "0.3.11"):
        assert head.startswith(b"HTTP/1.1 404 ") and body == b'{"error":"model \'\' not found"}'
        assert missing == b'{"error":"model \'nope\' not found"}'
    else:  # 0.1.33
        assert head.startswith(b"HTTP/1.1 400 ") and body == b'{"error":"model is required"}'
        assert missing_head.startswith(b"HTTP/1.1 404 ")
        assert missing == b'{"error":"model \'nope\' not found, try pulling it first"}'


def test_openai_routes_answer_body_errors_in_openai_shape(decoy: DecoyProcess) -> None:
    if not _at_least(decoy, "0.1.24"):
        return  # no /v1/chat/completions yet
    head, body = split(get(decoy, "/v1/chat/completions", "POST", b'{"model":'))
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert json.loads(body) == {
        "error": {"message": "unexpected EOF", "type": "invalid_request_error", "param": None, "code": None}
    }
    cut = b'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 50\r\n\r\n{"model":"x"'
    _, body = split(send(decoy, cut))
    assert json.loads(body)["error"]["message"] == "unexpected EOF"


def test_cors_preflight_headers_are_the_version_s(decoy: DecoyProcess) -> None:
    from ollama_guard.decoy.cors import allowed_headers

    answer = send(
        decoy,
        b"OPTIONS /api/tags HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost:3000\r\n"
        b"Access-Control-Request-Method: GET\r\n\r\n",
    )
    expected_headers = {
        "0.1.33": "Origin,Content-Length,Content-Type",  # cors.DefaultConfig() before 0.1.35
        "0.5.7": "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,X-Stainless-Lang,"
        "X-Stainless-Package-Version,X-Stainless-Os,X-Stainless-Arch,X-Stainless-Retry-Count,"
        "X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Async,X-Stainless-Helper-Method,"
        "X-Stainless-Poll-Helper,X-Stainless-Custom-Poll-Interval",
    }.get(decoy.version, ",".join(allowed_headers(decoy.version)))  # type: ignore[attr-defined]
    assert answer == (
        b"HTTP/1.1 204 No Content\r\n"
        b"Access-Control-Allow-Headers: " + expected_headers.encode() + b"\r\n"
        b"Access-Control-Allow-Methods: GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS\r\n"
        b"Access-Control-Allow-Origin: http://localhost:3000\r\n"
        b"Access-Control-Max-Age: 43200\r\n"
        b"Vary: Origin\r\nVary: Access-Control-Request-Method\r\nVary: Access-Control-Request-Headers\r\n"
        b"Date: <masked>\r\n\r\n"
    )
    if decoy.version == "0.6.5":  # type: ignore[attr-defined]
        assert b"Openai-Beta" not in answer and b"X-Stainless-Timeout" in answer


def test_create_before_0_5_5_wants_a_modelfile_in_its_words(decoy: DecoyProcess) -> None:
    if _at_least(decoy, "0.5.5"):
        return  # JSON fields since 0.5.5
    _, body = split(get(decoy, "/api/create", "POST", b'{"model":"x"}'))
    assert body == b'{"error":"path or modelfile are required"}'
    _, body = split(get(decoy, "/api/create", "POST", b'{"model":"x","path":"/etc/passwd"}'))
    assert body == b'{"error":"error reading modelfile: open /etc/passwd: no such file or directory"}'
