"""Evaluates the rules over a time-ordered stream of events in one pass, with state per client only.

Two drivers feed it: ``investigate`` (a whole log, then the report) and ``watch`` (live, line by line:
``touched`` names the findings each event changed, ``expire`` forgets what went idle).

Memory: each correlation keeps at most a bounded window per (rule, client) — ``event_count`` the last N
times, ``value_count`` at most ``MAX_VALUES`` distinct values, ``sum`` ten buckets, ``sequence`` one
partial chain — and every client has one tally for the timeline (bounded number of endpoint keys).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import (
    CONFIG,
    CRASH,
    LISTENING,
    REQUEST,
    TRANSFER,
    ClientClassifier,
    Event,
)
from ollama_guard.investigate.rules import Correlation, Rule, parse_window

MAX_SAMPLES = 5
MAX_WINDOWS = 5
MAX_VALUES = 4096
MAX_ENDPOINT_KEYS = 40
MATCH_CACHE = 8192
SWEEP_EVERY = 20_000  # events between sweeps of expired per-client state
MAX_CONFIGS = 64  # server config lines remembered by a live engine
MAX_PENDING_TRANSFERS = 256  # per source, transfer lines waiting for their push/pull access line
SINGLE_GAP = 600.0  # seconds: single-event hits closer than this share one evidence window
MAX_HISTOGRAM_KEYS = 20_000  # minutes with requests kept per client; beyond, the client goes per hour
OTHER_ENDPOINTS = "(other)"


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint_key(method: str, path: str) -> str:
    return f"{method} {path}"


@dataclass(slots=True)
class EndpointCounts:
    """Requests per (method, path) — at most MAX_ENDPOINT_KEYS kept, the rest summed as "(other)" — and
    per status. Shared by the client timeline and each finding being built."""

    by_endpoint: dict[tuple[str, str], int] = field(default_factory=dict)
    other: int = 0
    by_status: dict[int, int] = field(default_factory=dict)

    def add(self, method: str, path: str, status: int, count: int = 1) -> None:
        key = (method, path)
        counts = self.by_endpoint
        if key in counts:
            counts[key] += count
        elif len(counts) < MAX_ENDPOINT_KEYS:
            counts[key] = count
        else:
            self.other += count
        statuses = self.by_status
        statuses[status] = statuses.get(status, 0) + count

    @property
    def endpoints(self) -> Counter[str]:
        out = Counter({endpoint_key(m, p): n for (m, p), n in self.by_endpoint.items()})
        if self.other:
            out[OTHER_ENDPOINTS] += self.other
        return out

    @property
    def statuses(self) -> Counter[str]:
        return Counter({str(k): v for k, v in self.by_status.items()})


@dataclass(slots=True)
class ClientTally:
    """Everything the timeline says about one client."""

    client: str
    client_class: str
    first: datetime | None = None
    last: datetime | None = None
    requests: int = 0
    latency: float = 0.0
    counts: EndpointCounts = field(default_factory=EndpointCounts)
    models: Counter[str] = field(default_factory=Counter)
    pushed_bytes: int = 0
    pulled_bytes: int = 0
    sources: set[str] = field(default_factory=set)
    # requests per minute (Unix time // 60 → count), for the timeline chart; per hour once too many.
    # A client seen in one minute only (most scanners) keeps it in two fields, without a dict.
    histogram: dict[int, int] | None = None
    minute0: int = -1
    count0: int = 0
    hourly: bool = False
    pushed_models: dict[str, int] | None = None  # models it pushed (audit log)

    def count_at(self, minute: int, n: int = 1) -> None:
        if self.hourly:
            minute -= minute % 60
        hist = self.histogram
        if hist is None:
            if self.minute0 == minute or self.minute0 < 0:
                self.minute0 = minute
                self.count0 += n
                return
            hist = self.histogram = {self.minute0: self.count0}
        hist[minute] = hist.get(minute, 0) + n
        if len(hist) > MAX_HISTOGRAM_KEYS and not self.hourly:
            self.hourly = True
            merged: dict[int, int] = {}
            for key, count in hist.items():
                merged[key - key % 60] = merged.get(key - key % 60, 0) + count
            self.histogram = merged

    @property
    def per_minute(self) -> dict[int, int]:
        """Requests per minute (Unix time // 60), per hour for a client with very many minutes."""
        if self.histogram is not None:
            return self.histogram
        return {self.minute0: self.count0} if self.count0 else {}

    def see(self, when: datetime | None, count: int = 1, last: datetime | None = None) -> None:
        self.requests += count
        last = last or when
        if when is not None and (self.first is None or when < self.first):
            self.first = when
        if last is not None and (self.last is None or last > self.last):
            self.last = last

    def add_request(self, event: Event) -> None:
        """One request event: ``see`` + sources + latency + endpoint and status counts in one call."""
        self.requests += 1
        when = event.time
        if when is not None:
            if self.first is None or when < self.first:
                self.first = when
            if self.last is None or when > self.last:
                self.last = when
            self.count_at(int(when.timestamp()) // 60)
        self.sources.add(event.source)
        self.latency += event.latency
        self.counts.add(event.method, event.path, event.status)

    @property
    def endpoints(self) -> Counter[str]:
        return self.counts.endpoints

    @property
    def statuses(self) -> Counter[str]:
        return self.counts.statuses


@dataclass
class Accumulator:
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
    def endpoints(self) -> Counter[str]:
        return self.counts.endpoints

    @property
    def statuses(self) -> Counter[str]:
        return self.counts.statuses

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


class _EventCount:
    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.events: deque[Event] = deque(maxlen=max(1, int(corr.gte)))

    def add(self, event: Event) -> list[Event] | None:
        events = self.events
        events.append(event)
        if len(events) == events.maxlen and _span(events[0], event) <= self.window:
            fired = list(events)
            events.clear()
            return fired
        return None

    def newest(self) -> datetime | None:
        return self.events[-1].time if self.events else None


class _ValueCount:
    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.gte = int(corr.gte)
        self.field = corr.field or "endpoint"
        self.values: dict[str, Event] = {}

    def add(self, event: Event) -> list[Event] | None:
        value = _field(event, self.field)
        values = self.values
        values.pop(value, None)
        values[value] = event
        while values:  # drop the oldest (insertion order) while expired or too many
            key = next(iter(values))
            if _span(values[key], event) > self.window or len(values) > MAX_VALUES:
                del values[key]
            else:
                break
        if len(values) >= self.gte:
            fired = sorted(self.values.values(), key=lambda e: (e.time is None, e.time, e.line))
            self.values.clear()
            return fired
        return None

    def newest(self) -> datetime | None:
        return next(reversed(self.values.values())).time if self.values else None


class _Sum:
    BUCKETS = 10

    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.width = self.window / self.BUCKETS
        self.gte = corr.gte
        self.field = corr.field or "latency"
        self.buckets: deque[list[Any]] = deque()  # [start time, total, count, first event, last event]

    def add(self, event: Event) -> list[Event] | None:
        value = float((event.latency if self.field == "latency" else _field(event, self.field)) or 0)
        t = event.time
        if self.buckets and t is not None and self.buckets[-1][0] is not None and (
            (t - self.buckets[-1][0]).total_seconds() < self.width
        ):
            bucket = self.buckets[-1]
            bucket[1] += value
            bucket[2] += 1
            bucket[4] = event
        else:
            self.buckets.append([t, value, 1, event, event])
        while len(self.buckets) > 1 and t is not None and self.buckets[0][0] is not None and (
            (t - self.buckets[0][0]).total_seconds() > self.window
        ):
            self.buckets.popleft()
        if sum([b[1] for b in self.buckets]) >= self.gte:
            fired = [self.buckets[0][3], self.buckets[-1][4]]
            fired[0].detail.setdefault("_count", sum(b[2] for b in self.buckets))
            self.buckets.clear()
            return fired
        return None

    def newest(self) -> datetime | None:
        return self.buckets[-1][4].time if self.buckets else None


class _Sequence:
    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.steps = corr.steps
        self.chains: list[list[Event] | None] = [None] * len(corr.steps)

    def add(self, event: Event) -> list[Event] | None:
        return self.add_matched(event, tuple(step.matches(event) for step in self.steps))

    def add_matched(self, event: Event, hits: tuple[bool, ...]) -> list[Event] | None:
        """``add`` with the steps the event matches already known (``hits[i]``: step i)."""
        for i in range(len(self.steps) - 1, -1, -1):
            if not hits[i]:
                continue
            if i == 0:
                chain = self.chains[0]
                if chain is not None and _span(chain[0], event) <= self.window:
                    chain.append(event)
                    if len(chain) > MAX_SAMPLES:
                        del chain[1]  # keep the first step and the latest ones
                else:
                    self.chains[0] = [event]
                return None
            prev = self.chains[i - 1]
            if prev is not None and _span(prev[0], event) <= self.window:
                chain = [*prev[-(MAX_SAMPLES - 1) :], event] if i < len(self.steps) - 1 else [*prev, event]
                if i == len(self.steps) - 1:
                    self.chains = [None] * len(self.steps)
                    return chain
                self.chains[i] = chain
                return None
        return None

    def newest(self) -> datetime | None:
        times = [chain[-1].time for chain in self.chains if chain and chain[-1].time is not None]
        return max(times) if times else None


class _Spike:
    """Counts per fixed window (aligned on the client's first event); fires when the current window
    reaches ``gte`` events and ``factor`` × the client's average over its earlier windows (idle windows
    count as zero), after ``history`` windows. Fires at most once per window."""

    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.gte = corr.gte
        self.factor = corr.factor
        self.history = corr.history
        self.origin: datetime | None = None
        self.index = 0  # current window number since origin
        self.count = 0
        self.past = 0  # events in earlier windows
        self.first: Event | None = None
        self.last: Event | None = None
        self.fired = False

    def add(self, event: Event) -> list[Event] | None:
        t = event.time
        if t is None:
            return None
        if self.origin is None:
            self.origin = t
        index = int((t - self.origin).total_seconds() // self.window) if t >= self.origin else self.index
        if index != self.index:
            self.past += self.count
            self.index, self.count, self.first, self.fired = index, 0, None, False
        self.count += 1
        self.first = self.first or event
        self.last = event
        if self.fired or self.index < self.history or self.count < self.gte:
            return None
        average = self.past / self.index
        if self.count > self.factor * average:
            self.fired = True
            assert self.first is not None
            self.first.detail.setdefault("_count", self.count)
            return [self.first, event]
        return None

    def newest(self) -> datetime | None:
        return self.last.time if self.last is not None else None


_STATE_TYPES = {
    "event_count": _EventCount,
    "value_count": _ValueCount,
    "sum": _Sum,
    "sequence": _Sequence,
    "spike": _Spike,
}


def _span(a: Event, b: Event) -> float:
    ta, tb = a.time, b.time
    if ta is None or tb is None:
        return 0.0
    return abs((tb - ta).total_seconds())


def _field(event: Event, name: str) -> Any:
    if name == "endpoint":
        return endpoint_key(event.method, event.path)
    return getattr(event, name)


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
        self._match_cache: dict[tuple[str, str, str, int, str, str], list[_Plan]] = {}
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
            if isinstance(state, _Spike):
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

    def _matching(self, event: Event, client_class: str) -> list[_Plan]:
        """What to do for each rule whose select matches (cached for requests: few distinct shapes)."""
        if event.kind != REQUEST:
            return self._plans(event, client_class)
        key = (client_class, event.method, event.path, event.status, event.decision, event.bind)
        hit = self._match_cache.get(key)
        if hit is None:
            hit = self._plans(event, client_class)
            if len(self._match_cache) >= MATCH_CACHE:
                self._match_cache.clear()
            self._match_cache[key] = hit
        return hit

    def _plans(self, event: Event, client_class: str) -> list[_Plan]:
        """For a request, everything here depends only on the match-cache key (class, method, path,
        status, decision, bind): the select, the severity (``adjust`` selects) and which sequence steps
        match."""
        plans = []
        for index, rule in enumerate(self.rules):
            if not rule.select.matches(event, client_class):
                continue
            severity = rule.severity if event.kind == CRASH else rule.severity_for(event, client_class)
            corrs = []
            for ci, corr in enumerate(rule.correlate):
                hits = tuple(step.matches(event) for step in corr.steps) if corr.type == "sequence" else None
                # a sequence state that no step of it matches is left untouched by the event
                corrs.append((ci, corr, hits, hits is not None and not any(hits)))
            plans.append(_Plan(index, rule, severity, tuple(corrs)))
        return plans

    def _evaluate(self, event: Event, client_class: str) -> None:
        is_request = event.kind == REQUEST
        for plan in self._matching(event, client_class):
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
                    state = _STATE_TYPES[corr.type](corr)
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
                    acc.window(fired[0].time, fired[-1].time, count - 1, _describe(corr), corr.seconds)
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


@dataclass(frozen=True, slots=True)
class _Plan:
    """A rule that matches an event shape: its severity for it and, per correlation, (position,
    correlation, which sequence steps match or None, whether the event can be skipped)."""

    index: int
    rule: Rule
    severity: Severity
    correlations: tuple[tuple[int, Correlation, tuple[bool, ...] | None, bool], ...]


def _describe(corr: Correlation) -> str:
    if corr.type == "event_count":
        return f">= {int(corr.gte)} requests in {corr.window}"
    if corr.type == "value_count":
        return f">= {int(corr.gte)} distinct {corr.field or 'endpoint'} in {corr.window}"
    if corr.type == "sum":
        return f"total {corr.field} >= {corr.gte:g} in {corr.window}"
    if corr.type == "spike":
        return f">= {int(corr.gte)} in {corr.window} and > {corr.factor:g}x the client's usual volume"
    return f"sequence of {len(corr.steps)} steps within {corr.window}"
