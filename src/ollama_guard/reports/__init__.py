"""Report renderers: one module per output format, all reachable through `render(report, fmt)`."""

from __future__ import annotations

from collections.abc import Callable

from ollama_guard.errors import InputError
from ollama_guard.findings import Report

FORMATS: tuple[str, ...] = ("table", "json", "sarif", "html", "markdown")


def _renderer(fmt: str) -> Callable[[Report], str]:
    # Imported lazily so that `--format json` never pays for jinja2 or rich.
    if fmt == "table":
        from ollama_guard.reports.table import render_table

        return render_table
    if fmt == "json":
        from ollama_guard.reports.json_report import render_json

        return render_json
    if fmt == "sarif":
        from ollama_guard.reports.sarif import render_sarif

        return render_sarif
    if fmt == "html":
        from ollama_guard.reports.html import render_html

        return render_html
    if fmt == "markdown":
        from ollama_guard.reports.markdown import render_markdown

        return render_markdown
    raise InputError(f"unknown report format {fmt!r} (expected one of: {', '.join(FORMATS)})")


def render(report: Report, fmt: str, *, color: bool | None = None) -> str:
    """The report as text in one of FORMATS (always ends with a newline).

    `color` only affects the table: None = colour when standard output is a terminal. Pass False when
    the text goes to a file.
    """
    name = fmt.strip().lower()
    if name == "table":
        from ollama_guard.reports.table import render_table

        text = render_table(report, color=color)
    else:
        text = _renderer(name)(report)
    return text if text.endswith("\n") else text + "\n"


__all__ = ["FORMATS", "render"]
