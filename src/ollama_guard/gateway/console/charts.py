"""SVG charts drawn here (no chart library): stacked bars of allowed/refused requests with a token line.

Colours come from CSS classes (``bar-ok``, ``bar-deny``, ``line-tokens``, ``grid``, ``axis``) so the
console's light and dark themes style them; every bar carries a ``<title>`` for a hover tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ollama_guard.gateway.console.queries import Bucket

WIDTH, HEIGHT = 1180, 230
LEFT, RIGHT, TOP, BOTTOM = 48, 48, 16, 28


def _nice_step(value: int) -> int:
    """The smallest 1/2/5 × 10^n at or above ``value`` (at least 1): one grid step."""
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _nice_max(value: int, ticks: int = 4) -> int:
    """A top of scale at or above ``value`` that ``ticks`` whole, round steps divide."""
    return _nice_step(-(-max(value, 1) // ticks)) * ticks


def _short(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return str(n)


def usage_chart(buckets: Sequence[Bucket], *, hourly: bool, label: str) -> str:
    """An accessible SVG (role=img, aria-label) of requests per bucket and tokens."""
    n = max(len(buckets), 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    req_max = _nice_max(max((b.allowed + b.refused for b in buckets), default=0))
    tok_max = _nice_max(max((b.tokens for b in buckets), default=0))
    slot = plot_w / n
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'class="chart" aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
    ]
    for i in range(5):  # grid lines and left axis (requests)
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_short(req_max * i // 4)}</text>"
        )
        parts.append(
            f'<text class="axis tokens" x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}">'
            f"{_short(tok_max * i // 4)}</text>"
        )
    points: list[str] = []
    label_every = max(1, n // 8)
    for i, b in enumerate(buckets):
        x = LEFT + i * slot + (slot - bar_w) / 2
        ok_h = plot_h * b.allowed / req_max
        deny_h = plot_h * b.refused / req_max
        when = b.start.strftime("%Y-%m-%d %H:00" if hourly else "%Y-%m-%d")
        tip = f"{when} UTC: {b.allowed} allowed, {b.refused} refused, {b.tokens} tokens"
        base = TOP + plot_h
        parts.append(
            f'<g class="bucket"><title>{escape(tip)}</title>'
            f'<rect class="bar-ok" x="{x:.1f}" y="{base - ok_h:.1f}" width="{bar_w:.1f}" '
            f'height="{ok_h:.1f}"/>'
            f'<rect class="bar-deny" x="{x:.1f}" y="{base - ok_h - deny_h:.1f}" width="{bar_w:.1f}" '
            f'height="{deny_h:.1f}"/></g>'
        )
        points.append(f"{LEFT + i * slot + slot / 2:.1f},{base - plot_h * b.tokens / tok_max:.1f}")
        if i % label_every == 0:
            text = b.start.strftime("%H:00" if hourly else "%m-%d")
            parts.append(
                f'<text class="axis" x="{LEFT + i * slot + slot / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{text}</text>'
            )
    if points:
        parts.append(f'<polyline class="line-tokens" fill="none" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return "".join(parts)
