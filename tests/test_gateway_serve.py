"""`ollama-guard serve` end to end: the official `ollama` and `openai` clients through the gateway to the
decoy, streaming, listings, limits, revocation, metrics, audit, upstream failures."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from support.gateway import Gateway, KeySpec, audit_rows, create_keys, revoke_key, start_gateway
from support.servers import DecoyProcess, start_decoy

STREAM_DELAY = 0.05


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(
        tmp_path_factory.mktemp("decoy"), seed_models=2, extra_args=("--stream-delay", str(STREAM_DELAY))
    ) as d:
        yield d


@pytest.fixture(scope="module")
def gw(decoy: DecoyProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("gw")
    db = f"sqlite:///{work / 'guard.db'}"
    keys = create_keys(
        db,
        [
            KeySpec("admin", "admin"),
            KeySpec("app", "inference", models=["llama3.2:*"]),
            KeySpec("reader", "read"),
            KeySpec("slow-lane", "inference", rpm=2),
            KeySpec("one-at-a-time", "inference", concurrency=1),
            KeySpec("budget", "inference", tokens_per_day=1),
            KeySpec("doomed", "inference"),
        ],
    )
    with start_gateway(work, decoy.url, db_url=db) as g:
        g.keys = keys
        yield g


def client(gw: Gateway, key: str) -> ollama.Client:
    return ollama.Client(host=gw.url, headers=gw.auth(key), timeout=30)


def get(gw: Gateway, path: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(gw.url + path, headers=gw.auth(key) if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_ollama_client_lists_and_shows_only_allowed_models(gw: Gateway) -> None:
    names = [m.model for m in client(gw, "app").list().models]
    assert names == ["llama3.2:1b"]
    assert {m.model for m in client(gw, "admin").list().models} == {"llama3.2:1b", "qwen2.5:0.5b"}
    assert client(gw, "app").show("llama3.2:1b").details.family == "llama"
    with pytest.raises(ollama.ResponseError) as err:
        client(gw, "app").show("qwen2.5:0.5b")
    assert err.value.status_code == 403


def test_ollama_client_streams_generate_chunk_by_chunk(gw: Gateway) -> None:
    started = time.monotonic()
    arrivals: list[float] = []
    parts: list[str] = []
    final = None
    for part in client(gw, "app").generate(model="llama3.2:1b", prompt="Say hello", stream=True):
        arrivals.append(time.monotonic() - started)
        parts.append(part.response)
        final = part
    assert final is not None and final.done
    assert len(arrivals) >= 4 and "".join(parts)
    # the first chunk came long before the last one: nothing was buffered
    assert arrivals[-1] - arrivals[0] >= STREAM_DELAY * (len(arrivals) - 2) * 0.8


def test_ollama_client_chat_and_embed(gw: Gateway) -> None:
    reply = client(gw, "app").chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.role == "assistant" and reply.message.content
    emb = client(gw, "app").embed(model="llama3.2:1b", input=["a", "b"])
    assert len(emb.embeddings) == 2
    with pytest.raises(ollama.ResponseError) as err:
        client(gw, "reader").chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 403


def test_openai_client_streams_through_the_gateway(gw: Gateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.keys["app"], timeout=30, max_retries=0)
    assert [m.id for m in oa.models.list()] == ["llama3.2:1b"]
    started = time.monotonic()
    arrivals, text = [], []
    stream = oa.chat.completions.create(
        model="llama3.2:1b", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert "".join(text) and len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] >= STREAM_DELAY * (len(arrivals) - 3) * 0.8
    emb = oa.embeddings.create(model="llama3.2:1b", input="x")
    assert emb.data and emb.data[0].embedding
    with pytest.raises(openai.PermissionDeniedError):
        oa.chat.completions.create(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "x"}])
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="og_0000000000000000_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_rate_limit_answers_429_with_retry_after(gw: Gateway) -> None:
    statuses = [get(gw, "/api/version", "slow-lane")[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    status, headers, body = get(gw, "/api/version", "slow-lane")
    assert status == 429 and 1 <= int(headers["retry-after"]) <= 60
    assert "error" in json.loads(body)


def test_concurrency_limit(gw: Gateway) -> None:
    first_chunk = threading.Event()
    done = threading.Event()

    def long_stream() -> None:
        for _ in client(gw, "one-at-a-time").generate(model="llama3.2:1b", prompt="x" * 50, stream=True):
            first_chunk.set()
        done.set()

    worker = threading.Thread(target=long_stream)
    worker.start()
    assert first_chunk.wait(15)
    status = get(gw, "/api/version", "one-at-a-time")[0]
    worker.join(30)
    assert done.is_set()
    assert status == 429
    assert get(gw, "/api/version", "one-at-a-time")[0] == 200


def test_token_budget_counts_tokens_from_the_stream(gw: Gateway) -> None:
    parts = list(client(gw, "budget").generate(model="llama3.2:1b", prompt="count me", stream=True))
    assert parts[-1].done and (parts[-1].eval_count or 0) > 0
    with pytest.raises(ollama.ResponseError) as err:
        client(gw, "budget").generate(model="llama3.2:1b", prompt="again")
    assert err.value.status_code == 429


def test_revoked_key_stops_working_within_a_second_or_two(gw: Gateway) -> None:
    assert get(gw, "/api/version", "doomed")[0] == 200
    revoke_key(gw.db_url, "doomed")
    deadline = time.monotonic() + 3
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = get(gw, "/api/version", "doomed")[0]
        time.sleep(0.1)
    assert status == 401


def test_client_disconnect_cancels_the_upstream_stream(gw: Gateway, decoy: DecoyProcess) -> None:
    with httpx.Client(timeout=30) as http:
        with http.stream(
            "POST",
            gw.url + "/api/generate",
            headers=gw.auth("admin"),
            json={"model": "qwen2.5:0.5b", "prompt": "a long story " * 20},
        ) as resp:
            assert resp.status_code == 200
            next(resp.iter_raw())
        # leaving the block closes the connection mid-stream
    deadline = time.monotonic() + 5
    record = None
    while time.monotonic() < deadline and record is None:
        rows = [r for r in audit_rows(gw.db_url) if r["path"] == "/api/generate" and r["key_name"] == "admin"]
        record = rows[-1] if rows else None
        time.sleep(0.2)
    assert record is not None and record["reason"] == "client-disconnected"


def test_health_and_metrics(gw: Gateway) -> None:
    assert get(gw, "/-/health")[0] == 200
    assert get(gw, "/-/metrics")[0] == 401
    assert get(gw, "/-/metrics", "app")[0] == 403
    status, headers, body = get(gw, "/-/metrics", "admin")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'ollama_guard_requests_total{decision="allow",key="app",route="POST /api/generate"}' in text
    assert "ollama_guard_request_duration_seconds_bucket" in text
    assert 'ollama_guard_tokens_total{key="budget"}' in text


def settled_row_count(db_url: str) -> int:
    """The audit row count once earlier requests' records have all been written."""
    count = -1
    while True:
        now = len(audit_rows(db_url))
        if now == count:
            return now
        count = now
        time.sleep(0.5)


def test_every_request_is_audited(gw: Gateway) -> None:
    rows_before = settled_row_count(gw.db_url)
    for _ in range(5):
        get(gw, "/api/tags", "reader")
    get(gw, "/api/tags")
    deadline = time.monotonic() + 5
    rows = audit_rows(gw.db_url)
    while time.monotonic() < deadline and len(rows) < rows_before + 6:
        time.sleep(0.2)
        rows = audit_rows(gw.db_url)
    new = rows[rows_before:]
    assert len(new) == 6
    assert [r["decision"] for r in new] == ["allow"] * 5 + ["deny"]
    assert new[-1]["status"] == 401 and new[-1]["reason"] == "no-key"
    assert all(r["client"] == "127.0.0.1" and r["request_id"] for r in new)
    generated = [r for r in audit_rows(gw.db_url) if r["path"] == "/api/generate" and r["status"] == 200]
    assert generated and all(r["tokens"] > 0 for r in generated if r["reason"] == "ok")


# --- upstream failures ------------------------------------------------------------------------------
class Blackhole:
    """An upstream that never answers /api/version and hangs up on everything else."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            data = conn.recv(65536)
            if data.startswith(b"GET /api/version"):
                self.held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_upstream_down_is_502_and_silent_is_504(tmp_path: Path) -> None:
    hole = Blackhole()
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("admin", "admin")])
    try:
        with start_gateway(tmp_path, hole.url, db_url=db, env={"OLLAMA_GUARD_UPSTREAM_TIMEOUT": "1"}) as g:
            g.keys = keys
            started = time.monotonic()
            status, _, body = get(g, "/api/version", "admin")
            assert status == 504 and time.monotonic() - started < 5
            assert get(g, "/api/tags", "admin")[0] == 502
            assert "error" in json.loads(body)
    finally:
        hole.close()


def test_admin_model_management_through_the_ollama_client(gw: Gateway) -> None:
    admin = client(gw, "admin")
    admin.copy("llama3.2:1b", "llama3.2:copy")
    assert "llama3.2:copy" in {m.model for m in admin.list().models}
    assert "llama3.2:copy" in {m.model for m in client(gw, "app").list().models}  # matches llama3.2:*
    with pytest.raises(ollama.ResponseError) as err:
        client(gw, "app").delete("llama3.2:copy")
    assert err.value.status_code == 403
    admin.delete("llama3.2:copy")
    assert "llama3.2:copy" not in {m.model for m in admin.list().models}
    progress = [p.status for p in admin.pull("tinyllama", stream=True)]
    assert progress[-1] == "success" and len(progress) > 2
    with pytest.raises(ollama.ResponseError) as err:
        admin.push("llama3.2:1b")
    assert err.value.status_code == 403


def test_key_made_with_the_keys_command_works(gw: Gateway) -> None:
    import os
    import subprocess
    import sys

    home = Path(gw.db_url.removeprefix("sqlite:///")).parent / "home"
    done = subprocess.run(
        [sys.executable, "-m", "ollama_guard", "keys", "create", "cli-made", "--role", "read",
         "--models", "qwen2.5:*", "--db", gw.db_url],
        capture_output=True, text=True, timeout=60, env={**os.environ, "OLLAMA_GUARD_HOME": str(home)},
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    user = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 3
    while True:  # a new key is seen at once (the gateway re-reads keys on a miss), at worst within a poll
        try:
            listing = user.list()
            break
        except ollama.ResponseError as exc:
            if exc.status_code != 401 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert [m.model for m in listing.models] == ["qwen2.5:0.5b"]
