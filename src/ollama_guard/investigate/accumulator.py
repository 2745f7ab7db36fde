"""One finding being built (``Accumulator``): every hit of a rule for one target, with bounded evidence.

At most ``MAX_SAMPLES`` sample lines (and the last one) and ``MAX_WINDOWS`` activity windows are kept,
however many events match.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import REQUEST, Event
from ollama_guard.investigate.rules import Rule
from ollama_guard.investigate.tally import MAX_ENDPOINT_KEYS, CountsView, EndpointCounts

MAX_SAMPLES = 5
MAX_WINDOWS = 5


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Accumulator(CountsView):
    """One finding being built: all hits of a rule for one target."""

    rule: Rule
    target: str
    severity: Severity
    client_class: str = ""
    matches: int = 0
    triggers: int = 0
    first: datetime | None = None
    last: datetime | None = None
    counts: EndpointCounts = field(default_factory=EndpointCounts)
    models: Counter[str] = field(default_factory=Counter)
    # model data moved by this finding's own push / pull requests (not the client's other requests)
    pushed_bytes: int = 0
    pulled_bytes: int = 0
    _windows: list[dict[str, Any]] = field(default_factory=list)
    windows_dropped: int = 0
    samples: list[str] = field(default_factory=list)
    _last_event: Event | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)

    def add(self, event: Event, severity: Severity) -> None:
        if severity.rank > self.severity.rank:
            self.severity = severity
        self.matches += 1
        self.sources.add(event.source)
        if event.time is not None:
            if self.first is None or event.time < self.first:
                self.first = event.time
            if self.last is None or event.time > self.last:
                self.last = event.time
        if event.kind == REQUEST:
            self.counts.add(event.method, event.path, event.status)
            if event.model and (event.model in self.models or len(self.models) < MAX_ENDPOINT_KEYS):
                self.models[event.model] += 1
            moved = event.detail.get("approx_bytes") if event.detail else None
            if moved:
                if event.path == "/api/push":
                    self.pushed_bytes += moved
                elif event.path == "/api/pull":
                    self.pulled_bytes += moved
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(f"{event.where}: {event.raw}")
        else:
            self._last_event = event

    @property
    def last_sample(self) -> str:
        e = self._last_event
        return f"{e.where}: {e.raw}" if e is not None else ""

    def window(self, start: datetime | None, end: datetime | None, events: int, how: str,
               gap: float = 0.0) -> None:
        """Record activity in [start, end]; it extends the last window when it is within ``gap``
        seconds of it, so a long burst is one window rather than many."""
        self.triggers += 1
        if self._windows and start is not None:
            last = self._windows[-1]
            end_prev = last["_end"]
            if end_prev is not None and (start <= end_prev or (start - end_prev).total_seconds() <= gap):
                if end is not None and end > end_prev:
                    last["_end"] = end
                last["events"] += events
                return
        if len(self._windows) < MAX_WINDOWS:
            self._windows.append({"_start": start, "_end": end, "events": events, "trigger": how})
        else:
            self.windows_dropped += 1

    @property
    def windows(self) -> list[dict[str, Any]]:
        return [
            {"start": iso(w["_start"]), "end": iso(w["_end"]), "events": w["events"], "trigger": w["trigger"]}
            for w in self._windows
        ]


