"""Detection rules as data (``data/rules.json``): their schema and how a single event is matched.

A rule has a ``select`` (conditions on one event: kind, client class, method, path pattern, status
class, facts of a config line) and optionally ``correlate`` (one or more of: ``event_count`` — at
least N matches in a window; ``value_count`` — at least N distinct values of a field; ``sum`` — a
field's total reaches N; ``sequence`` — ordered steps by the same client within a window; ``spike`` —
a window far above the client's own average).
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import LOOPBACK, PRIVATE, PUBLIC, TRUSTED, UNKNOWN, Event

ClientSelector = Literal["any", "untrusted", "owner", "public", "private"]

_WINDOW_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WINDOW_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def parse_window(text: str) -> float:
    """``90s``, ``5m``, ``1h``, ``2d`` → seconds."""
    m = _WINDOW_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad time window {text!r} (use e.g. 90s, 5m, 1h)")
    return float(m.group(1)) * _WINDOW_UNITS[m.group(2)]


class Select(BaseModel):
    """Conditions on one event; every given field must match (a list matches any of its items)."""

    model_config = ConfigDict(extra="forbid")

    kind: list[str] = Field(default_factory=lambda: ["request"])
    clients: ClientSelector = "any"
    method: list[str] | None = None
    path: list[str] | None = None  # exact, or a prefix ending in "*"
    status: list[str] | None = None  # "404" or a class "4xx"
    decision: list[str] | None = None  # gateway audit rows: allow / deny
    facts: list[str] | None = None  # config lines: derived facts that must all be true

    def matches(self, event: Event, client_class: str) -> bool:
        if event.kind not in self.kind:
            return False
        if self.clients != "any" and not _client_ok(self.clients, client_class):
            return False
        if self.method is not None and event.method not in self.method:
            return False
        if self.path is not None and not _path_ok(self.path, event.path):
            return False
        if self.status is not None and not _status_ok(self.status, event.status):
            return False
        if self.decision is not None and event.decision not in self.decision:
            return False
        if self.facts is not None:
            facts = event.detail.get("facts", {})
            if not all(facts.get(f) for f in self.facts):
                return False
        return True


def _client_ok(selector: str, client_class: str) -> bool:
    if selector == "untrusted":
        return client_class not in (LOOPBACK, TRUSTED)
    if selector == "owner":
        return client_class in (LOOPBACK, TRUSTED)
    if selector == "public":
        return client_class in (PUBLIC, UNKNOWN)
    if selector == "private":
        return client_class == PRIVATE
    return True


def _path_ok(patterns: list[str], path: str) -> bool:
    for pattern in patterns:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def _status_ok(statuses: list[str], status: int) -> bool:
    text = str(status)
    for s in statuses:
        if s.endswith("xx"):
            if text[:1] == s[0]:
                return True
        elif text == s:
            return True
    return False


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: list[str] | None = None
    path: list[str] | None = None
    status: list[str] | None = None

    def matches(self, event: Event) -> bool:
        if self.method is not None and event.method not in self.method:
            return False
        if self.path is not None and not _path_ok(self.path, event.path):
            return False
        return self.status is None or _status_ok(self.status, event.status)


class Correlation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["event_count", "value_count", "sum", "sequence", "spike"]
    window: str
    gte: float = 1
    field: str | None = None  # value_count: endpoint|path|status|model; sum: latency
    steps: list[Step] = Field(default_factory=list)
    # spike: a window with >= gte events and more than `factor` × the client's own average per window,
    # once the client has been seen for at least `history` windows
    factor: float = 10.0
    history: int = 6

    @field_validator("window")
    @classmethod
    def _window_ok(cls, value: str) -> str:
        parse_window(value)
        return value

    @property
    def seconds(self) -> float:
        return parse_window(self.window)


class Adjust(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: Select
    severity: Severity


class PrecededBy(BaseModel):
    """Raise the severity when a matching event came shortly before (any client, same source set)."""

    model_config = ConfigDict(extra="forbid")
    select: Select
    within: str
    severity: Severity


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    severity: Severity
    title: str
    description: str
    attack: list[str] = Field(default_factory=list)  # MITRE ATT&CK technique ids
    remediation: str
    references: list[str] = Field(default_factory=list)
    select: Select
    correlate: list[Correlation] = Field(default_factory=list)
    owner_severity: Severity | None = None
    adjust: list[Adjust] = Field(default_factory=list)
    preceded_by: PrecededBy | None = None

    def severity_for(self, event: Event, client_class: str) -> Severity:
        for adj in self.adjust:
            if adj.when.matches(event, client_class):
                return adj.severity
        if self.owner_severity is not None and client_class in (LOOPBACK, TRUSTED):
            return self.owner_severity
        return self.severity

    def attack_references(self) -> list[str]:
        out = []
        for technique in self.attack:
            base, _, sub = technique.partition(".")
            out.append(f"https://attack.mitre.org/techniques/{base}/" + (f"{sub}/" if sub else ""))
        return out


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    notes: str = ""
    rules: list[Rule]


@cache
def load_rules() -> tuple[Rule, ...]:
    """The shipped rule set (validated once)."""
    text = resources.files("ollama_guard.investigate").joinpath("data/rules.json").read_text("utf-8")
    return tuple(RuleSet.model_validate(json.loads(text)).rules)

