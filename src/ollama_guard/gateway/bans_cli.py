"""`ollama-guard bans list|add|remove` — the gateway's banned client addresses.

The database comes from ``--db`` / ``--config`` as for ``serve`` and ``keys``. Every gateway process
using that database enforces a change within a second. Only an existing gateway database is used
(a mistyped ``--db`` never creates one).
"""

from __future__ import annotations

import json
from typing import Any

import click

from ollama_guard.errors import InputError
from ollama_guard.gateway.bans import Ban, BanStore, canonical, ensure_schema
from ollama_guard.gateway.keys_cli import require_database, resolve_config, run_with_engine, state_options


def _run(db: str | None, config_file: Any, work: Any) -> Any:
    config = resolve_config(config_file, db)
    require_database(config)

    async def job(engine: Any) -> Any:
        await ensure_schema(engine)
        return await work(BanStore(engine))

    return run_with_engine(config, job, init=False)


def _when(ban: Ban) -> str:
    return ban.until.strftime("%Y-%m-%d %H:%M:%S UTC") if ban.until else "until removed"


def _table(bans: list[Ban]) -> str:
    header = ("ADDRESS", "UNTIL", "SOURCE", "CREATED", "REASON")
    rows = [(b.address, _when(b) if b.active() else "ended", b.source,
             b.created.strftime("%Y-%m-%d %H:%M:%S"), b.reason.replace("\n", " ")[:80]) for b in bans]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [header, *rows])


@click.group("bans")
def bans() -> None:
    """List, add and remove banned client addresses (refused with 403 by every gateway replica)."""


@bans.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--all", "include_ended", is_flag=True, help="Also list bans that ended (kept 7 days).")
@state_options
def list_bans(fmt: str, include_ended: bool, db: str | None, config_file: Any) -> None:
    """The bans in force."""
    found: list[Ban] = _run(db, config_file, lambda store: store.list(include_ended=include_ended))
    if fmt == "json":
        click.echo(json.dumps([b.to_json() for b in found], indent=2))
    elif found:
        click.echo(_table(found))
    else:
        click.echo("no bans", err=True)


@bans.command("add")
@click.argument("address")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
              help="How long (default: until removed).")
@click.option("--reason", default="banned by an operator", show_default=True, metavar="TEXT")
@state_options
def add_ban(address: str, minutes: float | None, reason: str, db: str | None, config_file: Any) -> None:
    """Ban ADDRESS (an IP address, or a network like 203.0.113.0/24)."""
    canonical(address)  # bad input: one line, before touching the database
    if minutes is not None and minutes > 525_600 * 100:
        raise InputError("--minutes: at most a century (leave it out for a ban until removed)")
    ban: Ban = _run(db, config_file, lambda store: store.add(address, minutes, reason, "manual"))
    click.echo(f"banned {ban.address} {_when(ban)}")


@bans.command("remove")
@click.argument("address")
@state_options
def remove_ban(address: str, db: str | None, config_file: Any) -> None:
    """Lift the ban on ADDRESS (exit 1 when it was not banned)."""
    key = canonical(address)
    if _run(db, config_file, lambda store: store.remove(key)):
        click.echo(f"ban on {key} lifted")
        return
    click.echo(f"{key} is not banned", err=True)
    raise click.exceptions.Exit(1)
