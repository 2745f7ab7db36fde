"""Fixes to holes the red team found: token charging when a stream is cut short, `/api/create`
fields the gateway cannot judge, the model named in the audit record of a refusal, compressed
listings, start-up checks of Redis and the database, and read-only commands that must not touch a
database that is not the gateway's."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.gateway.app import GatewayApp
from ollama_guard.gateway.config import load_config
from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.services import Services
from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import token_accounting
from support.audit import MemoryAudit

GUARD = (sys.executable, "-m", "ollama_guard")
ALL_MODELS = "all"
LIMITED = "limited"
USER = "user"
WEIGHTS = "sha256:" + "ab" * 32


def _key(models: tuple[str, ...], role: str = "admin") -> ApiKey:
    now = datetime.now(UTC)
    return ApiKey("0123456789abcdef", "k", Role(role), models, None, None, None, now, None, False)


# --- token counting without a usage block ----------------------------------------------------------


def test_a_cut_ndjson_stream_is_charged_per_relayed_line() -> None:
    counter = TokenCounter(token_accounting("POST /api/generate"))
    for i in range(7):
        counter.feed(json.dumps({"model": "m", "response": f"w{i}", "done": False}).encode() + b"\n")
    counter.feed(b'{"model":"m","resp')  # the client hung up inside the next line
    assert counter.total(sse=False) == 8


def test_a_cut_sse_stream_is_charged_per_relayed_event() -> None:
    counter = TokenCounter(token_accounting("POST /v1/chat/completions"))
    counter.feed(b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n' * 4)
    assert counter.total(sse=True) == 4  # no [DONE]: nothing to discount
    nothing = TokenCounter(token_accounting("POST /api/generate"))
    assert nothing.total(sse=False) == 0  # nothing relayed, nothing charged


def test_a_whole_answer_without_usage_costs_at_least_one_token() -> None:
    counter = TokenCounter(token_accounting("POST /api/embeddings"))
    counter.feed(b'{"embedding":[0.1,0.2]}')
    assert counter.total(sse=False) == 1


# --- in-process gateway in front of a scripted upstream --------------------------------------------


class Auth:
    def __init__(self) -> None:
        self.keys = {LIMITED: _key(("llama3*",)), ALL_MODELS: _key(("*",)), USER: _key(("*",), "inference")}

    async def authenticate(self, presented: str) -> ApiKey | None:
        return self.keys.get(presented)

    async def close(self) -> None:
        return None


class Limiter:
    def __init__(self) -> None:
        self.charged: list[int] = []

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey) -> AsyncIterator[None]:
        yield

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        self.charged.append(n)

    async def close(self) -> None:
        return None


class Upstream:
    """A raw HTTP server answering every request with `answer`; records the request heads."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.seen: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            self.seen.append(head)
            writer.write(self.answer)
            await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


async def _call(
    upstream: Upstream, key: str, method: str, path: str, body: Any = None, **settings: Any
) -> tuple[int, dict[bytes, bytes], bytes, MemoryAudit, Limiter]:
    audit, limiter = MemoryAudit(), Limiter()
    async with upstream as url:
        config = load_config(None, {"upstream": url, **settings}, {})
        app = GatewayApp(config, Services(Auth(), limiter, audit))
        await app.upstream.start()
        raw = b"" if body is None else json.dumps(body).encode()
        headers = [(b"authorization", f"Bearer {key}".encode())]
        if raw:
            headers += [(b"content-length", str(len(raw)).encode()), (b"content-type", b"application/json")]
        scope = {
            "type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 1234),
        }
        sent: list[dict[str, Any]] = []
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        try:
            await app(scope, receive, send)
        finally:
            await app.upstream.close()
    start = sent[0]
    body_out = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), body_out, audit, limiter


def _answer(body: bytes, *headers: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json; charset=utf-8"]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


LISTING = json.dumps(
    {
        "models": [
            {"name": "llama3:latest", "model": "llama3:latest"},
            {"name": "secret:latest", "model": "secret:latest"},
        ]
    }
).encode()


@pytest.mark.parametrize("key", [LIMITED, ALL_MODELS])
async def test_a_gzipped_listing_is_sent_decoded_and_filtered(key: str) -> None:
    upstream = Upstream(_answer(gzip.compress(LISTING), "Content-Encoding: gzip"))
    status, headers, body, _audit, _ = await _call(upstream, key, "GET", "/api/tags")
    assert status == 200
    assert b"content-encoding" not in headers  # the client gets plain JSON, and is told so
    assert int(headers[b"content-length"]) == len(body)
    names = [m["name"] for m in json.loads(body)["models"]]
    assert names == (["llama3:latest"] if key == LIMITED else ["llama3:latest", "secret:latest"])


async def test_a_listing_in_an_unknown_encoding_becomes_an_empty_one() -> None:
    upstream = Upstream(_answer(b"\x8b\x00garbage", "Content-Encoding: br"))
    status, headers, body, _audit, _ = await _call(upstream, ALL_MODELS, "GET", "/api/tags")
    assert status == 200 and b"content-encoding" not in headers
    assert json.loads(body) == {"models": []}


async def test_a_stream_that_breaks_off_is_charged_for_what_was_relayed() -> None:
    lines = b"".join(json.dumps({"response": f"w{i}", "done": False}).encode() + b"\n" for i in range(6))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    upstream = Upstream(head + b"%x\r\n%s\r\n" % (len(lines), lines))  # then the connection drops
    body = {"model": "llama3", "prompt": "x"}
    status, _headers, relayed, audit, limiter = await _call(upstream, LIMITED, "POST", "/api/generate", body)
    assert status == 200 and relayed.count(b"\n") == 6
    assert limiter.charged == [6]
    assert audit.records[0].tokens == 6


async def test_an_error_answer_costs_no_tokens() -> None:
    error = b'{"error":"model \\"llama3\\" not found"}'
    upstream = Upstream(_answer(error).replace(b"200 OK", b"404 Not Found"))
    body = {"model": "llama3", "prompt": "x"}
    status, _h, _b, _audit, limiter = await _call(upstream, LIMITED, "POST", "/api/generate", body)
    assert status == 404 and limiter.charged == []


@pytest.mark.parametrize(
    "key,body,status,reason",
    [
        (ALL_MODELS, {"model": "llama3:new", "modelfile": "FROM secret\n"}, 400, "legacy-create-field"),
        (LIMITED, {"model": "llama3:new", "modelfile": "FROM secret\n"}, 400, "legacy-create-field"),
        (ALL_MODELS, {"name": "llama3:new", "path": "/etc/passwd"}, 400, "legacy-create-field"),
        (LIMITED, {"model": "llama3:new", "Path": "/srv/Modelfile"}, 400, "legacy-create-field"),
        (LIMITED, {"model": "llama3:new", "files": {"model.gguf": WEIGHTS}}, 403, "create-blobs-not-allowed"),
        (LIMITED, {"model": "llama3:new", "from": "llama3", "adapters": {"a.gguf": WEIGHTS}}, 403,
         "create-blobs-not-allowed"),
    ],
)
async def test_create_fields_the_gateway_cannot_judge_are_refused(
    key: str, body: dict[str, Any], status: int, reason: str
) -> None:
    upstream = Upstream(_answer(b'{"status":"success"}'))
    request = {**body, "stream": False}
    got, _headers, answer, audit, _ = await _call(upstream, key, "POST", "/api/create", request)
    assert got == status and "error" in json.loads(answer)
    assert upstream.seen == []  # never forwarded
    (record,) = audit.records
    assert record.decision == "deny" and record.reason == reason


async def test_an_unrestricted_admin_may_still_create_from_blobs() -> None:
    upstream = Upstream(_answer(b'{"status":"success"}'))
    body = {"model": "anything:new", "files": {"model.gguf": WEIGHTS}, "stream": False}
    status, _headers, answer, audit, _ = await _call(upstream, ALL_MODELS, "POST", "/api/create", body)
    assert status == 200 and json.loads(answer) == {"status": "success"}
    assert len(upstream.seen) == 1 and audit.records[0].decision == "allow"


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("POST", "/api/chat", {"model": "Secret:7B", "messages": []}),
        ("POST", "/api/copy", {"source": "llama3", "destination": "secret:7b"}),
        ("GET", "/v1/models/secret:7b", None),
    ],
)
async def test_a_refused_model_is_named_in_the_audit_record(method: str, path: str, body: Any) -> None:
    upstream = Upstream(_answer(b"{}"))
    status, _h, _b, audit, _ = await _call(upstream, LIMITED, method, path, body)
    assert status == 403 and upstream.seen == []
    (record,) = audit.records
    assert record.reason == "model-not-allowed"
    if path == "/api/copy":  # the first name field is recorded (the destination is the refused one)
        assert record.model == "registry.ollama.ai/library/llama3:latest"
    else:
        assert record.model == "registry.ollama.ai/library/secret:7b"


# --- option caps (off by default) ------------------------------------------------------------------

CAPS = {"max_num_ctx": 8192, "max_keep_alive": 600}
DONE = b'{"model":"llama3","response":"hi","done":true,"prompt_eval_count":1,"eval_count":1}'


@pytest.mark.parametrize(
    "extra,status",
    [
        ({"options": {"num_ctx": 8192}, "keep_alive": "10m"}, 200),
        ({"options": {"num_ctx": 131072}}, 403),
        ({"keep_alive": -1}, 403),  # forever
        ({"keep_alive": "-1s"}, 403),
        ({"keep_alive": "24h"}, 403),
        ({"keep_alive": 601}, 403),
        ({"keep_alive": 0}, 200),  # unload at once
        ({"keep_alive": "5 minutes"}, 400),  # Ollama could not read it either
        ({"options": {"num_ctx": "131072"}}, 400),
    ],
)
async def test_option_caps_for_keys_below_admin(extra: dict[str, Any], status: int) -> None:
    body = {"model": "llama3", "prompt": "x", "stream": False, **extra}
    upstream = Upstream(_answer(DONE))
    got, _h, _b, audit, _ = await _call(upstream, USER, "POST", "/api/generate", body, **CAPS)
    assert got == status
    assert len(upstream.seen) == (1 if status == 200 else 0)
    if status == 403:
        assert audit.records[0].reason == "option-limit"


async def test_option_caps_are_off_by_default_and_spare_admin_keys() -> None:
    body = {"model": "llama3", "messages": [], "stream": False}
    body |= {"options": {"num_ctx": 131072}, "keep_alive": -1}
    for key, settings in ((USER, {}), (ALL_MODELS, CAPS)):
        upstream = Upstream(_answer(DONE))
        got, _h, _b, _audit, _ = await _call(upstream, key, "POST", "/api/chat", body, **settings)
        assert got == 200 and len(upstream.seen) == 1


# --- start-up checks and read-only commands (subprocesses) ----------------------------------------


def _guard(*args: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"OLLAMA_GUARD_HOME": str(home), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    return subprocess.run([*GUARD, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _one_line_error(done: subprocess.CompletedProcess[str], wanted: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and wanted in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize(
    "flags,wanted",
    [
        (("--redis", "garbage"), "invalid Redis URL"),
        (("--redis", "redis://127.0.0.1:1/0"), "cannot reach Redis"),
        (("--db", "postgresql://guard:pw@127.0.0.1:1/guard"), "cannot reach database"),
    ],
)
def test_serve_checks_redis_and_the_database_before_starting(
    tmp_path: Path, flags: tuple[str, ...], wanted: str
) -> None:
    args = ["serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9"]
    if "--db" not in flags:
        args += ["--db", f"sqlite:///{tmp_path / 'guard.db'}"]
    done = _guard(*args, *flags, home=tmp_path)
    _one_line_error(done, wanted)
    assert "pw" not in done.stderr  # the password is never shown


@pytest.fixture
def foreign_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "other-app" / "inventory.sqlite"
    path.parent.mkdir()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO parts (name) VALUES ('bolt')")
        conn.commit()
    yield path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "command",
    [("keys", "list"), ("keys", "list", "--format", "json"), ("keys", "revoke", "x"), ("keys", "rotate", "x"),
     ("logs", "verify"), ("logs", "tail")],
)
def test_read_only_commands_leave_a_foreign_database_untouched(
    tmp_path: Path, foreign_db: Path, command: tuple[str, ...]
) -> None:
    before = _digest(foreign_db)
    siblings = sorted(p.name for p in foreign_db.parent.iterdir())
    done = _guard(*command, "--db", f"sqlite:///{foreign_db}", home=tmp_path / "home")
    _one_line_error(done, "is not an ollama-guard gateway database")
    assert _digest(foreign_db) == before  # no WAL switch, no schema written into it
    assert sorted(p.name for p in foreign_db.parent.iterdir()) == siblings  # no secret.key, no -wal
    with contextlib.closing(sqlite3.connect(foreign_db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"parts"}


def test_a_gateway_database_is_still_switched_to_wal(tmp_path: Path) -> None:
    db = tmp_path / "guard.db"
    done = _guard("keys", "create", "ci", "--role", "read", "--db", f"sqlite:///{db}", home=tmp_path)
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    listed = _guard("keys", "list", "--format", "json", "--db", f"sqlite:///{db}", home=tmp_path)
    assert listed.returncode == 0 and [k["name"] for k in json.loads(listed.stdout)["keys"]] == ["ci"]


def test_option_cap_settings_are_validated_and_may_come_from_the_environment(tmp_path: Path) -> None:
    from ollama_guard.errors import GuardError

    config = load_config(None, {}, {"OLLAMA_GUARD_MAX_NUM_CTX": "4096", "OLLAMA_GUARD_MAX_KEEP_ALIVE": "300"})
    assert config.max_num_ctx == 4096 and config.max_keep_alive == 300
    assert load_config(None, {}, {"OLLAMA_GUARD_MAX_NUM_CTX": ""}).max_num_ctx is None
    path = tmp_path / "g.toml"
    path.write_text("[gateway]\nmax_num_ctx = -1\n")
    with pytest.raises(GuardError, match="max_num_ctx"):
        load_config(path, {}, {})
