"""Prometheus metrics of one gateway process (served at `/-/metrics` to admin keys).

Each process has its own registry; with `--workers N` every worker reports its own counters (scrape
through a load balancer and sum, or run one worker per port).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
)

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST.encode("latin-1")


class GatewayMetrics:
    """Counters and histograms the request path updates; label values are bounded (route templates,
    decisions, key names — never raw paths)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ollama_guard_requests",
            "Requests answered by the gateway, by route template, decision and key name.",
            ("route", "decision", "key"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "ollama_guard_request_duration_seconds",
            "Time from request start to the last response byte, by route template.",
            ("route",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "ollama_guard_upstream_errors",
            "Upstream failures by kind (unavailable, timeout, broken).",
            ("kind",),
            registry=self.registry,
        )
        self.tokens = Counter(
            "ollama_guard_tokens",
            "Tokens reported by the upstream (prompt + completion), by key name.",
            ("key",),
            registry=self.registry,
        )
        # a plain count kept by the forward stage, read when scraped (a Gauge's inc/dec takes a lock:
        # two of those per request cost more than the count is worth between scrapes)
        self.proxying = 0
        self.in_flight = Gauge(
            "ollama_guard_requests_in_flight",
            "Requests currently being proxied to the upstream.",
            registry=self.registry,
        )
        self.in_flight.set_function(lambda: self.proxying)
        # refusals by the audit log's reason (a fixed set of code constants: bounded), automatic bans,
        # and two values read when scraped (set by the app once its services exist)
        self.refusals = Counter(
            "ollama_guard_refusals",
            "Requests refused by the gateway, by reason (no-key, bad-key, route-not-allowed, …).",
            ("reason",),
            registry=self.registry,
        )
        self.auto_bans = Counter(
            "ollama_guard_auto_bans",
            "Client addresses banned automatically after repeated authentication failures.",
            registry=self.registry,
        )
        self.bans_active = Gauge(
            "ollama_guard_bans_active",
            "Banned addresses and networks in force, as this process last read them.",
            registry=self.registry,
        )
        self._audit = _AuditCollector(dict)  # zeros until the recorder is attached (watch_audit)
        self.registry.register(self._audit)
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe(self, route: str, decision: str, key: str, seconds: float) -> None:
        child_key = (route, decision, key)
        child = self._request_children.get(child_key)
        if child is None:
            child = self.requests.labels(route, decision, key)
            self._request_children[child_key] = child
        child.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            hist = self.latency.labels(route)
            self._latency_children[route] = hist
        hist.observe(seconds)

    def watch_audit(self, stats: Callable[[], dict[str, int]]) -> None:
        """Export the audit recorder's figures (read at scrape time)."""
        self._audit.stats = stats

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _AuditCollector:
    """ollama_guard_audit_{backlog,spooled,dropped,aggregated,gaps,corrupt}: ``dropped``, ``gaps`` and
    ``corrupt`` must stay 0 (each is a record that did not reach the log, and ``logs verify`` names it)."""

    _HELP: ClassVar[dict[str, str]] = {
        "backlog": "Audit records spooled but not yet written to the database.",
        "spooled": "Audit records written to the local spool.",
        "dropped": "Audit records that could not be spooled (must stay 0).",
        "aggregated": "Refusals of unauthenticated traffic folded into per-client counts.",
        "gaps": "Records missing between spooled records, seen by the writer (must stay 0).",
        "corrupt": "Spool lines the writer could not read (must stay 0).",
    }

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        values = self.stats()
        for name, help_text in self._HELP.items():
            if name == "backlog":
                yield GaugeMetricFamily(f"ollama_guard_audit_{name}", help_text, value=values.get(name, 0))
            else:
                yield CounterMetricFamily(f"ollama_guard_audit_{name}", help_text, value=values.get(name, 0))
