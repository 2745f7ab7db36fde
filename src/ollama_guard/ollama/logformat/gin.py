"""gin's access line, one per finished request: parse it (``parse_gin``, ``parse_gin_fields``) and print it
(``format_gin``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ollama_guard.ollama.logformat.golang import go_quote, go_unquote, parse_go_duration

GIN_MARKER = "[GIN] "
_GIN_RE = re.compile(
    r"\[GIN\] (\d{4}/\d\d/\d\d - \d\d:\d\d:\d\d) \|\s*(\d{3})\s*\|\s*(\S+)\s*\|"
    r"([^|]*)\|\s*([A-Z]+)\s+(\"(?:[^\"\\]|\\.)*\")\s*$"
)
_DAY_CACHE: dict[str, datetime | None] = {}


@dataclass(frozen=True, slots=True)
class GinLine:
    """One access-log line. ``time`` is naive: gin prints local time without a zone."""

    time: datetime
    status: int
    latency: float  # seconds
    client: str
    method: str
    path: str  # decoded, without the query
    query: str  # decoded, without "?"


# (stamp "YYYY/MM/DD - HH:MM:SS", status, latency seconds, client, method, path, query): plain values,
# cheap to pickle between processes; the stamp is known to be a valid date and time.
GinFields = tuple[str, int, float, str, str, str, str]


def parse_gin_fields(message: str) -> GinFields | None:
    """``parse_gin`` without building the datetime and the record (same acceptance)."""
    m = _GIN_RE.search(message)
    if m is None:
        return None
    stamp, status, latency_text, client, method, target = m.groups()
    latency = parse_go_duration(latency_text)
    if latency is None or gin_time(stamp) is None:
        return None
    if "\\" in target:
        path, _, query = go_unquote(target).partition("?")
    else:
        path, _, query = target[1:-1].partition("?")
    return stamp, int(status), latency, client.strip(), method, path, query


def parse_gin(message: str) -> GinLine | None:
    """Parse a gin line (prefix and colours already removed); None when it is not one or is malformed."""
    fields = parse_gin_fields(message)
    if fields is None:
        return None
    stamp, status, latency, client, method, path, query = fields
    return GinLine(gin_time(stamp), status, latency, client, method, path, query)  # type: ignore[arg-type]


def gin_time(stamp: str) -> datetime | None:
    """``2024/08/19 - 14:13:01`` → naive datetime (the date part is cached: a log has few days)."""
    day = _DAY_CACHE.get(stamp[:10], False)
    if day is False:
        try:
            day = datetime(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]))
        except ValueError:
            day = None
        if len(_DAY_CACHE) > 4096:
            _DAY_CACHE.clear()
        _DAY_CACHE[stamp[:10]] = day
    if day is None:
        return None
    try:
        return day.replace(hour=int(stamp[13:15]), minute=int(stamp[16:18]), second=int(stamp[19:21]))  # type: ignore[union-attr]
    except ValueError:
        return None


def format_gin(line: GinLine, latency_text: str, *, color: bool = False) -> str:
    """The line gin would print (used by tests and the benchmark generator)."""
    target = line.path + ("?" + line.query if line.query else "")
    stamp = line.time.strftime("%Y/%m/%d - %H:%M:%S")
    lat = latency_text.rjust(13)
    if not color:
        return (f"[GIN] {stamp} | {line.status:3d} | {lat} | {line.client:>15} | "
                f"{line.method:<7}  {go_quote(target)}")
    return (f"[GIN] {stamp} |\x1b[97;42m {line.status:3d} \x1b[0m| {lat} | {line.client:>15} |"
            f"\x1b[97;46m {line.method:<7} \x1b[0m {go_quote(target)}")
