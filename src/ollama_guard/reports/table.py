"""The human report for a terminal: summary, findings by severity, then extra sections.

Every string coming from a finding is rendered as plain rich ``Text`` (never markup), so a title such as
``[bold]`` or an ANSI escape from a scanned host is shown literally, not interpreted.

Nothing is ever cropped: text wraps between words and a word longer than its column folds onto the next
line. When a table's columns cannot all fit the terminal with their longest words whole (an 80-column
terminal), its rows are shown stacked instead (one block per row: column name, then value), and findings
are shown as blocks (severity, rule and target on one line, the text below) rather than a squeezed table.
"""

from __future__ import annotations

import shutil
import textwrap
from io import StringIO

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

from ollama_guard.console import stdout_is_terminal
from ollama_guard.findings import Finding, Report, ReportSection, Severity
from ollama_guard.reports.common import (
    TOOL_NAME,
    TOOL_VERSION,
    human_key,
    human_value,
    plain_text,
    severity_order,
)

DEFAULT_WIDTH = 120
WIDE_FINDINGS = 100  # narrower terminals get findings as blocks
MAX_TABLE_ROWS = 300  # longer sections (a timeline of thousands of clients) are stacked: rich's table
#                       layout costs milliseconds per row
SEVERITY_WIDTH = max(len(s.value) for s in Severity)

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


def _prose(text: str) -> str:
    """A finding text for the terminal: control characters dropped, backtick markup shown plain."""
    return plain_text(_clean(text))


def _badge(severity: Severity) -> Text:
    return Text(severity.value.upper(), style=SEVERITY_STYLES[severity], no_wrap=True, overflow="ignore")


def _summary(report: Report) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    counts = report.counts()
    parts = Text(f"{len(report.findings)} total ")
    for sev in severity_order():
        parts.append("  ")
        # one severity and its count never break apart
        style = SEVERITY_STYLES[sev] if counts[sev.value] else ""
        parts.append(f"{sev.value}\u00a0{counts[sev.value]}", style=style)
    grid.add_row("findings", parts)
    for key, value in report.summary.items():
        grid.add_row(_clean(human_key(key)), Text(_clean(human_value(value))))
    return grid


def _finding_text(f: Finding, *, with_title: bool = True) -> Text:
    text = Text(overflow="fold")
    if with_title:
        text.append(_prose(f.title), style="bold")
    if f.detail:
        text.append(("\n" if text else "") + _prose(f.detail))
    if f.remediation:
        text.append("\nFix: ", style="green bold").append(_prose(f.remediation))
    for ref in f.references[:3]:
        text.append("\n" + _clean(ref), style="blue")
    return text


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(show_lines=True, expand=True, title="Findings", title_justify="left")
    table.add_column("Severity", no_wrap=True, min_width=SEVERITY_WIDTH)
    # Rule ids stay whole (people grep for them); targets fold only past a readable width.
    rule_width = max((len(f.rule) for f in findings), default=4)
    target_width = min(max((len(f.target) for f in findings), default=6), 24)
    table.add_column("Rule", no_wrap=True, min_width=rule_width)
    table.add_column("Target", overflow="fold", min_width=target_width, ratio=1)
    table.add_column("Finding", overflow="fold", ratio=4)
    for f in findings:
        table.add_row(_badge(f.severity), Text(_clean(f.rule)), Text(_clean(f.target)), _finding_text(f))
    return table


def _findings_blocks(findings: list[Finding]) -> Group:
    """Findings one below the other: for terminals too narrow for a four-column table."""
    parts: list[RenderableType] = [Text("Findings", style="italic")]
    for f in findings:
        head = Text(overflow="fold")
        head.append_text(_badge(f.severity)).append("  ")
        head.append(_clean(f.rule), style="bold").append("  ").append(_clean(f.target))
        parts += [Rule(style="dim"), head, Padding(_finding_text(f), (0, 0, 0, 2))]
    return Group(*parts)


def render_table(report: Report, *, width: int | None = None, color: bool | None = None) -> str:
    """The report for a terminal. Width: the terminal's, or 120 when not writing to one."""
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
        console.print(section_renderable(section, width))
    findings = report.sorted_findings()
    if not findings:
        console.print(Text("No findings.", style="green bold"))
    elif width >= WIDE_FINDINGS:
        console.print(_findings_table(findings))
    else:
        console.print(_findings_blocks(findings))
    for section in report.trailing_sections():
        console.print(section_renderable(section, width))
    return buf.getvalue()


def _cells(section: ReportSection) -> list[list[str]]:
    n = len(section.columns)
    return [[_prose(str(c)) for c in [*row[:n], *[""] * (n - len(row))]] for row in section.rows]


def _fits(section: ReportSection, rows: list[list[str]], width: int) -> bool:
    """Whether every column can show its longest word whole (borders and padding: 3 per column + 1)."""
    need = 1
    for index, column in enumerate(section.columns):
        words = [w for cell in [column, *(r[index] for r in rows)] for w in cell.split()]
        need += max((len(w) for w in words), default=1) + 3
    return need <= width


def section_renderable(section: ReportSection, width: int) -> RenderableType:
    """A table of the section when its columns fit `width` with their longest words whole, else its rows
    stacked (column name, value)."""
    rows = _cells(section)
    title = _clean(section.title)
    if len(rows) <= MAX_TABLE_ROWS and _fits(section, rows, width):
        table = Table(title=title, title_justify="left", expand=True, show_lines=False)
        for column in section.columns:
            table.add_column(_clean(column), overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))
        return table
    return _stacked(title, [_clean(c) for c in section.columns], rows, width)


def _stacked(title: str, columns: list[str], rows: list[list[str]], width: int) -> _Lines:
    """Rows one below the other, each value after its column's name, wrapped between words and folded
    inside words longer than the space. Laid out here, line by line, and handed to rich as finished
    lines: a timeline can have 10,000 rows, far too many for a table layout (or rich's wrapping) each."""
    label = min(max((len(c) for c in columns), default=0), max(width // 3, 1))
    room = max(width - label - 2, 10)
    wrapper = textwrap.TextWrapper(width=room, break_long_words=True, break_on_hyphens=False)
    lines: list[list[tuple[str, str]]] = [[(title, "italic")]]
    rule = [("─" * width, "dim")]
    for row in rows:
        lines.append(rule)
        for column, cell in zip(columns, row, strict=True):
            if not cell:
                continue
            wrapped = [piece for para in cell.split("\n") for piece in (wrapper.wrap(para) or [""])]
            lines.append([(column[:label].ljust(label), "bold"), ("  " + wrapped[0], "")])
            lines += [[(" " * (label + 2) + more, "")] for more in wrapped[1:]]
    return _Lines(lines)


class _Lines:
    """Finished lines of (text, style) pieces, rendered as they are (no wrapping by rich)."""

    def __init__(self, lines: list[list[tuple[str, str]]]) -> None:
        self.lines = lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        styles: dict[str, Style | None] = {}
        newline = Segment.line()
        for line in self.lines:
            for text, name in line:
                if name not in styles:
                    styles[name] = console.get_style(name) if name else None
                yield Segment(text, styles[name])
            yield newline
