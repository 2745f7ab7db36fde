"""The incident timeline as an SVG drawing: requests per client over time, one row per client, with
each finding's attack window (first to last seen) shaded on its client's row and the findings about
the server itself (a crash, an exposed configuration) as vertical markers.

Drawn here, element by element (no chart library, no script): the page's Content-Security-Policy
allows none, and the drawing is also written as a standalone ``.svg``. Every text that comes from the
log (a client column can be any string an attacker put in ``X-Forwarded-For``) is escaped, and
characters XML cannot carry are shown as ``\\xNN``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

WIDTH = 1000
LABEL = 200  # the client column
RIGHT = 24
TOP = 58
ROW = 22
MAX_ROWS = 30
MAX_BINS = 120
BIN_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 20160, 43200, 129600, 525600)
CLASS_COLOURS = {"loopback": "#94a3b8", "trusted": "#94a3b8", "private": "#2563eb", "public": "#111827",
                 "unknown": "#6b7280"}
SEVERITY_COLOURS = {"critical": "#8b0000", "high": "#d32f2f", "medium": "#e69500", "low": "#1976d2",
                    "info": "#6b7280"}
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@dataclass
class Window:
    rule: str
    severity: str
    start: datetime
    end: datetime


@dataclass
class Row:
    client: str
    client_class: str
    histogram: dict[int, int]  # Unix minute → requests
    windows: list[Window] = field(default_factory=list)


@dataclass
class Marker:
    rule: str
    severity: str
    at: datetime
    label: str


def text(value: str, limit: int | None = None) -> str:
    """A log string made safe as SVG/XML character data or an attribute value."""
    value = _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _minute(t: datetime) -> int:
    return int(t.timestamp()) // 60


def _stamp(minute: float, span: int) -> str:
    t = datetime.fromtimestamp(minute * 60, UTC)
    if span <= 2 * 1440:
        return t.strftime("%m-%d %H:%M")
    if span <= 10 * 1440:
        return t.strftime("%Y-%m-%d %H:%M")
    return t.strftime("%Y-%m-%d") if span <= 3 * 365 * 1440 else t.strftime("%Y-%m")


def _width_label(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440} day" + ("s" if minutes > 1440 else "")
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def timeline_svg(rows: list[Row], markers: list[Marker], *, omitted: int = 0,
                 standalone: bool = False) -> str:
    """The chart for ``rows`` (at most MAX_ROWS are drawn; ``omitted`` more exist). Empty string when
    there is no time at all to draw."""
    rows = rows[:MAX_ROWS]
    minutes = [m for row in rows for m in row.histogram]
    minutes += [_minute(w.start) for row in rows for w in row.windows]
    minutes += [_minute(w.end) for row in rows for w in row.windows]
    minutes += [_minute(m.at) for m in markers]
    if not minutes:
        return ""
    first, last = min(minutes), max(minutes)
    span = last - first + 1
    width = next((w for w in BIN_MINUTES if math.ceil(span / w) <= MAX_BINS), BIN_MINUTES[-1])
    start = first - first % width
    bins = max(1, math.ceil((last + 1 - start) / width))
    plot = WIDTH - LABEL - RIGHT
    end_minute = start + bins * width
    height = TOP + ROW * max(1, len(rows)) + 54

    def x(minute: float) -> float:
        return LABEL + plot * (minute - start) / (end_minute - start)

    peak = max((n for row in rows for n in _binned(row.histogram, start, width).values()), default=1)
    out: list[str] = []
    if standalone:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
    title = (f"Requests per client over time (per {_width_label(width)}, UTC); shaded: attack windows, "
             "first to last request of each finding")
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline-chart" data-test="timeline-chart" '
               f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
               f'aria-label="{text(title)}" font-family="system-ui, sans-serif" font-size="11">')
    out.append(f"<title>{text(title)}</title>")
    out.append(f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    out.append(f'<text x="{LABEL}" y="16" font-size="13" font-weight="600" fill="#111827">'
               f"{text(title)}</text>")
    # time axis: ticks at bin boundaries, about eight labels
    step = max(1, math.ceil(bins / 8))
    axis_y = TOP - 8
    bottom = TOP + ROW * max(1, len(rows))
    for b in range(0, bins + 1, step):
        tx = x(start + b * width)
        out.append(f'<line class="tick" x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{bottom}" '
                   'stroke="#e5e7eb" stroke-width="1"/>')
        anchor = "start" if b == 0 else "end" if b == bins else "middle"
        out.append(f'<text x="{tx:.1f}" y="{axis_y - 4}" text-anchor="{anchor}" fill="#4b5563">'
                   f"{text(_stamp(start + b * width, span))}</text>")
    for i, row in enumerate(rows):
        top = TOP + i * ROW
        colour = CLASS_COLOURS.get(row.client_class, "#6b7280")
        out.append(f'<g class="client-row" data-client="{text(row.client)}" '
                   f'data-class="{text(row.client_class)}">')
        if i % 2:
            out.append(f'<rect x="{LABEL}" y="{top}" width="{plot}" height="{ROW}" fill="#f8fafc"/>')
        out.append(f'<text class="client-label" x="{LABEL - 8}" y="{top + ROW - 7}" text-anchor="end" '
                   f'fill="#111827">{text(row.client or "(empty)", 26)} '
                   f'<tspan fill="#6b7280">{text(row.client_class)}</tspan></text>')
        for w in row.windows:
            x0, x1 = x(_minute(w.start)), x(_minute(w.end) + 1)
            fill = SEVERITY_COLOURS.get(w.severity, "#6b7280")
            out.append(f'<rect class="attack-window" data-rule="{text(w.rule)}" '
                       f'data-severity="{text(w.severity)}" x="{x0:.1f}" y="{top + 1}" '
                       f'width="{max(3.0, x1 - x0):.1f}" height="{ROW - 2}" '
                       f'fill="{fill}" fill-opacity="0.22" stroke="{fill}" stroke-width="1">'
                       f"<title>{text(w.rule)} ({text(w.severity)}): {w.start:%Y-%m-%d %H:%M} – "
                       f"{w.end:%Y-%m-%d %H:%M} UTC</title></rect>")
        for b, n in sorted(_binned(row.histogram, start, width).items()):
            h = max(1.5, (ROW - 6) * math.log1p(n) / math.log1p(peak))
            bx = x(start + b * width)
            bw = max(1.0, plot / bins - 1)
            out.append(f'<rect class="bar" x="{bx:.1f}" y="{top + ROW - 3 - h:.1f}" width="{bw:.1f}" '
                       f'height="{h:.1f}" fill="{colour}"><title>{text(row.client, 60)}: {n} request(s) from '
                       f"{_stamp(start + b * width, 0)} UTC</title></rect>")
        out.append("</g>")
    for m in markers:
        mx = x(_minute(m.at) + 0.5)
        fill = SEVERITY_COLOURS.get(m.severity, "#6b7280")
        out.append(f'<line class="event-marker" data-rule="{text(m.rule)}" x1="{mx:.1f}" y1="{TOP - 4}" '
                   f'x2="{mx:.1f}" y2="{bottom}" stroke="{fill}" stroke-width="2" stroke-dasharray="4 3">'
                   f"<title>{text(m.rule)} ({text(m.severity)}) at {m.at:%Y-%m-%d %H:%M:%S} UTC: "
                   f"{text(m.label, 200)}</title></line>")
    legend_y = bottom + 22
    items = [("bar", CLASS_COLOURS["public"], "public"), ("bar", CLASS_COLOURS["private"], "private"),
             ("bar", CLASS_COLOURS["loopback"], "owner (loopback, trusted)"),
             ("window", SEVERITY_COLOURS["high"], "attack window (finding; colour: severity)"),
             ("marker", SEVERITY_COLOURS["medium"], "server event")]
    out.append(f'<text x="{LABEL - 8}" y="{legend_y - 1}" text-anchor="end" fill="#374151">'
               "requests (log scale):</text>")
    lx = LABEL
    for kind, colour, label in items:
        if kind == "marker":
            out.append(f'<line x1="{lx + 5}" y1="{legend_y - 11}" x2="{lx + 5}" y2="{legend_y + 2}" '
                       f'stroke="{colour}" stroke-width="2" stroke-dasharray="4 3"/>')
        else:
            opacity = ' fill-opacity="0.22"' if kind == "window" else ""
            out.append(f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="10" fill="{colour}"{opacity} '
                       f'stroke="{colour}"/>')
        out.append(f'<text x="{lx + 17}" y="{legend_y - 1}" fill="#374151">{text(label)}</text>')
        lx += 30 + int(6.2 * len(label))
    if omitted:
        out.append(f'<text x="{LABEL}" y="{legend_y + 18}" fill="#6b7280">{omitted} more client(s) not drawn '
                   "(the timeline table and the JSON report list them)</text>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _binned(histogram: dict[int, int], start: int, width: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for minute, n in histogram.items():
        b = (minute - start) // width
        out[b] = out.get(b, 0) + n
    return out
