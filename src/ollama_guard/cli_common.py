"""Options and output handling shared by every finding-producing command.

``report_options`` adds the report options to a command (``--format``, ``-o`` (repeatable), ``--fail-on``,
``--severity``, ``--ignore-file``, ``-q/--quiet``, ``--no-color``). The command itself only sees ``fmt``,
``output`` (a tuple of paths) and ``fail_on``; the others are kept for ``emit_report`` and the progress
bars in ``ReportSettings`` (see ``current_settings``).
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    ".markdown": "markdown",
    ".txt": "table",
}
# Severity's values, most severe first (kept equal to ollama_guard.findings.Severity), then "never".
FAIL_ON_CHOICES = ["critical", "high", "medium", "low", "info", "never"]
SEVERITY_NAMES = FAIL_ON_CHOICES[:-1]
DEFAULT_IGNORE_FILE = ".ollama-guard-ignore"
_SETTINGS_KEY = "ollama_guard.report_settings"


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        import importlib

        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ReportSettings:
    """The report options a command does not handle itself."""

    quiet: bool = False
    color: bool = True  # False: --no-color (NO_COLOR is honoured by rich itself)
    severities: frozenset[str] | None = None  # None: every severity is reported
    severity_text: str = ""
    ignore_file: Path | None = None  # None: ./.ollama-guard-ignore when it exists
    ignore_file_given: bool = False


def current_settings() -> ReportSettings:
    """The running command's report settings (defaults outside a command, e.g. in library use)."""
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        settings = ctx.meta.get(_SETTINGS_KEY)
        if isinstance(settings, ReportSettings):
            return settings
        ctx = ctx.parent
    return ReportSettings()


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (the same test as ollama_guard.console's, without
    importing rich)."""
    return sys.stdout.isatty()


def parse_severity_filter(value: str) -> frozenset[str]:
    """``high,critical`` (exactly these) or ``medium+`` (medium and above) → the severities to report."""
    text = value.strip().lower()
    if text.endswith("+") and "," not in text:
        floor = text[:-1].strip()
        if floor not in SEVERITY_NAMES:
            raise click.BadParameter(_severity_help(value), param_hint="--severity")
        return frozenset(SEVERITY_NAMES[: SEVERITY_NAMES.index(floor) + 1])
    names = [part.strip() for part in text.split(",")]
    if not names or any(name not in SEVERITY_NAMES for name in names):
        raise click.BadParameter(_severity_help(value), param_hint="--severity")
    return frozenset(names)


def _severity_help(value: str) -> str:
    return (
        f"{value!r} is not a severity list: use names from {', '.join(SEVERITY_NAMES)} separated by "
        "commas (high,critical), or one name and + for that severity and above (medium+)"
    )


def format_for(fmt: str | None, output: Path | None) -> str:
    """The format of one output: --format when given, else the file's extension; stdout: table on a
    terminal, json otherwise. An unknown extension without --format is a usage error."""
    if fmt:
        return fmt.lower()
    if output is None:
        return "table" if stdout_is_terminal() else "json"
    name = output.name.lower()
    if name.endswith(".sarif.json"):
        return "sarif"
    found = _EXTENSIONS.get(output.suffix.lower())
    if found is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise click.UsageError(
            f"cannot tell the report format of {output} from its extension (known: {known}); "
            "add --format FORMAT"
        )
    return found


def resolve_format(fmt: str | None, output: Path | None) -> str:
    """Kept for callers of the one-output API: the format of `output` (or of stdout)."""
    return format_for(fmt, output)


def _outputs(output: Path | Sequence[Path] | None) -> list[Path]:
    if output is None:
        return []
    if isinstance(output, Path | str):
        return [Path(output)]
    return [Path(p) for p in output]


def report_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the report options to a command (see the module docstring)."""

    @click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS, case_sensitive=False),
        default=None,
        help="Output format for every output (default: from each -o file's extension; on standard "
        "output table on a terminal, json otherwise).",
    )
    @click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        multiple=True,
        metavar="FILE",
        help="Write the report to FILE (mode 0600) instead of standard output; repeatable: one report, "
        "several files, each in the format of its extension (.json .sarif .html .md .txt).",
    )
    @click.option(
        "--fail-on",
        type=click.Choice(FAIL_ON_CHOICES, case_sensitive=False),
        default="high",
        show_default=True,
        help="Exit 1 when a reported finding is at or above this severity ('never' to always exit 0).",
    )
    @click.option(
        "--severity",
        "severity_filter",
        metavar="LIST",
        default=None,
        help="Report only these severities: a list (high,critical) or a minimum (medium+).",
    )
    @click.option(
        "--ignore-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=f"Accepted findings to leave out (default: ./{DEFAULT_IGNORE_FILE} when it exists). "
        "Lines: RULE TARGET-GLOB EXPIRES(YYYY-MM-DD|never) REASON.",
    )
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars, notes or closing line on stderr.")
    @click.option(
        "--no-color", is_flag=True, help="No colour in the table and progress bars (also NO_COLOR)."
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        severity_filter = kwargs.pop("severity_filter")
        ignore_file = kwargs.pop("ignore_file")
        settings = ReportSettings(
            quiet=kwargs.pop("quiet"),
            color=not kwargs.pop("no_color"),
            severities=parse_severity_filter(severity_filter) if severity_filter is not None else None,
            severity_text=severity_filter or "",
            ignore_file=ignore_file,
            ignore_file_given=ignore_file is not None,
        )
        # Usage errors before any work: a bad extension must not cost a long scan first.
        for path in kwargs["output"]:
            format_for(kwargs["fmt"], path)
        if ignore_file is not None and not ignore_file.is_file():
            raise click.BadParameter(f"{ignore_file} does not exist", param_hint="--ignore-file")
        click.get_current_context().meta[_SETTINGS_KEY] = settings
        return func(*args, **kwargs)

    return wrapper


def write_private(path: Path, text: str) -> None:
    """Write a report readable by its owner only (mode 0600): it may hold evidence (config lines,
    model names, client addresses). A new file is written beside the target and renamed over it, so
    a reader never sees half a report and an old file's wider mode is not inherited. Devices and pipes
    (``-o /dev/stdout``) are written through."""
    try:
        existing = path.stat()
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            with path.open("w", encoding="utf-8") as handle:
                handle.write(text)
            return
        import tempfile  # here, not at start-up: --help and usage errors never need it

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None


def emit_report(
    report: Report, fmt: str | None, output: Path | Sequence[Path] | None, fail_on: str
) -> int:
    """Filter the report (ignore file, --severity), render it once per format, write it where asked,
    say what was written, and return the contract's exit code (from the findings reported)."""
    from ollama_guard.findings import exit_code_for
    from ollama_guard.ignorefile import apply_filters
    from ollama_guard.reports import render

    settings = current_settings()
    shown = apply_filters(report, settings, warn=warning)
    outputs = _outputs(output)
    if not outputs:
        resolved = format_for(fmt, None)
        # Colour only when the table goes straight to a terminal, never into a file.
        color = (True if stdout_is_terminal() else None) if settings.color else False
        text = render(shown, resolved, color=color)
        click.echo(text, nl=not text.endswith("\n"))
        ignored = shown.summary.get("ignored")
        if isinstance(ignored, int) and ignored:  # never silent: an ignore file may not be the user's own
            entries = {i["ignored"]["entry"].rsplit(":", 1)[0] for i in shown.data.get("ignored", [])}
            note(f"{ignored} accepted finding(s) left out by {', '.join(sorted(entries))}")
    else:
        rendered: dict[str, str] = {}
        for path in outputs:
            resolved = format_for(fmt, path)
            if resolved not in rendered:
                rendered[resolved] = render(shown, resolved, color=False)
            write_private(path, rendered[resolved])
        note(closing_line(shown, outputs))
    return exit_code_for(shown.findings, fail_on.lower())


def closing_line(report: Report, outputs: Sequence[Path]) -> str:
    """``wrote incident.html, incident.sarif: 2 critical, 3 high, 1 medium`` (+ how many were ignored)."""
    counts = report.counts()
    found = ", ".join(f"{counts[name]} {name}" for name in SEVERITY_NAMES if counts[name])
    line = f"wrote {', '.join(str(p) for p in outputs)}: {found or 'no findings'}"
    ignored = report.summary.get("ignored")
    if isinstance(ignored, int) and ignored:
        line += f" ({ignored} ignored)"
    hidden = report.summary.get("not_shown")
    if isinstance(hidden, int) and hidden:
        line += f" ({hidden} below --severity)"
    return line


def warning(text: str) -> None:
    """A warning on stderr, shown even with -q (an expired acceptance must not pass unseen)."""
    click.echo(f"ollama-guard: {text}", err=True)


def note(text: str) -> None:
    """One line on stderr for the person running the command; -q silences it."""
    if not current_settings().quiet:
        click.echo(f"ollama-guard: {text}", err=True)
