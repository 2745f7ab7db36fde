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
    ("ollama_guard.audit.cli", "audit"),
    ("ollama_guard.audit.cli", "harden"),
    ("ollama_guard.decoy.cli", "decoy"),
    ("ollama_guard.ollama.advisories_cli", "advisories"),
    ("ollama_guard.scan.cli", "scan"),
    ("ollama_guard.verify.cli", "verify"),
    ("ollama_guard.gateway.cli", "serve"),
    ("ollama_guard.gateway.keys_cli", "keys"),
    ("ollama_guard.investigate.cli", "investigate"),
    ("ollama_guard.gateway.logs_cli", "logs"),
    ("ollama_guard.watch.cli", "watch"),
    ("ollama_guard.gateway.bans_cli", "bans"),
    ("ollama_guard.investigate.rules_cli", "rules"),
]


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (or help lists it): fast start-up,
    and a heavy dependency of one command never slows the others."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(attr for _, attr in COMMANDS)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module, attr in COMMANDS:
            if attr == cmd_name:
                command = getattr(importlib.import_module(module), attr)
                return command if isinstance(command, click.Command) else None
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="ollama-guard", message="%(prog)s %(version)s")
@click.option("--no-color", is_flag=True, help="No colour in any command's output (the same as NO_COLOR=1).")
def cli(no_color: bool) -> None:
    """Find, fix and watch Ollama deployments.

    Exit codes: 0 nothing at or above --fail-on, 1 findings at or above it, 2 usage error or failure to run.
    """
    if no_color:  # rich honours NO_COLOR in every console created from here on (tables, bars, help)
        os.environ["NO_COLOR"] = "1"


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns every failure into a one-line message and exit code 2."""
    run(cli, argv, "ollama-guard")


def run(command: click.Command, argv: list[str] | None, prog_name: str) -> None:
    """Runs a click command with the product's error contract (also for `python -m ollama_guard.decoy`)."""
    try:
        rv = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ollama-guard: aborted", err=True)
        sys.exit(2)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help is the useful answer
        exc.show()
        sys.exit(2)
    except click.UsageError as exc:  # one line, like every other error (not click's 4-line usage block)
        where = exc.ctx.command_path if exc.ctx is not None else "ollama-guard"
        message = " ".join(exc.format_message().split())
        click.echo(f"ollama-guard: error: {message} (see '{where} --help')", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"ollama-guard: error: {' '.join(exc.format_message().split())}", err=True)
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
