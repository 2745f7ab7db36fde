"""Correlation state per (rule, correlation, client): one small class per ``correlate`` type of the rules.

Each keeps a bounded window — ``event_count`` the last N events, ``value_count`` at most ``MAX_VALUES``
distinct values, ``sum`` ten buckets, ``sequence`` one partial chain per step, ``spike`` counts per
window — and ``add`` returns the events that made it fire (else None); ``newest`` says when it last saw
one, so idle state can be forgotten.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

from ollama_guard.investigate.accumulator import MAX_SAMPLES
from ollama_guard.investigate.events import Event
from ollama_guard.investigate.rules import Correlation
from ollama_guard.investigate.tally import endpoint_key

MAX_VALUES = 4096


class EventCount:
    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.events: deque[Event] = deque(maxlen=max(1, int(corr.gte)))

    def add(self, event: Event) -> list[Event] | None:
        events = self.events
        events.append(event)
        if len(events) == events.maxlen and span(events[0], event) <= self.window:
            fired = list(events)
            events.clear()
            return fired
        return None

    def newest(self) -> datetime | None:
        return self.events[-1].time if self.events else None


class ValueCount:
    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.gte = int(corr.gte)
        self.field = corr.field or "endpoint"
        self.values: dict[str, Event] = {}

    def add(self, event: Event) -> list[Event] | None:
        value = field_of(event, self.field)
        values = self.values
        values.pop(value, None)
        values[value] = event
        while values:  # drop the oldest (insertion order) while expired or too many
            key = next(iter(values))
            if span(values[key], event) > self.window or len(values) > MAX_VALUES:
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


class SumState:
    BUCKETS = 10

    def __init__(self, corr: Correlation) -> None:
        self.window = corr.seconds
        self.width = self.window / self.BUCKETS
        self.gte = corr.gte
        self.field = corr.field or "latency"
        self.buckets: deque[list[Any]] = deque()  # [start time, total, count, first event, last event]

    def add(self, event: Event) -> list[Event] | None:
        value = float((event.latency if self.field == "latency" else field_of(event, self.field)) or 0)
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


class SequenceState:
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
                if chain is not None and span(chain[0], event) <= self.window:
                    chain.append(event)
                    if len(chain) > MAX_SAMPLES:
                        del chain[1]  # keep the first step and the latest ones
                else:
                    self.chains[0] = [event]
                return None
            prev = self.chains[i - 1]
            if prev is not None and span(prev[0], event) <= self.window:
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


class Spike:
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


STATE_TYPES = {
    "event_count": EventCount,
    "value_count": ValueCount,
    "sum": SumState,
    "sequence": SequenceState,
    "spike": Spike,
}


def span(a: Event, b: Event) -> float:
    ta, tb = a.time, b.time
    if ta is None or tb is None:
        return 0.0
    return abs((tb - ta).total_seconds())


def field_of(event: Event, name: str) -> Any:
    if name == "endpoint":
        return endpoint_key(event.method, event.path)
    return getattr(event, name)


def describe(corr: Correlation) -> str:
    if corr.type == "event_count":
        return f">= {int(corr.gte)} requests in {corr.window}"
    if corr.type == "value_count":
        return f">= {int(corr.gte)} distinct {corr.field or 'endpoint'} in {corr.window}"
    if corr.type == "sum":
        return f"total {corr.field} >= {corr.gte:g} in {corr.window}"
    if corr.type == "spike":
        return f">= {int(corr.gte)} in {corr.window} and > {corr.factor:g}x the client's usual volume"
    return f"sequence of {len(corr.steps)} steps within {corr.window}"
