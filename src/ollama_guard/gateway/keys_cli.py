"""`ollama-guard keys create|list|revoke|rotate` — manage the gateway's API keys.

The database and secret come from ``--db`` / ``--config`` exactly as ``serve`` reads them (the
``[gateway]`` table's ``db`` and ``secret_file``; ``OLLAMA_GUARD_*`` variables override both), so a
key created here is one the gateway accepts. A new secret is printed once, alone, as the last line on
stdout (everything else goes to stderr): ``KEY=$(ollama-guard keys create ci --role inference)``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from ollama_guard.errors import GuardError
from ollama_guard.gateway.config import GatewayConfig, load_config
from ollama_guard.gateway.db import (
    check_url,
    create_engine_for,
    init_schema,
    redact_url,
    require_schema,
    sqlite_path,
)
from ollama_guard.gateway.keys import ApiKey, KeyStore, Role
from ollama_guard.gateway.secrets import load_server_secret

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def state_options(func: F) -> F:
    """``--db URL`` and ``--config FILE``, shared by the keys and logs commands."""
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Gateway config file (TOML; its [gateway] db and secret_file are used; default: "
        "/etc/ollama-guard/config.toml when it exists, as for serve).",
    )(func)
    func = click.option(
        "--db", "db", default=None, metavar="URL", help="Database URL (sqlite:///PATH or postgresql://…)."
    )(func)
    return func


def resolve_config(config_file: Path | None, db: str | None) -> GatewayConfig:
    """The gateway configuration as ``serve`` would see it, with ``--db`` applied."""
    config = load_config(config_file, {"db": db}, os.environ)
    check_url(config.db)  # before anything (a secret file) is created for it
    return config


def require_database(config: GatewayConfig) -> None:
    """Commands that only read or change existing keys never create a database (a mistyped --db would
    otherwise leave an empty one behind and report "no keys")."""
    path = sqlite_path(config.db)
    if path is not None and not Path(path).expanduser().is_file():
        raise GuardError(f"no gateway database at {path}")


def run_with_engine(config: GatewayConfig, work: Callable[[Any], Awaitable[T]], *, init: bool = True) -> T:
    """Open the database, optionally create the schema, run ``work(engine)``, close."""

    async def runner() -> T:
        engine = create_engine_for(config.db)
        try:
            if init:
                await init_schema(engine)
            else:
                await require_schema(engine)  # never writes to a database that is not ours
            return await work(engine)
        except OSError as exc:  # e.g. PostgreSQL not listening: one clear line, not the bare errno
            raise GuardError(f"cannot reach database {redact_url(config.db)}: {exc}") from None
        finally:
            await engine.dispose()

    return asyncio.run(runner())


def _split_patterns(values: tuple[str, ...]) -> list[str] | None:
    """--models values split on commas; None when --models was not given (every model).

    Empty parts are kept so that `--models ''` or `--models "$UNSET,"` is refused, not widened.
    """
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",")]


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _describe(key: ApiKey) -> str:
    parts = [f"role {key.role}", "models " + (",".join(key.models) or "(none)")]
    if key.rpm is not None:
        parts.append(f"{key.rpm} req/min")
    if key.concurrency is not None:
        parts.append(f"{key.concurrency} concurrent")
    if key.tokens_per_day is not None:
        parts.append(f"{key.tokens_per_day} tokens/day")
    if key.expires_at is not None:
        parts.append(f"expires {_when(key.expires_at)} UTC")
    return ", ".join(parts)


def _table(keys: list[ApiKey]) -> str:
    header = ("ID", "NAME", "ROLE", "MODELS", "RPM", "CONC", "TOKENS/DAY", "CREATED", "EXPIRES", "STATUS")
    rows = [
        (
            k.id,
            k.name,
            str(k.role),
            ",".join(k.models) or "(none)",
            _limit(k.rpm),
            _limit(k.concurrency),
            _limit(k.tokens_per_day),
            _when(k.created_at),
            _when(k.expires_at),
            k.status(),
        )
        for k in keys
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


@click.group("keys")
def keys() -> None:
    """Create, list, update, revoke and rotate gateway API keys (only a keyed hash of each key is stored)."""


@keys.command("create")
@click.argument("name")
@click.option(
    "--role", type=click.Choice([r.value for r in Role]), required=True, help="What the key may do."
)
@click.option(
    "--models",
    multiple=True,
    metavar="PATTERN[,PATTERN…]",
    help="Allowed models (names or globs such as llama3* or library/*); default: all ('*'). "
    "An empty value is refused.",
)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Concurrent requests.")
@click.option("--tokens-per-day", type=click.IntRange(min=1), default=None, help="Token budget per UTC day.")
@click.option(
    "--expires", type=click.FloatRange(min=0, min_open=True), default=None, metavar="DAYS", help="Expiry."
)
@state_options
def create_command(
    name: str,
    role: str,
    models: tuple[str, ...],
    rpm: int | None,
    concurrency: int | None,
    tokens_per_day: int | None,
    expires: float | None,
    db: str | None,
    config_file: Path | None,
) -> None:
    """Create key NAME; its secret is printed once (last line of stdout)."""
    config = resolve_config(config_file, db)
    secret = load_server_secret(config)

    async def work(engine: Any) -> tuple[ApiKey, str]:
        return await KeyStore(engine, secret).create(
            name, role, _split_patterns(models), rpm, concurrency, tokens_per_day, expires
        )

    key, token = run_with_engine(config, work)
    click.echo(f"created key {key.name!r} (id {key.id}; {_describe(key)})", err=True)
    click.echo("the secret below is shown only this once; store it now:", err=True)
    click.echo(token)


@keys.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_options
def list_command(fmt: str, db: str | None, config_file: Path | None) -> None:
    """List keys (never their secrets or hashes)."""
    config = resolve_config(config_file, db)
    require_database(config)

    async def work(engine: Any) -> list[ApiKey]:
        return await KeyStore(engine, b"").list()

    found = run_with_engine(config, work, init=False)  # listing never writes (not even a schema)
    if fmt == "json":
        click.echo(json.dumps({"keys": [k.to_json() for k in found]}, indent=2))
    elif found:
        click.echo(_table(found))
    else:
        click.echo("no keys (create one with: ollama-guard keys create NAME --role inference)", err=True)


@keys.command("revoke")
@click.argument("name_or_id")
@state_options
def revoke_command(name_or_id: str, db: str | None, config_file: Path | None) -> None:
    """Revoke a key; gateways stop accepting it within about a second."""
    config = resolve_config(config_file, db)
    require_database(config)

    async def work(engine: Any) -> tuple[bool, ApiKey]:
        # after the schema check; a key to change implies its secret exists already
        store = KeyStore(engine, load_server_secret(config, create=False))
        before = await store.get(name_or_id)
        return before.revoked, await store.revoke(name_or_id)

    was_revoked, key = run_with_engine(config, work, init=False)
    if was_revoked:
        click.echo(f"key {key.name!r} (id {key.id}) was already revoked")
    else:
        click.echo(f"revoked key {key.name!r} (id {key.id})")


@keys.command("rotate")
@click.argument("name_or_id")
@state_options
def rotate_command(name_or_id: str, db: str | None, config_file: Path | None) -> None:
    """Give a key a new secret (printed once); the old secret stops working within about a second."""
    config = resolve_config(config_file, db)
    require_database(config)

    async def work(engine: Any) -> tuple[ApiKey, str]:
        # after the schema check; a key to change implies its secret exists already
        return await KeyStore(engine, load_server_secret(config, create=False)).rotate(name_or_id)

    key, token = run_with_engine(config, work, init=False)
    click.echo(
        f"rotated key {key.name!r} (id {key.id}); gateways stop accepting the old secret within a second",
        err=True,
    )
    click.echo("the new secret below is shown only this once; store it now:", err=True)
    click.echo(token)


@keys.command("update")
@click.argument("name_or_id")
@click.option(
    "--models",
    multiple=True,
    metavar="PATTERN[,PATTERN…]",
    help="New allowed models ('*' for all); an empty value is refused. Default: keep the current list.",
)
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="New requests per minute.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="New concurrent requests.")
@click.option("--tokens-per-day", type=click.IntRange(min=1), default=None, help="New daily token budget.")
@state_options
def update_command(
    name_or_id: str,
    models: tuple[str, ...],
    rpm: int | None,
    concurrency: int | None,
    tokens_per_day: int | None,
    db: str | None,
    config_file: Path | None,
) -> None:
    """Change a key's models or limits (what is not given stays); also repairs a damaged model list.

    Keys made before empty model lists were refused hold `[]` and are refused as damaged: give them
    their models again with `--models` (for example `--models '*'`).
    """
    config = resolve_config(config_file, db)
    require_database(config)

    async def work(engine: Any) -> ApiKey:
        store = KeyStore(engine, load_server_secret(config, create=False))
        current = await store.get(name_or_id)
        patterns = _split_patterns(models)
        return await store.update(
            name_or_id,
            models=patterns if patterns is not None else list(current.models),
            rpm=rpm if rpm is not None else current.rpm,
            concurrency=concurrency if concurrency is not None else current.concurrency,
            tokens_per_day=tokens_per_day if tokens_per_day is not None else current.tokens_per_day,
        )

    key = run_with_engine(config, work, init=False)
    click.echo(f"updated key {key.name!r} (id {key.id}; {_describe(key)})")
