"""The JSON report: tool, the command's own data, findings, summary and times — stable key order."""

from __future__ import annotations

import json
from typing import Any

from ollama_guard.findings import Report
from ollama_guard.reports.common import (
    RESERVED_KEYS,
    finished_at,
    iso_time,
    jsonable,
    summary_dict,
    tool_info,
)


def report_document(report: Report) -> dict[str, Any]:
    """The JSON document as a dict (key order is part of the output)."""
    doc: dict[str, Any] = {"tool": tool_info(report)}
    for key, value in report.data.items():
        if key not in RESERVED_KEYS:
            doc[key] = jsonable(value)
    doc["findings"] = [f.to_json() for f in report.sorted_findings()]
    doc["summary"] = jsonable(summary_dict(report))
    doc["started_at"] = iso_time(report.started_at)
    doc["finished_at"] = iso_time(finished_at(report))
    return doc


def render_json(report: Report) -> str:
    return json.dumps(report_document(report), indent=2, ensure_ascii=False) + "\n"
