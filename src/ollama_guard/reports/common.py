"""What every report format shares: tool identity, severity counts, times, JSON-safe values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python

from ollama_guard import __version__
from ollama_guard.findings import Report, Severity

TOOL_NAME = "ollama-guard"
TOOL_VERSION = __version__
# Keys a command's `Report.data` cannot override in the JSON output.
RESERVED_KEYS = frozenset({"tool", "findings", "summary", "started_at", "finished_at"})


def tool_info(report: Report) -> dict[str, str]:
    return {"name": TOOL_NAME, "version": TOOL_VERSION, "command": report.command}


def severity_counts(report: Report) -> dict[str, int]:
    """{"critical": n, "high": n, "medium": n, "low": n, "info": n} (every severity present)."""
    return report.counts()


def summary_dict(report: Report) -> dict[str, Any]:
    """Counts by severity and the total, then the command's own summary entries."""
    out: dict[str, Any] = {"total": len(report.findings)}
    out.update(severity_counts(report))
    for key, value in report.summary.items():
        out.setdefault(key, value)
    return out


def finished_at(report: Report) -> datetime:
    return report.finished_at or datetime.now(UTC)


def iso_time(value: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix (what SARIF and most log tools expect)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Any value (paths, datetimes, sets, pydantic models) as plain JSON data."""
    return to_jsonable_python(value, fallback=str)


def severity_order() -> list[Severity]:
    return sorted(Severity, key=lambda s: -s.rank)
