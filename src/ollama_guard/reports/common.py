"""What every report format shares: tool identity, severity counts, times, JSON-safe values."""

from __future__ import annotations

import re
from dataclasses import dataclass
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


# --- human text ------------------------------------------------------------------------------------------

# Fenced blocks (```ini\n…```) first, then inline spans (`ollama serve`): the two kinds of code that finding
# texts carry. A lone backtick stays a backtick.
_CODE = re.compile(r"```[\w+-]*\n?(?P<block>.*?)```|`(?P<span>[^`\n]+)`", re.DOTALL)


@dataclass(frozen=True)
class TextPart:
    """A piece of a finding text: plain prose, an inline code span or a code block."""

    text: str
    kind: str = "text"  # "text" | "code" | "block"


def text_parts(text: str) -> list[TextPart]:
    """Split a finding text on its backtick code spans and fenced blocks (what people write in tickets)."""
    parts: list[TextPart] = []
    pos = 0
    for match in _CODE.finditer(text):
        if match.start() > pos:
            parts.append(TextPart(text[pos : match.start()]))
        if match.group("block") is not None:
            parts.append(TextPart(match.group("block").rstrip("\n"), "block"))
        else:
            parts.append(TextPart(match.group("span"), "code"))
        pos = match.end()
    if pos < len(text):
        parts.append(TextPart(text[pos:]))
    return parts


def plain_text(text: str) -> str:
    """A finding text with its backtick markup removed (for the terminal table and plain formats)."""
    out = []
    for part in text_parts(text):
        if part.kind == "block":
            out.append("\n" + part.text.strip("\n") + "\n")
        else:
            out.append(part.text)
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def human_key(key: object) -> str:
    """``duration_seconds`` → ``duration seconds``."""
    return str(key).replace("_", " ")


def human_value(value: Any) -> str:
    """A summary value as a person reads it: ``yes``/``no``, ``none``, ``ollama 2, vllm 1`` — never a
    Python or JSON repr."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, dict):
        if not value:
            return "none"
        return ", ".join(f"{human_key(k)} {_nested(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            return "none"
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return ", ".join(_nested(v) for v in items)
    return str(value)


def _nested(value: Any) -> str:
    text = human_value(value)
    return f"({text})" if isinstance(value, dict | list | tuple | set | frozenset) and value else text
