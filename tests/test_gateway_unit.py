"""Gateway pieces in-process: configuration layering, model patterns, token counting, listings, and
fail-closed behaviour when the key store or the limiter cannot decide."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.errors import GuardError
from ollama_guard.gateway.app import GatewayApp
from ollama_guard.gateway.config import load_config
from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.limits import Limited, StoreUnavailable
from ollama_guard.gateway.listing import filter_listing
from ollama_guard.gateway.patterns import compile_model_patterns, key_model_matcher
from ollama_guard.gateway.routes import find_route
from ollama_guard.gateway.services import Services
from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import token_accounting
from ollama_guard.ollama.names import canonical_model_name
from support.audit import MemoryAudit

# --- configuration ----------------------------------------------------------------------------------


def test_config_layers_file_then_flags_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        '[gateway]\nlisten = "127.0.0.1:9000"\nupstream = "http://127.0.0.1:1"\nmax_body_bytes = 10\n'
        'pull_registries = ["Registry.Ollama.AI", "hf.co"]\nsecret_file = "s.key"\n'
    )
    config = load_config(path, {"upstream": "http://127.0.0.1:2", "listen": None}, {})
    assert config.listen == "127.0.0.1:9000" and config.upstream == "http://127.0.0.1:2"
    assert config.pull_registries == ("registry.ollama.ai", "hf.co")
    assert config.secret_file == (tmp_path / "s.key").resolve()
    env = {
        "OLLAMA_GUARD_UPSTREAM": "http://127.0.0.1:3",
        "OLLAMA_GUARD_ALLOW_CIDRS": "10.0.0.0/8, ::1/128",
        "OLLAMA_GUARD_ALLOW_CLOUD": "true",
        "OLLAMA_GUARD_MAX_BODY_BYTES": "99",
    }
    config = load_config(path, {"upstream": "http://127.0.0.1:2"}, env)
    assert config.upstream == "http://127.0.0.1:3" and config.allow_cidrs == ("10.0.0.0/8", "::1/128")
    assert config.allow_cloud is True and config.max_body_bytes == 99
    assert load_config(None, {}, {}).push_registries == ()


@pytest.mark.parametrize(
    "toml,message",
    [
        ('[gateway]\nlisten = "nowhere"\n', "listen"),
        ('[gateway]\nupstream = "ftp://x"\n', "upstream"),
        ('[gateway]\nupstream = "http://127.0.0.1:1/api"\n', "upstream"),
        ('[gateway]\nallow_cidrs = ["10.0.0.0/33"]\n', "allow_cidrs"),
        ('[gateway]\ncors_origins = ["*"]\n', "cors_origins"),
        ("[gateway]\nlisten_port = 5\n", "unknown"),
        ('[gateway]\ntls_cert = "a.pem"\n', "tls"),
        ("[gateway\n", "TOML"),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(toml)
    with pytest.raises(GuardError) as err:
        load_config(path, {}, {})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(GuardError, match="does not exist"):
        load_config(tmp_path / "none.toml", {}, {})


# --- model patterns and routes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "patterns,name,allowed",
    [
        (("llama3",), "LLAMA3:latest", True),
        (("llama3",), "registry.ollama.ai/library/llama3", True),
        (("llama3",), "llama3:70b", False),
        (("llama3:*",), "llama3:70b", True),
        (("llama3*",), "llama3.2:1b", True),
        (("llama3*",), "evil/llama3:1b", False),
        (("library/*",), "mistral:7b", True),
        (("library/*",), "hf.co/org/mistral", False),
        (("hf.co/*/*",), "hf.co/Org/Model:Q4", True),
        (("*",), "anything/at/all:x", True),
        ((), "anything", False),  # an empty grant allows nothing, never "all"
        (("q[!a]n:7b",), "qwn:7b", True),
        (("q[!a]n:7b",), "qan:7b", False),
    ],
)
def test_model_patterns(patterns: tuple[str, ...], name: str, allowed: bool) -> None:
    assert key_model_matcher(patterns)(canonical_model_name(name)) is allowed


def test_unusable_patterns_allow_nothing() -> None:
    assert compile_model_patterns(("a/b/c/d/e",))(canonical_model_name("a")) is False


@pytest.mark.parametrize("path", ["/api/tags/", "//api/tags", "/api/%74ags", "/API/tags", "/api/./tags"])
def test_route_lookup_is_exact(path: str) -> None:
    assert find_route("GET", "/api/tags") is not None
    assert find_route("GET", path) is None


# --- token counting and listings --------------------------------------------------------------------


def test_token_counter_reads_the_final_ndjson_object_across_chunks() -> None:
    counter = TokenCounter(token_accounting("POST /api/generate"))
    stream = b"".join(
        json.dumps({"response": f'tok {i} \\"eval_count\\":999', "done": False}).encode() + b"\n"
        for i in range(500)
    )
    final = json.dumps({"done": True, "context": list(range(3000)), "prompt_eval_count": 7, "eval_count": 11})
    data = stream + final.encode() + b"\n"
    for i in range(0, len(data), 37):
        counter.feed(data[i : i + 37])
    assert counter.total(sse=False) == 18


def test_token_counter_reads_openai_usage_or_counts_events() -> None:
    counter = TokenCounter(token_accounting("POST /v1/chat/completions"))
    counter.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 5)
    counter.feed(
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n'
    )
    counter.feed(b"data: [DONE]\n\n")
    assert counter.total(sse=True) == 8
    plain = TokenCounter(token_accounting("POST /v1/chat/completions"))
    plain.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 6 + b"data: [DONE]\n\n")
    assert plain.total(sse=True) == 5


def test_listing_filter_hides_disallowed_and_cloud_models() -> None:
    body = json.dumps(
        {
            "models": [
                {"name": "llama3:latest", "model": "llama3:latest"},
                {"name": "secret:latest", "model": "secret:latest"},
                {"name": "llama3:cloud", "model": "llama3:cloud"},
                {"name": "weird name", "model": "x"},
            ]
        }
    ).encode()
    kept = json.loads(filter_listing("tags", body, key_model_matcher(("llama3:*",)), allow_cloud=False))
    assert [m["name"] for m in kept["models"]] == ["llama3:latest"]
    assert json.loads(filter_listing("tags", b"not json", key_model_matcher(()), False)) == {"models": []}
    v1 = json.dumps({"object": "list", "data": [{"id": "secret"}, {"id": "llama3"}]}).encode()
    assert json.loads(filter_listing("v1models", v1, key_model_matcher(("llama3",)), False))["data"] == [
        {"id": "llama3"}
    ]


# --- fail closed ------------------------------------------------------------------------------------

KEY = ApiKey("0123456789abcdef", "k", Role("admin"), ("*",), None, None, None, None, None, False)


class Auth:
    def __init__(self, result: Any) -> None:
        self.result = result

    async def authenticate(self, presented: str) -> ApiKey | None:
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    async def close(self) -> None:
        return None


class Limiter:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey) -> AsyncIterator[None]:
        if self.error is not None:
            raise self.error
        yield

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        return None

    async def close(self) -> None:
        return None


async def call(app: GatewayApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"authorization", b"Bearer og_0123456789abcdef_x"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1234),
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    "auth,limiter,status,reason",
    [
        (StoreUnavailable("db gone"), None, 503, "key-store-unavailable"),
        (RuntimeError("bug"), None, 503, "key-store-unavailable"),
        (KEY, StoreUnavailable("redis gone"), 503, "limit-store-unavailable"),
        (KEY, RuntimeError("bug"), 503, "limit-store-unavailable"),
        (KEY, Limited("more than 1 requests per minute", 12.2), 429, "rate-limited"),
        (None, None, 401, "bad-key"),
    ],
)
async def test_failures_of_the_state_layer_fail_closed(
    auth: Any, limiter: Any, status: int, reason: str
) -> None:
    config = load_config(None, {"upstream": "http://127.0.0.1:9"}, {})
    audit = MemoryAudit()
    app = GatewayApp(config, Services(Auth(auth), Limiter(limiter), audit))
    await app.upstream.start()
    try:
        got, headers, body = await call(app, "POST", "/api/show", b'{"model":"x"}')
    finally:
        await app.upstream.close()
    assert got == status and "error" in json.loads(body)
    if status == 429:
        assert headers[b"retry-after"] == b"13"
    (record,) = audit.records
    assert record.decision == "deny" and record.reason == reason and record.status == status


# --- the upstream client ----------------------------------------------------------------------------


async def _raw_server(answers: list[bytes], *, close_after: bool) -> tuple[asyncio.Server, str, list[bytes]]:
    """A server answering each request with the next canned bytes; records what it received."""
    received: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            received.append(head + (await reader.readexactly(length) if length else b""))
            writer.write(answers.pop(0))
            await writer.drain()
            if close_after:
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", received


async def test_upstream_client_reads_close_delimited_chunked_and_head_answers() -> None:
    from ollama_guard.gateway.upstream import Upstream

    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
    ]
    server, url, received = await _raw_server(answers, close_after=True)
    upstream = Upstream(load_config(None, {"upstream": url}, {}))
    await upstream.start()
    try:
        first = await upstream.open("POST", "/api/show", [(b"X-Request-ID", b"1")], b'{"model":"x"}')
        assert first.status == 200 and await first.read() == b"until the end"
        first.close()
        second = await upstream.open("GET", "/api/tags", [], None)
        assert [c async for c in second.iter_chunks()] == [b"hello", b" world"]
        second.close()
        third = await upstream.open("HEAD", "/api/tags", [], None)
        assert third.status == 200 and third.content_length == 1234 and await third.read() == b""
        third.close()
    finally:
        await upstream.close()
        server.close()
    assert received[0].startswith(b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Length: 13\r\n" in received[0] and received[0].endswith(b'{"model":"x"}')


async def test_upstream_client_reuses_connections_and_survives_a_closed_idle_one() -> None:
    from ollama_guard.gateway.upstream import Upstream

    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server, url, received = await _raw_server([ok, ok, ok, ok], close_after=False)
    upstream = Upstream(load_config(None, {"upstream": url}, {}))
    await upstream.start()
    try:
        for _ in range(2):
            resp = await upstream.open("GET", "/api/version", [], None)
            assert await resp.read() == b"ok"
            resp.close()
        assert len(upstream._idle) == 1  # one connection, kept alive
        # the upstream drops its idle connection (keep-alive timeout): the next request still works
        upstream._idle[0].transport.abort()
        await asyncio.sleep(0.05)
        resp = await upstream.open("GET", "/api/version", [], None)
        assert await resp.read() == b"ok"
        resp.close()
    finally:
        await upstream.close()
        server.close()
    assert len(received) == 3
