"""The `ollama-guard` command line: one group, each command in its own package."""

from __future__ import annotations

import importlib
import os
import sys

import click

from ollama_guard import __version__
from ollama_guard.errors import GuardError

# (module, attribute) of every registered command. Only commands that really work are listed.
COMMANDS: list[tuple[str, str]] = [
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ollama-guard", message="%(prog)s %(version)s")
def cli() -> None:
    """Find, fix and watch Ollama deployments.

    Exit codes: 0 nothing at or above --fail-on, 1 findings at or above it, 2 usage error or failure to run.
    """


for _module, _attr in COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns every failure into a one-line message and exit code 2."""
    try:
        rv = cli.main(args=argv, prog_name="ollama-guard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ollama-guard: aborted", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except GuardError as exc:
        click.echo(f"ollama-guard: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("ollama-guard: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # last resort: never a traceback unless asked for
        if os.environ.get("OLLAMA_GUARD_DEBUG"):
            raise
        click.echo(f"ollama-guard: error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
