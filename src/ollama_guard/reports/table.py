"""The human report for a terminal: summary, findings grouped by severity, then extra sections.

Every string coming from a finding is rendered as plain rich ``Text`` (never markup), so a title such as
``[bold]`` or an ANSI escape from a scanned host is shown literally, not interpreted.
"""

from __future__ import annotations

import shutil
from io import StringIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ollama_guard.console import stdout_is_terminal
from ollama_guard.findings import Finding, Report, ReportSection, Severity
from ollama_guard.reports.common import TOOL_NAME, TOOL_VERSION, severity_order

DEFAULT_WIDTH = 120

SEVERITY_STYLES: dict[Severity, str] = {
    Severity.CRITICAL: "bold white on red",
    Severity.HIGH: "bold red",
    Severity.MEDIUM: "bold yellow",
    Severity.LOW: "cyan",
    Severity.INFO: "dim",
}


def _clean(text: str) -> str:
    """Drop control characters (ANSI escapes from hostile banners) except newlines and tabs."""
    return "".join(ch for ch in text if ch in "\n\t" or (ch >= " " and ch != "\x7f"))


def _summary(report: Report) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    counts = report.counts()
    parts = Text()
    for sev in severity_order():
        if parts:
            parts.append("  ")
        parts.append(
            f"{sev.value} {counts[sev.value]}", style=SEVERITY_STYLES[sev] if counts[sev.value] else ""
        )
    grid.add_row("Findings", Text(f"{len(report.findings)} total   ").append_text(parts))
    for key, value in report.summary.items():
        grid.add_row(_clean(str(key)), Text(_clean(_format_value(value))))
    return grid


def _format_value(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(str(v) for v in value)
    return str(value)


def _finding_cell(f: Finding) -> Text:
    text = Text(_clean(f.title), style="bold")
    if f.detail:
        text.append("\n" + _clean(f.detail))
    if f.remediation:
        text.append("\nFix: ", style="green bold").append(_clean(f.remediation))
    if f.references:
        text.append("\n" + " ".join(_clean(r) for r in f.references[:3]), style="blue")
    return text


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(show_lines=True, expand=True, title="Findings", title_justify="left")
    table.add_column("Severity", no_wrap=True)
    # Rule ids stay whole (people grep for them); targets fold only past a readable width.
    rule_width = max((len(f.rule) for f in findings), default=4)
    target_width = min(max((len(f.target) for f in findings), default=6), 24)
    table.add_column("Rule", no_wrap=True, min_width=rule_width)
    table.add_column("Target", overflow="fold", min_width=target_width, ratio=1)
    table.add_column("Finding", ratio=4)
    for f in findings:
        table.add_row(
            Text(f.severity.value.upper(), style=SEVERITY_STYLES[f.severity]),
            Text(_clean(f.rule)),
            Text(_clean(f.target)),
            _finding_cell(f),
        )
    return table


def render_table(report: Report, *, width: int | None = None, color: bool | None = None) -> str:
    """The report as a rich table. Width: the terminal's, or 120 when not writing to one."""
    on_terminal = stdout_is_terminal()
    if width is None:
        width = shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns if on_terminal else DEFAULT_WIDTH
    use_color = on_terminal if color is None else color
    buf = StringIO()
    console = Console(
        file=buf,
        width=width,
        force_terminal=use_color,
        color_system="auto" if use_color else None,
        no_color=not use_color,
        highlight=False,
        soft_wrap=False,
    )
    header = Text(f"{TOOL_NAME} {TOOL_VERSION} — {report.command}", style="bold")
    console.print(Panel(Group(header, _summary(report)), expand=True))
    for section in report.lead_sections():
        console.print(_section_table(section))
    findings = report.sorted_findings()
    if findings:
        console.print(_findings_table(findings))
    else:
        console.print(Text("No findings.", style="green bold"))
    for section in report.trailing_sections():
        console.print(_section_table(section))
    return buf.getvalue()


def _section_table(section: ReportSection) -> Table:
    table = Table(title=_clean(section.title), title_justify="left", expand=True, show_lines=False)
    for column in section.columns:
        table.add_column(_clean(column), overflow="fold")
    width_cols = len(section.columns)
    for row in section.rows:
        cells = [*row[:width_cols], *[""] * (width_cols - len(row))]
        table.add_row(*(Text(_clean(str(cell))) for cell in cells))
    return table
