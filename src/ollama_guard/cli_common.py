"""Options and output handling shared by every finding-producing command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ollama_guard.errors import InputError

if TYPE_CHECKING:
    from ollama_guard.findings import Report

# Imported lazily (start-up time: a command's --help and its bad-usage errors need neither pydantic,
# which findings loads, nor rich, which console loads); still reachable here as before.
_LAZY_NAMES = {
    "Report": "ollama_guard.findings",
    "Severity": "ollama_guard.findings",
    "exit_code_for": "ollama_guard.findings",
}

FORMATS = ("table", "json", "sarif", "html", "markdown")
_EXTENSIONS = {
    ".json": "json",
    ".sarif": "sarif",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".txt": "table",
}
# Severity's values, most severe first (kept equal to ollama_guard.findings.Severity), then "never".
FAIL_ON_CHOICES = ["critical", "high", "medium", "low", "info", "never"]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (the same test as ollama_guard.console's, without
    importing rich)."""
    return sys.stdout.isatty()


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds --format, -o/--output and --fail-on to a command."""

    @click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS, case_sensitive=False),
        default=None,
        help="Output format (default: table on a terminal, json otherwise; or from -o's extension).",
    )
    @click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        default=None,
        help="Write the report to FILE instead of standard output.",
    )
    @click.option(
        "--fail-on",
        type=click.Choice(FAIL_ON_CHOICES, case_sensitive=False),
        default="high",
        show_default=True,
        help="Exit 1 when a finding at or above this severity exists ('never' to always exit 0).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def resolve_format(fmt: str | None, output: Path | None) -> str:
    if fmt:
        return fmt.lower()
    if output is not None:
        return _EXTENSIONS.get(output.suffix.lower(), "json")
    return "table" if stdout_is_terminal() else "json"


def emit_report(report: Report, fmt: str | None, output: Path | None, fail_on: str) -> int:
    """Render the report, write it where asked, and return the contract's exit code."""
    from ollama_guard.findings import exit_code_for
    from ollama_guard.reports import render

    resolved = resolve_format(fmt, output)
    # Colour only when the table goes straight to a terminal, never into a file.
    text = render(report, resolved, color=(output is None and stdout_is_terminal()) or None)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    return exit_code_for(report.findings, fail_on.lower())
