"""Gateway API keys: storage (hash only), authentication, revocation/rotation spreading within a second,
failing closed when the store is unreadable, the server secret file, and the `keys` command."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, text, update

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.db import api_keys_table, create_engine_for, init_schema, state_table
from ollama_guard.gateway.keys import ApiKey, KeyAuthenticator, KeyStore, Role, parse_token
from ollama_guard.gateway.limits import StoreUnavailable
from ollama_guard.gateway.secrets import load_server_secret
from support.cli import run_cli
from support.pg_redis import pg_url, postgres_server  # noqa: F401

SECRET = b"s" * 48


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'guard.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engines(db_url: str):
    """Two engines on one database: like the `keys` command and a gateway process."""
    admin, gateway = create_engine_for(db_url), create_engine_for(db_url)
    await init_schema(admin)
    yield admin, gateway
    await admin.dispose()
    await gateway.dispose()


async def wait_until(predicate, within: float) -> float:
    """Seconds until ``await predicate()`` is true (AssertionError after ``within`` s)."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def test_roles_include_the_ones_before() -> None:
    assert Role.ADMIN.includes(Role.INFERENCE) and Role.ADMIN.includes("read")
    assert Role.INFERENCE.includes(Role.READ) and Role.INFERENCE.includes(Role.INFERENCE)
    assert not Role.READ.includes(Role.INFERENCE)
    assert not Role.INFERENCE.includes(Role.ADMIN)


async def test_create_then_authenticate(engines) -> None:
    admin, gateway = engines
    store = KeyStore(admin, SECRET)
    key, token = await store.create(
        "alice",
        "inference",
        ["llama3*", "library/*"],
        rpm=10,
        concurrency=2,
        tokens_per_day=1000,
        expires_days=30,
    )
    assert token.startswith(f"og_{key.id}_") and parse_token(token) is not None
    auth = KeyAuthenticator(gateway, SECRET)
    await auth.start()
    try:
        found = await auth.authenticate(token)
        assert isinstance(found, ApiKey)
        assert (found.id, found.name, found.role) == (key.id, "alice", Role.INFERENCE)
        assert found.models == ("llama3*", "library/*")
        assert (found.rpm, found.concurrency, found.tokens_per_day) == (10, 2, 1000)
        assert found.expires_at is not None and not found.revoked
        # wrong secret, truncated, other key id, garbage: all rejected
        wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert await auth.authenticate(wrong) is None
        assert await auth.authenticate(token[:-1]) is None
        assert await auth.authenticate("og_0123456789abcdef_" + token.split("_", 2)[2]) is None
        assert await auth.authenticate("Bearer " + token) is None
        assert await auth.authenticate("") is None
        assert await auth.authenticate("x" * 100_000) is None
    finally:
        await auth.close()


async def test_revocation_reaches_another_process_within_one_second(engines) -> None:
    admin, gateway = engines
    store = KeyStore(admin, SECRET)
    _key, token = await store.create("bob", Role.READ)
    auth = KeyAuthenticator(gateway, SECRET)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        await store.revoke("bob")
        took = await wait_until(lambda: _rejected(auth, token), within=1.0)
        assert took < 1.0
        # and it stays rejected; listing shows it revoked
        assert await auth.authenticate(token) is None
        [listed] = await store.list()
        assert listed.revoked and listed.status() == "revoked"
    finally:
        await auth.close()


async def _rejected(auth: KeyAuthenticator, token: str) -> bool:
    return await auth.authenticate(token) is None


async def test_rotation_replaces_the_secret(engines) -> None:
    admin, gateway = engines
    store = KeyStore(admin, SECRET)
    key, old = await store.create("carol", Role.ADMIN, rpm=5)
    auth = KeyAuthenticator(gateway, SECRET)
    await auth.start()
    try:
        assert await auth.authenticate(old) is not None
        rotated, new = await store.rotate("carol")
        assert rotated.id == key.id and rotated.rpm == 5 and new != old
        # the new secret works at once (a miss triggers a refresh), the old one within a second
        assert (await auth.authenticate(new)).id == key.id
        assert await wait_until(lambda: _rejected(auth, old), within=1.0) < 1.0
    finally:
        await auth.close()


async def test_key_created_elsewhere_works_immediately(engines) -> None:
    admin, gateway = engines
    auth = KeyAuthenticator(gateway, SECRET, poll_interval=30)  # the poller will not help
    await auth.start()
    try:
        key, token = await KeyStore(admin, SECRET).create("dave", Role.INFERENCE)
        await asyncio.sleep(0.15)  # beyond the miss-refresh interval
        found = await auth.authenticate(token)
        assert found is not None and found.id == key.id
    finally:
        await auth.close()


async def test_expired_key_is_rejected(engines) -> None:
    admin, gateway = engines
    store = KeyStore(admin, SECRET)
    key, token = await store.create("erin", Role.READ, expires_days=1)
    auth = KeyAuthenticator(gateway, SECRET)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        async with admin.begin() as conn:  # move the expiry into the past
            await conn.execute(
                update(api_keys_table)
                .where(api_keys_table.c.id == key.id)
                .values(expires_at=text("created_at"))
            )
            await conn.execute(update(state_table).values(key_generation=state_table.c.key_generation + 1))
        await wait_until(lambda: _rejected(auth, token), within=1.0)
        [listed] = await store.list()
        assert listed.status() == "expired"
    finally:
        await auth.close()


async def test_duplicate_names_and_reuse_after_revoke(engines) -> None:
    admin, _ = engines
    store = KeyStore(admin, SECRET)
    first, _ = await store.create("frank", Role.READ)
    with pytest.raises(InputError, match="already exists"):
        await store.create("frank", Role.ADMIN)
    await store.revoke(first.id)
    second, _ = await store.create("frank", Role.ADMIN)
    assert second.id != first.id
    assert (await store.rotate("frank"))[0].id == second.id  # the name now means the active key
    with pytest.raises(InputError, match="revoked"):
        await store.rotate(first.id)
    with pytest.raises(InputError, match="no key"):
        await store.revoke("nobody")


async def test_bad_input_is_refused(tmp_path: Path) -> None:
    admin = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(admin)
    store = KeyStore(admin, SECRET)
    for bad in ("", "has space", "x" * 65, "-leading", "0123456789abcdef"):
        with pytest.raises(InputError):
            await store.create(bad, Role.READ)
    with pytest.raises(InputError, match="role"):
        await store.create("ok", "superuser")
    for pattern in ("bad name", "a/b/c/d", "ll[", "hf.co/*"):
        with pytest.raises(InputError, match="model pattern"):
            await store.create("ok", Role.READ, [pattern])
    with pytest.raises(InputError):
        await store.create("ok", Role.READ, rpm=0)
    assert await store.list() == []
    await admin.dispose()


async def test_database_never_holds_the_secret(engines, db_url: str, request: pytest.FixtureRequest) -> None:
    admin, gateway = engines
    store = KeyStore(admin, SECRET)
    tokens = [(await store.create(f"k{i}", Role.INFERENCE))[1] for i in range(3)]
    tokens.append((await store.rotate("k0"))[1])
    auth = KeyAuthenticator(gateway, SECRET)
    await auth.start()
    assert await auth.authenticate(tokens[-1]) is not None
    await auth.close()
    await admin.dispose()
    await gateway.dispose()
    if db_url.startswith("sqlite"):
        path = Path(db_url.removeprefix("sqlite:///"))
        files = [p for p in path.parent.iterdir() if p.name.startswith("guard.db")]
        content = b"".join(p.read_bytes() for p in files)
        assert b"og_api_keys" in content  # we are looking at the right bytes
    else:
        server = request.getfixturevalue("postgres_server")
        content = server.dump(db_url.rsplit("/", 1)[1])
        assert b"og_api_keys" in content
    for token in tokens:
        secret_part = token.split("_", 2)[2]
        assert secret_part.encode() not in content
        assert token.encode() not in content
    assert SECRET not in content


async def test_random_keys_cannot_flood_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    statements = 0

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def count(*_args) -> None:
        nonlocal statements
        statements += 1

    auth = KeyAuthenticator(engine, SECRET, poll_interval=30, negative_cache_size=50)
    await auth.start()
    try:
        statements = 0
        started = time.monotonic()
        for i in range(300):
            assert await auth.authenticate(f"og_{i:016x}_{'A' * 43}") is None
        elapsed = time.monotonic() - started
        # at most one refresh per 0.1 s, however many unknown keys arrive
        assert statements <= 2 * (elapsed / 0.1 + 2)
        assert len(auth._negative) <= 50
        # a repeated bad key is answered from the negative cache without a refresh
        statements = 0
        await asyncio.sleep(0.12)
        for _ in range(50):
            assert await auth.authenticate(f"og_{299:016x}_{'A' * 43}") is None
        assert statements == 0
    finally:
        await auth.close()
        await engine.dispose()


async def test_unreadable_sqlite_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "guard.db"
    engine = create_engine_for(f"sqlite:///{path}")
    await init_schema(engine)
    _, token = await KeyStore(engine, SECRET).create("gina", Role.READ)
    auth = KeyAuthenticator(engine, SECRET, stale_after=0.6)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        moved = tmp_path / "moved.db"
        path.rename(moved)
        path.mkdir()  # the database path can no longer be opened (works even as root)
        # within the staleness bound the snapshot still answers; after it, the check fails closed
        assert await auth.authenticate(token) is not None
        await asyncio.sleep(0.8)
        with pytest.raises(StoreUnavailable):
            await auth.authenticate(token)
        with pytest.raises(StoreUnavailable):
            await auth.authenticate("og_0123456789abcdef_" + "A" * 43)
        path.rmdir()
        moved.rename(path)
        await wait_until(lambda: _accepted(auth, token), within=2.0)
    finally:
        await auth.close()
        await engine.dispose()


async def _accepted(auth: KeyAuthenticator, token: str) -> bool:
    try:
        return await auth.authenticate(token) is not None
    except StoreUnavailable:
        return False


async def test_stopped_postgres_fails_closed(pg_url: str, postgres_server) -> None:  # noqa: F811
    engine = create_engine_for(pg_url)
    await init_schema(engine)
    _, token = await KeyStore(engine, SECRET).create("hank", Role.READ)
    auth = KeyAuthenticator(engine, SECRET, stale_after=0.8)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        postgres_server.stop()
        await asyncio.sleep(1.2)
        with pytest.raises(StoreUnavailable):
            await auth.authenticate(token)
        postgres_server.start()
        await wait_until(lambda: _accepted(auth, token), within=5.0)
    finally:
        postgres_server.start()
        await auth.close()
        await engine.dispose()


async def test_a_different_secret_is_refused(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'guard.db'}")
    await init_schema(engine)
    await KeyStore(engine, SECRET).create("ivan", Role.READ)
    with pytest.raises(GuardError, match="secret"):
        await KeyAuthenticator(engine, b"t" * 48).start()
    with pytest.raises(GuardError, match="secret"):
        await KeyStore(engine, b"t" * 48).create("jane", Role.READ)
    await engine.dispose()


# --- the server secret --------------------------------------------------------------------------


def test_secret_file_is_created_private_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    first = load_server_secret(None)
    path = tmp_path / "home" / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_server_secret(None) == first and len(first) >= 32
    # a SQLite --db keeps its secret next to the database; an explicit secret_file wins
    db_config = SimpleNamespace(db=f"sqlite:///{tmp_path / 'x' / 'guard.db'}", secret_file=None)
    assert load_server_secret(db_config) != first
    assert (tmp_path / "x" / "secret.key").exists()
    explicit = SimpleNamespace(db=db_config.db, secret_file=path)
    assert load_server_secret(explicit) == first
    # readable by others → refused
    path.chmod(0o644)
    with pytest.raises(GuardError, match="chmod 600"):
        load_server_secret(None)
    path.chmod(0o600)
    # the environment variable wins (for replicas), and must be long enough
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", path.read_text().strip())
    assert load_server_secret(db_config) == first
    monkeypatch.setenv("OLLAMA_GUARD_SECRET", "short")
    with pytest.raises(GuardError, match="shorter"):
        load_server_secret(None)


# --- the command ------------------------------------------------------------------------------------


def test_keys_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.delenv("OLLAMA_GUARD_DB", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    code, out, err = run_cli(
        capsys, "keys", "create", "ci", "--role", "inference", "--models", "llama3*,qwen*", "--rpm", "30",
        "--tokens-per-day", "5000", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    token = out.splitlines()[-1]
    assert out == token + "\n" and parse_token(token) is not None
    assert "ci" in err and token not in err

    # the token authenticates against the same database and secret
    async def check(expected_ok: bool) -> None:
        engine = create_engine_for(db)
        auth = KeyAuthenticator(engine, load_server_secret(SimpleNamespace(db=db, secret_file=None)))
        await auth.start()
        assert (await auth.authenticate(token) is not None) is expected_ok
        await auth.close()
        await engine.dispose()

    asyncio.run(check(True))

    code, out, err = run_cli(capsys, "keys", "create", "ci", "--role", "read", "--db", db)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "already exists" in err

    code, out, _ = run_cli(capsys, "keys", "list", "--format", "json", "--db", db)
    assert code == 0
    [listed] = json.loads(out)["keys"]
    assert listed["name"] == "ci" and listed["models"] == ["llama3*", "qwen*"] and listed["rpm"] == 30
    assert token.split("_", 2)[2] not in out and "hash" not in out

    code, out, _ = run_cli(capsys, "keys", "list", "--db", db)
    assert code == 0 and "ci" in out and "inference" in out and token.split("_", 2)[2] not in out

    code, out, err = run_cli(capsys, "keys", "rotate", "ci", "--db", db)
    assert code == 0 and out.count("\n") == 1
    new_token = out.strip()
    assert parse_token(new_token) is not None and new_token != token
    asyncio.run(check(False))
    token = new_token
    asyncio.run(check(True))

    code, out, _ = run_cli(capsys, "keys", "revoke", listed["id"], "--db", db)
    assert code == 0 and "revoked" in out
    asyncio.run(check(False))

    code, _, err = run_cli(capsys, "keys", "revoke", "ghost", "--db", db)
    assert code == 2 and "no key named 'ghost'" in err
    code, _, err = run_cli(
        capsys, "keys", "create", "x", "--role", "read", "--models", "not a model", "--db", db
    )
    assert code == 2 and "model pattern" in err


def test_keys_command_reads_the_gateway_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.delenv("OLLAMA_GUARD_DB", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    db_path = tmp_path / "state" / "keys.db"
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ndb = "sqlite:///{db_path}"\nsecret_file = "my.secret"\n')
    code, _out, err = run_cli(capsys, "keys", "create", "svc", "--role", "admin", "--config", str(config))
    assert code == 0, err
    assert db_path.exists() and (tmp_path / "my.secret").exists()
    assert not (tmp_path / "home").exists()  # nothing went to the default place
    assert os.stat(tmp_path / "my.secret").st_mode & 0o077 == 0
    shutil.rmtree(tmp_path / "state")


async def test_revoke_command_in_another_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_GUARD_SECRET", raising=False)
    monkeypatch.delenv("OLLAMA_GUARD_DB", raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(db)
    await init_schema(engine)
    secret = load_server_secret(SimpleNamespace(db=db, secret_file=None))
    _, token = await KeyStore(engine, secret).create("remote", Role.INFERENCE)
    auth = KeyAuthenticator(engine, secret)
    await auth.start()
    try:
        assert await auth.authenticate(token) is not None
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ollama_guard", "keys", "revoke", "remote", "--db", db,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        assert process.returncode == 0, err
        assert b"revoked" in out
        assert await wait_until(lambda: _rejected(auth, token), within=1.0) < 1.0
    finally:
        await auth.close()
        await engine.dispose()


@given(key_id=st.from_regex(r"[0-9a-f]{16}", fullmatch=True),
       secret=st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True),
       hash_key=st.binary(min_size=32, max_size=32))
def test_the_request_path_hasher_is_the_stored_hash(key_id: str, secret: str, hash_key: bytes) -> None:
    # the key check hashes with a copied keyed HMAC (faster); it must equal what keys are stored as
    from ollama_guard.gateway.keys.tokens import hash_secret, secret_hasher

    hasher = secret_hasher(hash_key)
    assert hasher(key_id, secret) == hash_secret(hash_key, key_id, secret)
    assert hasher(key_id, secret) == hash_secret(hash_key, key_id, secret)  # the keyed state is not used up
    assert hasher(key_id, secret[::-1]) == hash_secret(hash_key, key_id, secret[::-1])
