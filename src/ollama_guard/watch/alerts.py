"""From findings the engine changed to alerts: one per rule and target within a de-duplication window,
a follow-up at once when a finding escalates (its severity rises), and an update with the new count when
it is still active after the window.

An alert is the finding (the same object ``investigate`` reports) plus ``source``, ``first_seen``,
``last_seen``, ``count`` (matching events so far), ``alert`` (``new``, ``escalated`` or ``update``) and,
for a follow-up, ``previous_severity``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ollama_guard.findings import Severity
from ollama_guard.investigate.engine import Accumulator, Engine, iso
from ollama_guard.investigate.report import _finding

NEW = "new"
ESCALATED = "escalated"
UPDATE = "update"


@dataclass(slots=True)
class _Sent:
    acc: Accumulator
    at: float  # clock() of the last alert for this rule and target
    severity: Severity
    count: int


def build_alert(acc: Accumulator, engine: Engine, kind: str,
                previous: Severity | None = None) -> dict[str, Any]:
    alert = _finding(acc).to_json()
    alert.update(
        {
            "source": ",".join(sorted(acc.sources)) or acc.target,
            "first_seen": iso(acc.first),
            "last_seen": iso(acc.last),
            "count": acc.matches,
            "alert": kind,
        }
    )
    if previous is not None:
        alert["previous_severity"] = previous.value
    return alert


class Alerter:
    def __init__(self, window: float, min_severity: Severity = Severity.LOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.min_severity = min_severity
        self.clock = clock
        self.suppressed = 0
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._held: set[tuple[str, str]] = set()  # suppressed changes, sent as an update after the window

    def collect(self, engine: Engine) -> list[dict[str, Any]]:
        """Alerts for the findings changed since the last call (clears ``engine.touched``)."""
        now = self.clock()
        keys = engine.touched
        if self._held:
            due = {k for k in self._held if now - self._sent[k].at >= self.window}
            keys = keys | due
        if not keys:
            return []
        out = []
        for key in sorted(keys):
            acc = engine.accumulators.get(key)
            if acc is None or not acc.severity.at_least(self.min_severity):
                continue
            alert = self._decide(key, acc, now, engine)
            if alert is not None:
                out.append(alert)
        engine.touched.clear()
        return out

    def _decide(self, key: tuple[str, str], acc: Accumulator, now: float,
                engine: Engine) -> dict[str, Any] | None:
        sent = self._sent.get(key)
        if sent is None:
            self._sent[key] = _Sent(acc, now, acc.severity, acc.matches)
            return build_alert(acc, engine, NEW)
        if acc.severity.rank > sent.severity.rank:
            previous = sent.severity
            sent.acc, sent.at, sent.severity, sent.count = acc, now, acc.severity, acc.matches
            self._held.discard(key)
            return build_alert(acc, engine, ESCALATED, previous)
        if acc is not sent.acc:  # the engine forgot the old finding and started a new one
            sent.acc, sent.count = acc, 0
        if now - sent.at >= self.window and acc.matches > sent.count:
            kind = NEW if sent.count == 0 else UPDATE
            sent.at, sent.severity, sent.count = now, acc.severity, acc.matches
            self._held.discard(key)
            return build_alert(acc, engine, kind)
        if key in engine.touched:
            self.suppressed += 1
            self._held.add(key)
        return None

    def expire(self) -> None:
        """Forget rule/target pairs not alerted for two windows (memory bounded by active attackers)."""
        now = self.clock()
        for key in [k for k, s in self._sent.items() if now - s.at > 2 * self.window]:
            del self._sent[key]
            self._held.discard(key)
