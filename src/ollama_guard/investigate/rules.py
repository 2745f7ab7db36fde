"""Detection rules as data (``data/rules.json``): their schema and how a single event is matched.

A rule has a ``select`` (conditions on one event: kind, client class, method, path pattern, endpoint
class, status class, facts of a config line) and optionally ``correlate`` (one or more of:
``event_count`` — at least N matches in a window; ``value_count`` — at least N distinct values of a
field; ``sum`` — a field's total reaches N; ``sequence`` — ordered steps by the same client within a
window; ``spike`` — a window far above the client's own average).

Endpoint classes (``endpoint_class``, ``not_endpoint_class``) are the route catalog's
(``ollama_guard.ollama.endpoints``): they are resolved to (method, path pattern) pairs when the rules
are loaded, removed routes included (old servers' logs contain them), so a route added to the catalog
is covered by every rule naming its class without an edit here or in ``rules.json``.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import LOOPBACK, PRIVATE, PUBLIC, TRUSTED, UNKNOWN, Event
from ollama_guard.ollama import endpoints as catalog

ClientSelector = Literal["any", "untrusted", "owner", "public", "private", "remote"]

_WINDOW_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WINDOW_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def parse_window(text: str) -> float:
    """``90s``, ``5m``, ``1h``, ``2d`` → seconds."""
    m = _WINDOW_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad time window {text!r} (use e.g. 90s, 5m, 1h)")
    return float(m.group(1)) * _WINDOW_UNITS[m.group(2)]


READ_ONLY = "read-only"  # a selector term: routes whose only class is ``read``
ENDPOINT_CLASS_TERMS: frozenset[str] = frozenset({*catalog.ENDPOINT_CLASSES, READ_ONLY})


def path_pattern(template: str) -> str:
    """A catalog path template as a rule path pattern: each ``{param}`` segment becomes ``*``
    (``/api/blobs/{digest}`` → ``/api/blobs/*``, a prefix, like the rules' own patterns)."""
    return "/".join("*" if _is_param(s) else s for s in template.split("/"))


def _is_param(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


def _has_term(endpoint: catalog.Endpoint, term: str) -> bool:
    if term == READ_ONLY:
        return endpoint.is_read_only
    return term in endpoint.classes


def resolve_classes(classes: list[str], excluded: list[str] | None = None) -> tuple[tuple[str, str], ...]:
    """The catalog routes (removed ones included) carrying any of ``classes`` and none of
    ``excluded``, as sorted (method, path template) pairs. ValueError for an unknown class."""
    unknown = sorted({*classes, *(excluded or ())} - ENDPOINT_CLASS_TERMS)
    if unknown:
        raise ValueError(
            f"unknown endpoint class {unknown} (known: {', '.join(sorted(ENDPOINT_CLASS_TERMS))})"
        )
    routes = {
        (e.method, e.path)
        for e in catalog.ENDPOINTS  # read at call time: the catalog is the single source
        if any(_has_term(e, c) for c in classes) and not any(_has_term(e, c) for c in excluded or ())
    }
    return tuple(sorted(routes))


class RouteSet:
    """(method, path pattern) pairs, matched like ``path`` patterns: exact pairs by one set lookup,
    wildcard patterns one by one (there are few)."""

    __slots__ = ("_exact", "_wild", "templates")

    def __init__(self, templates: tuple[tuple[str, str], ...]) -> None:
        self.templates = templates
        patterns = [(method, path_pattern(path)) for method, path in templates]
        self._exact = frozenset(p for p in patterns if "*" not in p[1])
        self._wild = tuple(p for p in patterns if "*" in p[1])

    @property
    def patterns(self) -> frozenset[tuple[str, str]]:
        return self._exact | frozenset(self._wild)

    def matches(self, method: str, path: str) -> bool:
        if (method, path) in self._exact:
            return True
        return any(m == method and _pattern_ok(p, path) for m, p in self._wild)


class _RequestFields(BaseModel):
    """Conditions on a request's route: method, path pattern, catalog endpoint class (all that are
    given must match)."""

    model_config = ConfigDict(extra="forbid")

    method: list[str] | None = None
    path: list[str] | None = None  # exact, "*" as a whole segment = one segment, a final "*" = any rest
    endpoint_class: list[str] | None = None  # the route carries any of these catalog classes …
    not_endpoint_class: list[str] | None = None  # … and none of these
    _routes: RouteSet | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve_classes(self) -> _RequestFields:
        if self.not_endpoint_class is not None and self.endpoint_class is None:
            raise ValueError("not_endpoint_class needs endpoint_class")
        if self.endpoint_class is not None:
            templates = resolve_classes(self.endpoint_class, self.not_endpoint_class)
            if not templates:
                raise ValueError(
                    f"endpoint_class {self.endpoint_class} without {self.not_endpoint_class or []} "
                    "selects no catalog route"
                )
            self._routes = RouteSet(templates)
        return self

    @property
    def routes(self) -> RouteSet | None:
        """The catalog routes the class selector resolved to (None without one)."""
        return self._routes

    def route_ok(self, method: str, path: str) -> bool:
        if self.method is not None and method not in self.method:
            return False
        if self.path is not None and not _path_ok(self.path, path):
            return False
        return self._routes is None or self._routes.matches(method, path)


class Select(_RequestFields):
    """Conditions on one event; every given field must match (a list matches any of its items)."""

    model_config = ConfigDict(extra="forbid")

    kind: list[str] = Field(default_factory=lambda: ["request"])
    clients: ClientSelector = "any"
    status: list[str] | None = None  # "404" or a class "4xx"
    decision: list[str] | None = None  # gateway audit rows: allow / deny
    facts: list[str] | None = None  # config lines: derived facts that must all be true
    bind: list[str] | None = None  # requests: the server's bind when it answered (loopback, exposed)

    def matches(self, event: Event, client_class: str) -> bool:
        if event.kind not in self.kind:
            return False
        if self.clients != "any" and not _client_ok(self.clients, client_class):
            return False
        if not self.route_ok(event.method, event.path):
            return False
        if self.status is not None and not _status_ok(self.status, event.status):
            return False
        if self.decision is not None and event.decision not in self.decision:
            return False
        if self.bind is not None and event.bind not in self.bind:
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
    if selector == "remote":  # an address from elsewhere: public or private (not unknown, not ours)
        return client_class in (PUBLIC, PRIVATE)
    return True


def _path_ok(patterns: list[str], path: str) -> bool:
    return any(_pattern_ok(pattern, path) for pattern in patterns)


def _pattern_ok(pattern: str, path: str) -> bool:
    """``path`` against one pattern: exact; a final ``*`` matches any rest (a prefix); a ``*`` segment
    inside the pattern matches one non-empty segment."""
    star = pattern.find("*")
    if star < 0:
        return path == pattern
    if star == len(pattern) - 1:
        return path.startswith(pattern[:-1])
    want = pattern.split("/")
    got = path.split("/")
    last = len(want) - 1
    for i, segment in enumerate(want):
        if i >= len(got):
            return False
        if i == last and segment.endswith("*"):
            return "/".join(got[i:]).startswith(segment[:-1])
        if segment == "*":
            if not got[i]:
                return False
        elif segment != got[i]:
            return False
    return len(got) == len(want)


def _status_ok(statuses: list[str], status: int) -> bool:
    text = str(status)
    for s in statuses:
        if s.endswith("xx"):
            if text[:1] == s[0]:
                return True
        elif text == s:
            return True
    return False


class Step(_RequestFields):
    status: list[str] | None = None

    def matches(self, event: Event) -> bool:
        if not self.route_ok(event.method, event.path):
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
