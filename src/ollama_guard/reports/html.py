"""The standalone HTML report: one self-contained page (inline CSS, no scripts), autoescaped."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from ollama_guard.findings import Report
from ollama_guard.reports.common import (
    TOOL_NAME,
    TOOL_VERSION,
    finished_at,
    iso_time,
    jsonable,
    severity_order,
)

# C0/C1 control characters (bar tab and newline) and DEL: a hostile server's strings must not carry
# terminal escapes or invisible bytes into a page someone may later `cat` or paste.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(value: Any) -> Any:
    """Jinja `finalize`: shows control characters as \\xNN text instead of passing them through."""
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


@cache
def _environment() -> Environment:
    # autoescape is ON for everything: finding text comes from scanned hosts and model files.
    return Environment(
        loader=PackageLoader("ollama_guard.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_visible,
    )


def render_html(report: Report) -> str:
    counts = report.counts()
    findings = [
        {
            "finding": f,
            "evidence": json.dumps(jsonable(f.evidence), indent=2, ensure_ascii=False, sort_keys=True)
            if f.evidence
            else "",
        }
        for f in report.sorted_findings()
    ]
    summary_extra = [
        (str(k), json.dumps(jsonable(v), ensure_ascii=False) if isinstance(v, dict | list) else str(v))
        for k, v in report.summary.items()
    ]
    template = _environment().get_template("report.html.j2")
    return template.render(
        tool_name=TOOL_NAME,
        tool_version=TOOL_VERSION,
        command=report.command,
        started_at=iso_time(report.started_at),
        finished_at=iso_time(finished_at(report)),
        total=len(report.findings),
        counts=[(s.value, counts[s.value]) for s in severity_order()],
        summary_extra=summary_extra,
        findings=findings,
        lead_sections=report.lead_sections(),
        sections=report.trailing_sections(),
    )
