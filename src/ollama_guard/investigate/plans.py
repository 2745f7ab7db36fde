"""Which rules an event can touch (``RulePlans``): per rule whose select matches, its severity and which
steps of its sequences the event matches — cached per request shape, since a log has few distinct ones."""

from __future__ import annotations

from dataclasses import dataclass

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import CRASH, REQUEST, Event
from ollama_guard.investigate.rules import Correlation, Rule

MATCH_CACHE = 8192


@dataclass(frozen=True, slots=True)
class Plan:
    """A rule that matches an event shape: its severity for it and, per correlation, (position,
    correlation, which sequence steps match or None, whether the event can be skipped)."""

    index: int
    rule: Rule
    severity: Severity
    correlations: tuple[tuple[int, Correlation, tuple[bool, ...] | None, bool], ...]


class RulePlans:
    """The plans of ``rules`` for an event: computed once per request shape (bounded cache)."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self._cache: dict[tuple[str, str, str, int, str, str], list[Plan]] = {}

    def matching(self, event: Event, client_class: str) -> list[Plan]:
        """What to do for each rule whose select matches (cached for requests: few distinct shapes)."""
        if event.kind != REQUEST:
            return self._plans(event, client_class)
        key = (client_class, event.method, event.path, event.status, event.decision, event.bind)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._plans(event, client_class)
            if len(self._cache) >= MATCH_CACHE:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _plans(self, event: Event, client_class: str) -> list[Plan]:
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
            plans.append(Plan(index, rule, severity, tuple(corrs)))
        return plans
