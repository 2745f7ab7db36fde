"""Evaluates the rules over a time-ordered stream of events in one pass, with state per client only.

Two drivers feed it: ``investigate`` (a whole log, then the report) and ``watch`` (live, line by line:
``touched`` names the findings each event changed, ``expire`` forgets what went idle).

What it keeps lives in its own modules: the timeline's counts per client (``investigate.tally``), the
findings being built (``investigate.accumulator``) and the bounded correlation state per (rule, client)
(``investigate.correlations``); which rules an event can touch is ``investigate.plans``. Memory is bounded
by distinct clients active within a window.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from ollama_guard.findings import Severity
from ollama_guard.investigate.accumulator import MAX_SAMPLES, MAX_WINDOWS, Accumulator, iso
from ollama_guard.investigate.correlations import MAX_VALUES, STATE_TYPES, Spike, describe
from ollama_guard.investigate.events import (
    CONFIG,
    CRASH,
    LISTENING,
    REQUEST,
    TRANSFER,
    ClientClassifier,
    Event,
)
from ollama_guard.investigate.plans import RulePlans
from ollama_guard.investigate.rules import Rule, parse_window
from ollama_guard.investigate.tally import (
    MAX_ENDPOINT_KEYS,
    MAX_HISTOGRAM_KEYS,
    OTHER_ENDPOINTS,
    ClientTally,
    EndpointCounts,
    endpoint_key,
)

__all__ = [  # the engine, and what moved out of this module (still importable from here)
    "MAX_ENDPOINT_KEYS",
    "MAX_HISTOGRAM_KEYS",
    "MAX_SAMPLES",
    "MAX_VALUES",
    "MAX_WINDOWS",
    "OTHER_ENDPOINTS",
    "Accumulator",
    "ClientTally",
    "EndpointCounts",
    "Engine",
    "endpoint_key",
    "iso",
]

SWEEP_EVERY = 20_000  # events between sweeps of expired per-client state
MAX_CONFIGS = 64  # server config lines remembered by a live engine
MAX_PENDING_TRANSFERS = 256  # per source, transfer lines waiting for their push/pull access line
SINGLE_GAP = 600.0  # seconds: single-event hits closer than this share one evidence window


class Engine:
    """Feed events in time order with ``feed``; ``accumulators`` then hold the findings."""

    def __init__(
        self, rules: tuple[Rule, ...], classifier: ClientClassifier, since: datetime | None = None
    ) -> None:
        self.rules = rules
        self.classifier = classifier
        self.since = since
        self.tallies: dict[str, ClientTally] = {}
        self.accumulators: dict[tuple[str, str], Accumulator] = {}
        self._states: dict[tuple[int, int, str], Any] = {}
        self._triggered: set[tuple[str, str]] = set()
        self._recent: deque[Event] = deque(maxlen=64)
        self._pending_transfers: dict[str, list[dict[str, Any]]] = {}
        self._preamble: dict[tuple[str, str], Event] = {}  # config in force when --since starts
        self.configs: list[dict[str, Any]] = []
        self.versions: dict[str, str] = {}
        self.crashes = 0
        self._plans = RulePlans(rules)
        self._fed = 0
        self.touched: set[tuple[str, str]] = set()  # (rule, target) of findings changed since cleared
        self._max_window = [max((c.seconds for c in r.correlate), default=0.0) for r in rules]

    # --- input ---------------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        if self.since is not None and event.time is not None and event.time < self.since:
            if event.kind in (CONFIG, LISTENING):
                self._preamble[(event.source, event.kind)] = event
            return
        if event.kind == REQUEST:
            self._request(event)
        elif event.kind == TRANSFER:
            self._pending_transfers.setdefault(event.source, []).append(event.detail)
            return
        elif event.kind in (CONFIG, LISTENING):
            self._config(event)
        elif event.kind == CRASH:
            self.crashes += 1
        self._evaluate(event, self.classifier.classify(event.client) if event.client else "")
        self._fed += 1
        if self._fed % SWEEP_EVERY == 0 and event.time is not None:
            self._sweep(event.time)

    def _sweep(self, now: datetime, spike_idle: float | None = None) -> None:
        """Forget correlation state whose newest event is older than its window: it can no longer fire,
        and a fresh state behaves the same. Keeps memory to the clients active within a window.
        A spike's baseline is the client's whole history: kept, unless idle for ``spike_idle`` seconds."""
        stale = []
        for key, state in self._states.items():
            limit = state.window
            if isinstance(state, Spike):
                if spike_idle is None:
                    continue
                limit = max(spike_idle, state.window)
            newest = state.newest()
            if newest is None or (now - newest).total_seconds() > limit:
                stale.append(key)
        for key in stale:
            del self._states[key]

    def expire(self, now: datetime, idle: float) -> None:
        """Live use: forget findings, client tallies and correlation state (spike baselines included)
        with nothing newer than ``idle`` seconds before ``now``, so memory is bounded by the clients
        active within that time, however long the watch runs. A rule that fires again afterwards
        starts a new finding."""
        self._sweep(now, spike_idle=idle)
        for key, acc in list(self.accumulators.items()):
            if acc.last is None or (now - acc.last).total_seconds() > idle:
                del self.accumulators[key]
                self._triggered.discard(key)
                self.touched.discard(key)
        for client, tally in list(self.tallies.items()):
            if tally.last is None or (now - tally.last).total_seconds() > idle:
                del self.tallies[client]
        del self.configs[:-MAX_CONFIGS]
        for pending in self._pending_transfers.values():
            del pending[:-MAX_PENDING_TRANSFERS]

    def add_tally(
        self,
        client: str,
        first: datetime | None,
        last: datetime | None,
        counts: dict[tuple[str, str, int], int],
        source: str,
        minutes: dict[int, int] | None = None,
    ) -> None:
        """Merge requests the fast path counted without making events (owner traffic that no rule
        can match), with their counts per minute."""
        if self.since is not None and last is not None and last < self.since:
            return
        tally = self._tally(client)
        tally.sources.add(source)
        tally.see(first, sum(counts.values()), last)
        for (method, path, status), n in counts.items():
            tally.counts.add(method, path, status, n)
        for minute, n in (minutes or {}).items():
            tally.count_at(minute, n)

    def finish(self) -> None:
        for event in self._preamble.values():
            self._config(event)
            self._evaluate(event, "")
        self._preamble.clear()

    # --- internals -------------------------------------------------------------------------------

    def _tally(self, client: str) -> ClientTally:
        tally = self.tallies.get(client)
        if tally is None:
            tally = ClientTally(client, self.classifier.classify(client))
            self.tallies[client] = tally
        return tally

    def _request(self, event: Event) -> None:
        tally = self.tallies.get(event.client) or self._tally(event.client)
        tally.add_request(event)
        if event.model:
            tally.models[event.model] += 1
            if event.path == "/api/push":
                pushed = tally.pushed_models
                if pushed is None:
                    pushed = tally.pushed_models = {}
                if event.model in pushed or len(pushed) < MAX_ENDPOINT_KEYS:
                    pushed[event.model] = pushed.get(event.model, 0) + 1
        if event.method == "POST" and event.path in ("/api/push", "/api/pull"):
            moved = self._pending_transfers.pop(event.source, [])
            direction = "upload" if event.path == "/api/push" else "download"
            mine = [t for t in moved if t["direction"] == direction]
            if mine:
                total = sum(t["approx_bytes"] for t in mine)
                event.detail["transfers"] = mine
                event.detail["approx_bytes"] = total
                if direction == "upload":
                    tally.pushed_bytes += total
                else:
                    tally.pulled_bytes += total
        self._recent.append(event)

    def _config(self, event: Event) -> None:
        record = {"source": event.source, "line": event.line, "time": iso(event.time), **event.detail}
        record.pop("facts", None)
        self.configs.append(record)
        if event.kind == LISTENING and event.detail.get("version"):
            self.versions[event.source] = event.detail["version"]

    def _evaluate(self, event: Event, client_class: str) -> None:
        is_request = event.kind == REQUEST
        for plan in self._plans.matching(event, client_class):
            rule = plan.rule
            index = plan.index
            target = event.client if is_request else event.source
            if event.kind == CRASH:
                self._crash(rule, event)
                continue
            severity = plan.severity
            if not plan.correlations:
                acc = self._acc(rule, target, severity, client_class)
                acc.add(event, severity)
                if event.kind in (CONFIG, LISTENING):
                    acc.extra.update({k: v for k, v in event.detail.items() if k != "facts"})
                acc.window(event.time, event.time, 1, "single", SINGLE_GAP)
                continue
            key = (rule.id, target)
            states = self._states
            for ci, corr, hits, skip in plan.correlations:
                if skip:
                    continue
                skey = (index, ci, target)
                state = states.get(skey)
                if state is None:
                    state = STATE_TYPES[corr.type](corr)
                    states[skey] = state
                fired = state.add(event) if hits is None else state.add_matched(event, hits)
                if fired:
                    acc = self._acc(rule, target, severity, client_class)
                    if key not in self._triggered:
                        self._triggered.add(key)
                        for e in fired:
                            if e is not event:
                                acc.add(e, severity)
                    count = fired[0].detail.pop("_count", len(fired))
                    acc.window(fired[0].time, fired[-1].time, count - 1, describe(corr), corr.seconds)
            if key in self._triggered:
                acc = self.accumulators[key]
                self.touched.add(key)
                acc.add(event, severity)
                acc.window(event.time, event.time, 1, "continued", self._max_window[index])
                acc.triggers -= 1

    def _crash(self, rule: Rule, event: Event) -> None:
        severity = rule.severity
        escalated: Event | None = None
        if rule.preceded_by is not None and event.time is not None:
            within = parse_window(rule.preceded_by.within)
            for prior in reversed(self._recent):
                if prior.time is None or prior.source != event.source:
                    continue
                gap = (event.time - prior.time).total_seconds()
                if gap > within:
                    break
                if rule.preceded_by.select.matches(prior, self.classifier.classify(prior.client)):
                    escalated = prior
                    severity = rule.preceded_by.severity
                    break
        acc = self._acc(rule, event.source, severity, "")
        acc.add(event, severity)
        acc.window(event.time, event.time, 1, event.detail.get("crash", "crash"))
        crashes = acc.extra.setdefault("crashes", [])
        if len(crashes) < MAX_WINDOWS:
            crashes.append(
                {
                    "time": iso(event.time),
                    "where": event.where,
                    "message": event.raw,
                    "trace": event.detail.get("trace", []),
                    "preceding_lines": event.detail.get("context", []),
                    "suspect_request": f"{escalated.where}: {escalated.raw}" if escalated else None,
                    "suspect_client": escalated.client if escalated else None,
                }
            )

    def _acc(self, rule: Rule, target: str, severity: Severity, client_class: str) -> Accumulator:
        key = (rule.id, target)
        self.touched.add(key)
        acc = self.accumulators.get(key)
        if acc is None:
            acc = Accumulator(rule, target, severity, client_class)
            self.accumulators[key] = acc
        return acc
