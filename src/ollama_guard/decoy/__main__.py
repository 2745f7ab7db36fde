"""`python -m ollama_guard.decoy …`: the decoy command on its own (same options as `ollama-guard decoy`),
without loading the other commands — what the test helpers start."""

from __future__ import annotations

import sys

import click

from ollama_guard.decoy.cli import decoy
from ollama_guard.errors import GuardError


def main() -> None:
    try:
        decoy.main(prog_name="ollama-guard decoy", standalone_mode=False)
    except click.exceptions.Abort:
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
        sys.exit(130)


if __name__ == "__main__":
    main()
