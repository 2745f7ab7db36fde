"""`ollama-guard logs verify|tail` — check and read the gateway's hash-chained audit log.

``verify`` prints ``intact (N records)`` and exits 0, or names the first broken record and why
(edited, deleted, reordered, truncated, head altered) and exits 1. Neither command creates a database
or a secret: they only read what the gateway wrote.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from ollama_guard.errors import GuardError
from ollama_guard.gateway.audit import AuditRecord, VerifyResult, tail, verify_chain
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.db import (
    create_engine_for,
    redact_url,
    require_schema,
    short_db_error,
    sqlite_path,
)
from ollama_guard.gateway.keys_cli import resolve_config, state_options
from ollama_guard.gateway.secrets import load_server_secret


def _require_database(config: GatewayConfig) -> None:
    path = sqlite_path(config.db)
    if path is not None and not Path(path).expanduser().is_file():
        raise GuardError(f"no gateway database at {path}")


def _format_line(record: AuditRecord) -> str:
    who = record.key_name or record.key_id or "-"
    fields = [
        str(record.seq),
        record.to_json()["time"],
        record.decision,
        str(record.status),
        record.method,
        record.path,
        f"key={who}",
        f"model={record.model or '-'}",
        f"client={record.client}",
        f"tokens={record.tokens}",
        f"{record.latency_ms:.1f}ms",
    ]
    if record.reason:
        fields.append(f"reason={record.reason}")
    return " ".join(fields)


@click.group("logs")
def logs() -> None:
    """Verify and read the gateway's tamper-evident audit log."""


@contextmanager
def _audit_log_errors(db: str) -> Iterator[None]:
    """Database failures as one-line errors naming the (password-redacted) database."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise GuardError(f"cannot read the audit log in {redact_url(db)}: {short_db_error(exc)}") from None
    except OSError as exc:  # e.g. PostgreSQL not listening
        raise GuardError(f"cannot reach database {redact_url(db)}: {exc}") from None


@logs.command("verify")
@state_options
def verify_command(db: str | None, config_file: Path | None) -> None:
    """Check the audit log's hash chain (exit 0 intact, 1 broken)."""
    config = resolve_config(config_file, db)
    _require_database(config)

    async def run() -> VerifyResult:
        engine = create_engine_for(config.db)
        try:
            with _audit_log_errors(config.db):
                await require_schema(engine)
                secret = load_server_secret(config, create=False)
                return await verify_chain(engine, secret)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    click.echo(result.summary())
    if result.head_seq:
        click.echo(f"chain head: record {result.head_seq}, mac {result.head_mac}", err=True)
    sys.exit(0 if result.intact else 1)


@logs.command("tail")
@click.option(
    "-n", "count", type=click.IntRange(min=0), default=20, show_default=True, help="Records to show."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records as they are written.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_options
def tail_command(count: int, follow: bool, fmt: str, db: str | None, config_file: Path | None) -> None:
    """Show the last records (a line each; `--format json` prints one JSON object per line)."""
    config = resolve_config(config_file, db)
    _require_database(config)

    async def run() -> None:
        engine = create_engine_for(config.db)
        try:
            with _audit_log_errors(config.db):
                await require_schema(engine)
                async for record in tail(engine, count, follow):
                    line: Any = json.dumps(record.to_json()) if fmt == "json" else _format_line(record)
                    click.echo(line)
                    sys.stdout.flush()
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return
