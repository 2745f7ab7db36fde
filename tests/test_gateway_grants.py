"""No empty or missing value widens a grant (issue 9, item 4).

`keys create --models ''` once made an unrestricted key. Every way an empty value can reach a grant is
tried here: the command's flags, the stored key row (models, role, limits, revoked flag, hash), key
rotation, and the gateway settings that are lists (allow_cidrs, pull/push registries).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ollama_guard.errors import InputError
from ollama_guard.gateway.app import GatewayApp
from ollama_guard.gateway.config import load_config
from ollama_guard.gateway.db import api_keys_table, create_engine_for, init_schema
from ollama_guard.gateway.keys import ApiKey, KeyAuthenticator, KeyStore, Role
from ollama_guard.gateway.patterns import key_model_matcher
from ollama_guard.gateway.services import Services
from ollama_guard.ollama.names import canonical_model_name
from support.audit import MemoryAudit
from support.cli import run_cli

SECRET = b"g" * 48


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("OLLAMA_GUARD_SECRET", "OLLAMA_GUARD_DB", "OLLAMA_GUARD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'guard.db'}"


@pytest.mark.parametrize(
    "models",
    [[""], [","], ["  "], [" , "], ["llama3,"], [",llama3"], ["llama3", ""], ["", ""]],
)
def test_keys_create_refuses_an_empty_model_pattern(
    cli_env: str, capsys: pytest.CaptureFixture[str], models: list[str]
) -> None:
    flags = [arg for m in models for arg in ("--models", m)]
    code, out, err = run_cli(capsys, "keys", "create", "ci", "--role", "admin", *flags, "--db", cli_env)
    assert code == 2 and out == "", (out, err)
    assert len(err.strip().splitlines()) == 1 and "--models" in err and "Traceback" not in err
    # nothing was created
    code, out, err = run_cli(capsys, "keys", "list", "--format", "json", "--db", cli_env)
    assert code == 0 and json.loads(out)["keys"] == [], out


def test_keys_create_without_models_stores_an_explicit_every_model_grant(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(capsys, "keys", "create", "all", "--role", "inference", "--db", cli_env)
    assert code == 0, err
    code, out, _ = run_cli(capsys, "keys", "list", "--format", "json", "--db", cli_env)
    [key] = json.loads(out)["keys"]
    assert key["models"] == ["*"]


async def test_store_refuses_empty_grants(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'g.db'}")
    await init_schema(engine)
    store = KeyStore(engine, SECRET)
    try:
        for models in ([], [""], ["  "], ["llama3", " "]):
            with pytest.raises(InputError):
                await store.create("k", Role.READ, models)
        with pytest.raises(InputError):
            await store.create("k", "", None)
        key, _ = await store.create("k", Role.READ, None)
        assert key.models == ("*",)
    finally:
        await engine.dispose()


def test_an_empty_pattern_list_matches_no_model() -> None:
    name = canonical_model_name("llama3")
    assert key_model_matcher(("*",))(name)
    assert not key_model_matcher(())(name)
    assert not key_model_matcher(None)(name)


# stored rows that lost (or never had) part of their grant: each must refuse that key, and only it
DAMAGE = [
    ("models '[]'", {"models": "[]"}),
    ("models ''", {"models": ""}),
    ("models not JSON", {"models": "llama3"}),
    ("models JSON object", {"models": '{"*": 1}'}),
    ("blank pattern", {"models": '[" "]'}),
    ("empty role", {"role": ""}),
    ("unknown role", {"role": "root"}),
    ("rpm 0", {"rpm": 0}),
    ("negative concurrency", {"concurrency": -1}),
    ("token budget 0", {"tokens_per_day": 0}),
    ("empty hash", {"secret_hash": ""}),
    ("short hash", {"secret_hash": "00ff"}),
]


@pytest.mark.parametrize("values", [v for _, v in DAMAGE], ids=[i for i, _ in DAMAGE])
async def test_a_damaged_key_row_refuses_that_key_only(
    tmp_path: Path, values: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'g.db'}")
    await init_schema(engine)
    store = KeyStore(engine, SECRET)
    damaged, bad_token = await store.create("damaged", Role.ADMIN, ["llama3"], rpm=5)
    _good, good_token = await store.create("good", Role.READ)
    async with engine.begin() as conn:
        await conn.execute(update(api_keys_table).where(api_keys_table.c.id == damaged.id).values(**values))
    auth = KeyAuthenticator(engine, SECRET)
    await auth.start()
    try:
        with caplog.at_level("WARNING", logger="ollama_guard.gateway.keys"):
            assert await auth.authenticate(bad_token) is None
            assert await auth.authenticate(good_token) is not None  # one bad row does not lock out the rest
            # the operator is told which key is refused, and why
            assert any("'damaged'" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    finally:
        await auth.close()
    listed = {k.name: k for k in await store.list()}
    if "secret_hash" not in values:
        assert listed["damaged"].status() == "damaged" and not listed["damaged"].is_usable()
        with pytest.raises(InputError, match="damaged"):
            await store.rotate("damaged")  # rotation must not hand out a secret for a broken grant
    await engine.dispose()


def test_keys_list_and_rotate_show_a_damaged_row_in_one_line(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(
        capsys, "keys", "create", "old", "--role", "admin", "--models", "llama3", "--db", cli_env
    )
    assert code == 0, err

    async def damage() -> None:
        engine = create_engine_for(cli_env)
        async with engine.begin() as conn:
            await conn.execute(update(api_keys_table).values(models="[]"))
        await engine.dispose()

    asyncio.run(damage())
    code, out, err = run_cli(capsys, "keys", "list", "--db", cli_env)
    assert code == 0 and "damaged" in out and "(none)" in out and " * " not in out, out
    code, out, err = run_cli(capsys, "keys", "list", "--format", "json", "--db", cli_env)
    [key] = json.loads(out)["keys"]
    assert key["status"] == "damaged" and key["models"] == [] and "empty" in key["damaged"]
    code, out, err = run_cli(capsys, "keys", "rotate", "old", "--db", cli_env)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "damaged" in err


async def test_rotate_keeps_the_grant_it_had(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'g.db'}")
    await init_schema(engine)
    store = KeyStore(engine, SECRET)
    await store.create("r", Role.INFERENCE, ["llama3*"], rpm=7, concurrency=2, tokens_per_day=9)
    rotated, token = await store.rotate("r")
    auth = KeyAuthenticator(engine, SECRET)
    await auth.start()
    try:
        seen = await auth.authenticate(token)
    finally:
        await auth.close()
        await engine.dispose()
    for got in (rotated, seen):
        assert isinstance(got, ApiKey)
        assert (got.role, got.models, got.rpm, got.concurrency, got.tokens_per_day) == (
            Role.INFERENCE,
            ("llama3*",),
            7,
            2,
            9,
        )


# --- gateway settings that are lists -----------------------------------------------------------------


class _Auth:
    def __init__(self, key: ApiKey) -> None:
        self.key = key

    async def authenticate(self, presented: str) -> ApiKey | None:
        return self.key

    async def close(self) -> None:
        return None


class _Limiter:
    def acquire(self, key: ApiKey) -> Any:
        import contextlib

        return contextlib.nullcontext()

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        return None

    async def close(self) -> None:
        return None


async def _status(
    config_values: dict[str, Any], environ: dict[str, str], key: ApiKey, path: str, body: bytes
):
    config = load_config(None, {"upstream": "http://127.0.0.1:9", **config_values}, environ)
    audit = MemoryAudit()
    app = GatewayApp(config, Services(_Auth(key), _Limiter(), audit))  # type: ignore[arg-type]
    await app.upstream.start()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"authorization", b"Bearer og_0123456789abcdef_x"),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 1234),
    }
    try:
        await app(scope, receive, send)
    finally:
        await app.upstream.close()
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def _key(models: tuple[str, ...]) -> ApiKey:
    from datetime import UTC, datetime

    return ApiKey(
        "0123456789abcdef", "k", Role.ADMIN, models, None, None, None, datetime.now(UTC), None, False
    )


async def test_a_key_with_no_model_patterns_reaches_no_model() -> None:
    status, body = await _status({}, {}, _key(()), "/api/show", b'{"model":"llama3"}')
    assert status == 403 and b"not allowed for this key" in body


@pytest.mark.parametrize(
    "values,environ",
    [
        ({"allow_cidrs": []}, {}),
        ({}, {"OLLAMA_GUARD_ALLOW_CIDRS": ""}),
        ({}, {"OLLAMA_GUARD_ALLOW_CIDRS": " , "}),
    ],
)
async def test_empty_allow_cidrs_admit_no_client(values: dict[str, Any], environ: dict[str, str]) -> None:
    status, body = await _status(values, environ, _key(("*",)), "/api/show", b'{"model":"llama3"}')
    assert status == 403 and b"client address not allowed" in body


@pytest.mark.parametrize(
    "values,environ,path",
    [
        ({"pull_registries": []}, {}, "/api/pull"),
        ({"pull_registries": ["", " "]}, {}, "/api/pull"),
        ({}, {"OLLAMA_GUARD_PULL_REGISTRIES": ""}, "/api/pull"),
        ({"push_registries": []}, {}, "/api/push"),
        ({}, {"OLLAMA_GUARD_PUSH_REGISTRIES": ","}, "/api/push"),
    ],
)
async def test_empty_registry_lists_allow_no_pull_or_push(
    values: dict[str, Any], environ: dict[str, str], path: str
) -> None:
    status, body = await _status(values, environ, _key(("*",)), path, b'{"model":"llama3"}')
    assert status == 403 and b"registry" in body


async def test_a_key_store_timeout_is_logged_with_its_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 9 item 10: not `cannot read API keys: TimeoutError: TimeoutError`."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'g.db'}")
    auth = KeyAuthenticator(engine, SECRET, query_timeout=0.05, stale_after=3)

    async def hang() -> None:
        await asyncio.sleep(5)

    auth.poller._poll = hang  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="ollama_guard.gateway.keys"):
        await auth.poller._poll_guarded()
    await engine.dispose()
    [line] = [r.getMessage() for r in caplog.records]
    assert "did not answer within 0.05 s" in line and "refused" in line and "3 s" in line, line
    assert "TimeoutError" not in line


async def test_update_never_widens_a_grant_from_a_missing_or_empty_list(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'g.db'}")
    await init_schema(engine)
    store = KeyStore(engine, SECRET)
    try:
        await store.create("u", Role.INFERENCE, ["llama3"])
        for models in (None, [], [""], [" "]):
            with pytest.raises(InputError):
                await store.update("u", models=models, rpm=None, concurrency=None, tokens_per_day=None)
        [key] = await store.list()
        assert key.models == ("llama3",)
    finally:
        await engine.dispose()


def test_a_row_without_a_revoked_flag_is_not_an_active_key() -> None:
    """The column is NOT NULL today; a row from elsewhere (a hand edit, another schema) must still fail
    closed: shown as damaged, never usable."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from ollama_guard.gateway.keys import row_to_key as _row_to_key

    row = SimpleNamespace(
        id="0123456789abcdef", name="k", role="admin", models='["*"]', rpm=None, concurrency=None,
        tokens_per_day=None, created_at=datetime.now(UTC).replace(tzinfo=None), expires_at=None,
        revoked=None, revoked_at=None,
    )  # fmt: skip
    key = _row_to_key(row)
    assert not key.is_usable() and key.damaged and "revoked" in key.damaged


@pytest.mark.parametrize("name", ["OLLAMA_GUARD_ALLOW_CLOUD", "OLLAMA_GUARD_ALLOW_INSECURE"])
def test_an_empty_switch_that_widens_egress_is_refused(name: str) -> None:
    """`allow_cloud`/`allow_insecure` from an empty variable: refused, never read as on."""
    from ollama_guard.errors import GuardError

    with pytest.raises(GuardError, match=name.removeprefix("OLLAMA_GUARD_").lower()):
        load_config(None, {}, {name: ""})
