"""`ollama-guard advisories`: the shipped advisory table, optionally only what affects one version."""

from __future__ import annotations

import json
import shutil
from io import StringIO

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ollama_guard.console import stdout_is_terminal
from ollama_guard.errors import InputError
from ollama_guard.ollama.advisories import Advisory, advisories_for, load_advisories
from ollama_guard.ollama.versions import InvalidVersion, OllamaVersion, parse_version

SEVERITY_STYLES = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
    "info": "dim",
}


def render_advisories_json(advisories: list[Advisory]) -> str:
    return json.dumps([a.to_json() for a in advisories], indent=2, ensure_ascii=False) + "\n"


WIDE = 110  # narrower terminals get the advisories as blocks


def _fixed(a: Advisory) -> str:
    return a.fixed or (f"none listed (likely {a.likely_fixed})" if a.likely_fixed else "none")


def render_advisories_table(advisories: list[Advisory], version: OllamaVersion | None) -> str:
    width = shutil.get_terminal_size((120, 24)).columns if stdout_is_terminal() else 120
    buf = StringIO()
    console = Console(file=buf, width=width, force_terminal=stdout_is_terminal(), soft_wrap=False)
    if version is None:
        caption = f"{len(advisories)} known Ollama advisories"
    elif version.is_dev:
        caption = (
            f"{len(advisories)} advisories affect {version} (a development build of unknown age: "
            "only advisories without a fix are listed)"
        )
    else:
        caption = f"{len(advisories)} advisories affect Ollama {version}"
    if width < WIDE:  # too narrow for six columns: one block per advisory, nothing cropped
        from ollama_guard.findings import ReportSection
        from ollama_guard.reports.table import section_renderable

        rows = [[a.id, a.severity.value, a.affected, _fixed(a), a.title, "\n".join(a.references)]
                for a in advisories]
        columns = ["ID", "Severity", "Affected", "Fixed", "Title", "References"]
        section = ReportSection(title="Ollama advisories", columns=columns, rows=rows)
        console.print(section_renderable(section, width))
        console.print(Text(caption, style="italic"))
        return buf.getvalue()
    table = Table(title="Ollama advisories", caption=caption, show_lines=True, expand=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Affected", max_width=14)
    table.add_column("Fixed", max_width=12)
    table.add_column("Title", ratio=3, min_width=24, overflow="fold")
    table.add_column("Reference", ratio=2, overflow="fold")
    for a in advisories:
        fixed = _fixed(a)
        more = len(a.references) - 1
        reference = a.url + (f"\n(+{more} more in --format json)" if more > 0 else "")
        table.add_row(
            Text(a.id),
            Text(a.severity.value, style=SEVERITY_STYLES[a.severity.value]),
            Text(a.affected),
            Text(fixed),
            Text(a.title),
            Text(reference),
        )
    console.print(table)
    return buf.getvalue()


@click.command("advisories")
@click.option(
    "--version",
    "version_text",
    metavar="V",
    default=None,
    help="List only the advisories that affect this Ollama version (e.g. 0.6.5, v0.5.0-rc2).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"], case_sensitive=False),
    default=None,
    help="Output format (default: table on a terminal, json otherwise).",
)
def advisories_command(version_text: str | None, fmt: str | None) -> None:
    """List known Ollama advisories (CVE/CNVD ids, severity, affected range, fix, references).

    With --version, only those that affect that version. Version 0.0.0 (an unstamped development
    build) is treated as newer than every release.
    """
    version: OllamaVersion | None = None
    if version_text is not None:
        try:
            version = parse_version(version_text)
        except InvalidVersion as exc:
            raise InputError(str(exc)) from None
    selected = load_advisories() if version is None else advisories_for(version)
    resolved = (fmt or ("table" if stdout_is_terminal() else "json")).lower()
    if resolved == "json":
        text = render_advisories_json(selected)
    else:
        text = render_advisories_table(selected, version)
    click.echo(text, nl=not text.endswith("\n"))


# The name cli.COMMANDS refers to.
advisories = advisories_command
