"""The Markdown report (for tickets, pull requests, wikis): summary, findings table, details, sections.

Text from findings and sections is escaped for table cells: ``|`` becomes ``\\|`` (likewise backslash,
backtick and brackets, so no link can be injected), line breaks become ``<br>``, and ``< > &`` become HTML
entities so hostile strings (model names, banners) cannot inject HTML into a rendered page.
"""

from __future__ import annotations

import json

from ollama_guard.findings import Report, ReportSection
from ollama_guard.reports.common import (
    TOOL_NAME,
    TOOL_VERSION,
    finished_at,
    human_key,
    human_value,
    iso_time,
    jsonable,
    severity_order,
    text_parts,
)


def md_escape(value: object) -> str:
    """Escape a value for use inside a Markdown table cell or a one-line paragraph."""
    text = str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\|`[]":
        text = text.replace(ch, "\\" + ch)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")
    return "".join(ch for ch in text if ch >= " " or ch == "\t")


def md_text(value: object) -> str:
    """Like md_escape, but `code spans` and fenced blocks of a finding text become Markdown code spans
    (their content is literal in Markdown, so only the pipe needs escaping there, for table cells)."""
    out = []
    for part in text_parts(str(value)):
        if part.kind == "text":
            out.append(md_escape(part.text))
            continue
        code = "".join(ch for ch in part.text if ch >= " " or ch == "\n").replace("|", "\\|")
        code = " ".join(code.split("\n")) if part.kind == "block" else code
        out.append(f"`{code}`" if code.strip() else "")
    return "".join(out)


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    if not columns:
        return []
    lines = ["| " + " | ".join(md_escape(c) for c in columns) + " |"]
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for row in rows:
        cells = [*row[: len(columns)], *[""] * (len(columns) - len(row))]
        lines.append("| " + " | ".join(md_text(c) for c in cells) + " |")
    return lines


def render_markdown(report: Report) -> str:
    lines = [f"# {TOOL_NAME} {md_escape(report.command)} report", ""]
    lines.append(
        f"{TOOL_NAME} {TOOL_VERSION} · started {iso_time(report.started_at)} · "
        f"finished {iso_time(finished_at(report))}"
    )
    lines += ["", "## Summary", ""]
    counts = report.counts()
    summary_rows = [["total", str(len(report.findings))]]
    summary_rows += [[s.value, str(counts[s.value])] for s in severity_order()]
    summary_rows += [[human_key(k), human_value(v)] for k, v in report.summary.items()]
    lines += _table(["Item", "Value"], summary_rows)

    for section in report.lead_sections():
        lines += _section(section)
    findings = report.sorted_findings()
    lines += ["", "## Findings", ""]
    if not findings:
        lines.append("No findings.")
    else:
        rows = [[f.severity.value, f.rule, f.target, f.title] for f in findings]
        lines += _table(["Severity", "Rule", "Target", "Title"], rows)
        lines += ["", "### Details", ""]
        for i, f in enumerate(findings, 1):
            lines.append(f"#### {i}. {md_text(f.title)}")
            lines.append("")
            lines.append(
                f"- **Severity:** {f.severity.value} · **Rule:** {md_escape(f.rule)} · "
                f"**Target:** {md_escape(f.target)}"
            )
            if f.detail:
                lines.append(f"- **Detail:** {md_text(f.detail)}")
            if f.remediation:
                lines.append(f"- **Remediation:** {md_text(f.remediation)}")
            if f.evidence:
                evidence = json.dumps(jsonable(f.evidence), ensure_ascii=False, sort_keys=True)
                lines.append(f"- **Evidence:** {md_escape(evidence)}")
            for ref in f.references:
                lines.append(f"- {md_escape(ref)}")
            lines.append("")

    for section in report.trailing_sections():
        lines += _section(section)
    return "\n".join(lines).rstrip("\n") + "\n"


def _section(section: ReportSection) -> list[str]:
    return ["", f"## {md_escape(section.title)}", "", *_table(section.columns, section.rows)]
