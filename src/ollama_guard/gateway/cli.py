"""`ollama-guard serve`: the authenticating, policy-enforcing gateway in front of Ollama."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ollama_guard.gateway.config import load_config


@click.command("serve")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with a [gateway] table (default: /etc/ollama-guard/config.toml when it "
                   "exists; flags override it; OLLAMA_GUARD_* variables override both).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Address to listen on (default 127.0.0.1:11435; port 0 picks a free port).")
@click.option("--upstream", default=None, metavar="URL", help="Ollama's URL (default http://127.0.0.1:11434).")
@click.option("--db", default=None, metavar="URL",
              help="Key and audit database: sqlite:///PATH or postgresql://… (default <data dir>/guard.db).")
@click.option("--redis", default=None, metavar="URL",
              help="Share rate, concurrency and token limits through Redis (needed for --workers > 1).")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Worker processes sharing the listening socket (default 1).")
def serve(
    config_file: Path | None,
    listen: str | None,
    upstream: str | None,
    db: str | None,
    redis: str | None,
    workers: int | None,
) -> None:
    """Run the gateway: API keys, roles, model allowlists, egress policy, limits and an audit log.

    Prints `ollama-guard gateway listening on URL` once it accepts connections.
    """
    from ollama_guard.gateway.server import serve as run_server

    config = load_config(
        config_file,
        {"listen": listen, "upstream": upstream, "db": db, "redis": redis, "workers": workers},
    )
    sys.exit(run_server(config))
