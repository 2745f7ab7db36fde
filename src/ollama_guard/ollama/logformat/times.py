"""Times and zones: RFC 3339 stamps (slog, ``docker logs -t``) and the ``--tz`` values the commands accept."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo


def parse_rfc3339(value: str) -> datetime | None:
    """RFC 3339 with up to nanosecond precision (Python keeps microseconds)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", value.strip())
    if m is None:
        return None
    frac = (m.group(3) or "")[:6].ljust(6, "0")
    zone = m.group(4) or "Z"
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{frac}{zone}")
    except ValueError:
        return None


def parse_tz(value: str | None) -> tzinfo:
    """``UTC``, ``local``, ``+02:00``/``-0530`` or an IANA name (``Europe/Paris``)."""
    if value is None or value.upper() in ("UTC", "Z"):
        return UTC
    if value.lower() == "local":
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", value)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(-delta if m.group(1) == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
