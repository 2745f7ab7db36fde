"""`ollama-guard logs verify|tail|prune|migrate` — check, read and trim the gateway's hash-chained audit log.

``verify`` prints ``intact (N records, W writers)`` and exits 0, or one line per problem — an edited,
reordered or spliced record, ``N records missing from writer W between T1 and T2``, an altered head —
and exits 1. ``prune --before DATE`` deletes older records but keeps every chain verifiable (it refuses,
exit 1, on a log that does not verify). ``migrate`` moves an older release's single chain
(``og_audit_log``) into writer ``~legacy``. None of them creates a database or a secret.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from ollama_guard.errors import GuardError
from ollama_guard.gateway.audit import AuditRecord, VerifyResult, tail, verify_chain
from ollama_guard.gateway.audit.legacy import LEGACY_WRITER, has_legacy_table, migrate_legacy_log
from ollama_guard.gateway.audit.prune import PruneRefused, PruneResult, prune_before
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.db import (
    create_engine_for,
    init_schema,
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
        str(record.id),
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
    if record.count > 1:
        fields.append(f"count={record.count}")
    return " ".join(fields)


@click.group("logs")
def logs() -> None:
    """Verify and read the gateway's tamper-evident audit log."""


@asynccontextmanager
async def _audit_db(config: GatewayConfig, *, old_ok: bool = False) -> AsyncIterator[Any]:
    """The gateway database with its audit schema checked; database failures inside become one line.
    ``old_ok``: an older release's database (only ``og_audit_log``, not migrated) is fine too."""
    engine = create_engine_for(config.db)
    try:
        with _audit_log_errors(config.db):
            try:
                await require_schema(engine)
            except GuardError:
                async with engine.connect() as conn:
                    old = await has_legacy_table(conn)
                if not old:
                    raise
                if not old_ok:
                    raise GuardError("this audit log was written by an older release (og_audit_log): run "
                                     "`ollama-guard logs migrate` (or start `serve` once) first") from None
            yield engine
    finally:
        await engine.dispose()


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
        async with _audit_db(config, old_ok=True) as engine:
            return await verify_chain(engine, load_server_secret(config, create=False))

    result = asyncio.run(run())
    click.echo(result.summary())
    if result.checkpoint_id:
        click.echo(f"checkpoint head: {result.checkpoint_id} {result.checkpoint_mac}", err=True)
    sys.exit(0 if result.intact else 1)


def _parse_date(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise GuardError(f"--before {text!r} is not a date (YYYY-MM-DD or an ISO 8601 time)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@logs.command("prune")
@click.option("--before", "before", required=True, metavar="DATE",
              help="Delete records older than this (YYYY-MM-DD or ISO 8601 time; UTC unless it says).")
@state_options
def prune_command(before: str, db: str | None, config_file: Path | None) -> None:
    """Delete old records, keeping every chain verifiable (refused unless the log verifies)."""
    when = _parse_date(before)
    config = resolve_config(config_file, db)
    _require_database(config)

    async def run() -> PruneResult:
        async with _audit_db(config) as engine:
            return await prune_before(engine, load_server_secret(config, create=False), when)

    try:
        result = asyncio.run(run())
    except PruneRefused as exc:
        click.echo(str(exc))
        sys.exit(1)
    click.echo(
        f"pruned {result.records} records and {result.checkpoints} checkpoints older than "
        f"{when.astimezone(UTC).isoformat()} ({result.writers} writers; chains kept verifiable)"
    )


@logs.command("migrate")
@state_options
def migrate_command(db: str | None, config_file: Path | None) -> None:
    """Move an older release's audit log (og_audit_log) into the writer chains, keeping it verifiable.

    `serve` does this on its first start; this command does it now. Safe to repeat."""
    config = resolve_config(config_file, db)
    _require_database(config)

    async def run() -> tuple[int | None, int]:
        secret = load_server_secret(config, create=False)
        async with _audit_db(config, old_ok=True) as engine:
            await init_schema(engine)
            return await migrate_legacy_log(engine, secret)

    moved, checkpoint = asyncio.run(run())
    if moved is None:
        click.echo("nothing to migrate (no audit log of an older release, or already migrated)")
    else:
        click.echo(f"migrated {moved} records of the older release's audit log into writer {LEGACY_WRITER} "
                   f"(anchored by checkpoint {checkpoint}); `logs verify` checks them with the old MAC")


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
        async with _audit_db(config) as engine:
            async for record in tail(engine, count, follow):
                line: Any = json.dumps(record.to_json()) if fmt == "json" else _format_line(record)
                click.echo(line)
                sys.stdout.flush()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return
