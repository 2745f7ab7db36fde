"""What the timeline counts: requests per endpoint and status (``EndpointCounts``) and per client
(``ClientTally``).

Both are bounded: at most ``MAX_ENDPOINT_KEYS`` endpoints per client or finding (the rest summed as
"(other)"), and at most ``MAX_HISTOGRAM_KEYS`` minutes per client before it is counted per hour.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ollama_guard.investigate.events import Event

MAX_ENDPOINT_KEYS = 40
MAX_HISTOGRAM_KEYS = 20_000  # minutes with requests kept per client; beyond, the client goes per hour
OTHER_ENDPOINTS = "(other)"


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


class CountsView:
    """``endpoints`` and ``statuses`` of the ``counts`` a client tally or a finding keeps."""

    __slots__ = ()
    counts: EndpointCounts

    @property
    def endpoints(self) -> Counter[str]:
        return self.counts.endpoints

    @property
    def statuses(self) -> Counter[str]:
        return self.counts.statuses


@dataclass(slots=True)
class ClientTally(CountsView):
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
