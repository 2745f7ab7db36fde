"""Lines and events in, alerts out: one parser per source, the investigate engine, the alerter.

The engine is the one ``investigate`` uses; here it is fed as lines arrive, and every ``EXPIRE_EVERY``
seconds it forgets what has been idle longer than ``idle`` (default: twice the longest rule window), so a
watch that runs for months holds state only for the clients active in that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from ollama_guard.investigate.engine import Engine
from ollama_guard.investigate.events import ClientClassifier, Event
from ollama_guard.investigate.parse import LineParser, ParseStats
from ollama_guard.investigate.rules import Rule
from ollama_guard.watch.alerts import Alerter

EXPIRE_EVERY = 10.0  # seconds of wall time between expiry sweeps


def longest_window(rules: tuple[Rule, ...]) -> float:
    return max((c.seconds for r in rules for c in r.correlate), default=0.0)


class Pipeline:
    def __init__(self, rules: tuple[Rule, ...], classifier: ClientClassifier, tz: tzinfo, alerter: Alerter,
                 on_alert: Callable[[dict[str, Any]], None], *, idle: float | None = None) -> None:
        self.engine = Engine(rules, classifier)
        self.classifier = classifier
        self.tz = tz
        self.alerter = alerter
        self.on_alert = on_alert
        self.idle = idle if idle is not None else max(2 * longest_window(rules), alerter.window, 600.0)
        self.stats: dict[str, ParseStats] = {}
        self.alerts = 0
        self.worst: dict[str, Any] | None = None  # the most severe alert so far (for --once's exit code)
        self._parsers: dict[str, LineParser] = {}
        self._linenos: dict[str, int] = {}
        self._now: datetime | None = None  # newest event time seen
        self._expired_at = time.monotonic()
        self._minutes: dict[str, dict[str, int | None]] = {}
        self._fast: Any = None
        from ollama_guard.investigate import fastscan

        if fastscan.available():  # the owner's bulk traffic counted, not parsed (as investigate does)
            from ollama_guard.investigate.analyze import FAST_ENDPOINTS, quiet_predicate

            self._fast = fastscan.FastConfig(FAST_ENDPOINTS, classifier.classify,
                                             quiet_predicate(rules, classifier),
                                             has_trusted=bool(classifier.trusted))

    def _parser(self, source: str) -> LineParser:
        parser = self._parsers.get(source)
        if parser is None:
            parser = LineParser(source, self.tz, self.stats.setdefault(source, ParseStats()))
            self._parsers[source] = parser
            self._linenos[source] = 0
        return parser

    def lines(self, source: str, lines: list[str]) -> None:
        parser = self._parser(source)
        n = self._linenos[source]
        feed = self.engine.feed
        newest = self._now
        for text in lines:
            n += 1
            event = parser.parse(text, n)
            if event is not None:
                feed(event)
                if event.time is not None and (newest is None or event.time > newest):
                    newest = event.time
        self._linenos[source] = n
        self._now = newest
        self.flush()

    def block(self, source: str, data: bytes) -> None:
        """Complete lines as read from a file: through investigate's block driver (fast scanner, then
        the parser for every line a rule may care about)."""
        if not data:
            return
        if self._fast is None:
            self.lines(source, data.decode("utf-8", "replace").removesuffix("\n").split("\n"))
            return
        from ollama_guard.investigate import fastscan
        from ollama_guard.investigate.analyze import feed_block

        parser = self._parser(source)
        scanned = fastscan.scan_block(data, self._fast)
        feed_block(self.engine, parser, scanned, self._linenos[source],
                   self._minutes.setdefault(source, {}))
        self._linenos[source] += scanned.lines
        newest = parser.last_time
        if newest is not None and (self._now is None or newest > self._now):
            self._now = newest
        self.flush()

    def skip(self, source: str, lines: int) -> None:
        """The first ``lines`` lines of the source were there before the watch began (not read)."""
        self._parser(source)
        self._linenos[source] += lines

    def reset(self, source: str) -> None:
        """The source's file was replaced or truncated: line numbers start again at 1."""
        self._parsers.pop(source, None)
        self._minutes.pop(source, None)
        self._parser(source)

    def events(self, events: list[Event]) -> None:
        stats = self.stats.setdefault("audit-db", ParseStats())
        for event in events:
            stats.lines += 1
            stats.requests += 1
            stats.see(event.time)
            self.engine.feed(event)
            if event.time is not None and (self._now is None or event.time > self._now):
                self._now = event.time
        self.flush()

    def flush(self) -> None:
        """Send the alerts for what changed; now and then, forget idle state."""
        for alert in self.alerter.collect(self.engine):
            self.alerts += 1
            if self.worst is None or _rank(alert) > _rank(self.worst):
                self.worst = alert
            self.on_alert(alert)
        clock = time.monotonic()
        if clock - self._expired_at >= EXPIRE_EVERY:
            self._expired_at = clock
            self.expire()

    def expire(self) -> None:
        if self._now is not None:
            self.engine.expire(self._now, self.idle)
        self.alerter.expire()

    @property
    def recognised(self) -> int:
        """Lines that were Ollama log lines or audit rows (requests, config, crashes, …)."""
        return sum(s.requests for s in self.stats.values()) + len(self.engine.configs) + self.engine.crashes


def _rank(alert: dict[str, Any]) -> int:
    from ollama_guard.findings import Severity

    return Severity(alert["severity"]).rank
