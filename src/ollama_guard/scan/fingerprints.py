"""Naming the AI server behind an open port from the answers to read-only probes.

The fingerprints live in `data/ai_servers.json`. Each server lists the probes that tell it apart and
weighted matchers; the best total at or above the server's threshold wins, whatever the order of the
file. That is what keeps imitators apart: KoboldCpp answers Ollama's `/api/tags` and `/api/version` but
not with the `Ollama is running` banner, and its own `/api/extra/version` outweighs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ollama_guard.findings import Severity

# The probes sent to every open port before anything is known about it.
DISCOVERY_PROBES: tuple[str, ...] = ("GET /", "GET /api/version", "GET /api/tags", "GET /v1/models")


def split_probe(key: str) -> tuple[str, str]:
    """`"GET /api/tags"` → `("GET", "/api/tags")`."""
    method, _, path = key.partition(" ")
    return method, path


@dataclass(slots=True)
class ProbeAnswer:
    """What one probe got back (status 0 when nothing usable came back)."""

    method: str
    path: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    truncated: bool = False
    error: str | None = None
    elapsed: float = 0.0
    _json: Any = None
    _json_done: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def answered(self) -> bool:
        return self.status > 0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON, or None (never raises)."""
        if not self._json_done:
            self._json_done = True
            if self.body and not self.truncated:
                try:
                    self._json = json.loads(self.body)
                except (ValueError, UnicodeDecodeError):
                    self._json = None
        return self._json

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def reached_blob_handler(answer: ProbeAnswer | None) -> bool:
    """Whether `HEAD /api/blobs/<digest>` ran Ollama's blob handler. Its 400/404 are JSON (gin's
    AbortWithStatusJSON) and its 200 carries no body; a `text/plain` 404 is gin's own `404 page not found`
    for a route that does not exist (Ollama before 0.1.10 had no blob route), which proves nothing."""
    if answer is None or answer.status not in (200, 400, 404):
        return False
    if answer.status == 200:
        return True
    return answer.header("content-type").lower().startswith("application/json")


def json_values(document: Any, path: str) -> list[Any]:
    """Values at a dotted path where `name[]` walks every element of a list: `data[].owned_by`."""
    current: list[Any] = [document]
    for step in path.split("."):
        every = step.endswith("[]")
        name = step[:-2] if every else step
        following: list[Any] = []
        for value in current:
            if not isinstance(value, dict) or name not in value:
                continue
            item = value[name]
            if every:
                if isinstance(item, list):
                    following.extend(item)
            else:
                following.append(item)
        current = following
    return current


class JsonTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    equals: Any = None
    contains: str | None = None
    exists: bool | None = None

    def holds(self, document: Any) -> bool:
        values = json_values(document, self.path)
        if self.exists is not None:
            return bool(values) == self.exists
        if self.contains is not None:
            return any(isinstance(v, str) and self.contains in v for v in values)
        return any(v == self.equals for v in values)


class HeaderTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    contains: str


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe: str
    status: list[int] = Field(default_factory=list)
    body_all: list[str] = Field(default_factory=list)
    body_any: list[str] = Field(default_factory=list)
    json_keys: list[str] = Field(default_factory=list)
    json_test: JsonTest | None = Field(default=None, alias="json")
    header: HeaderTest | None = None
    weight: int

    def matches(self, answer: ProbeAnswer | None) -> bool:
        if answer is None or not answer.answered:
            return False
        if self.status and answer.status not in self.status:
            return False
        text = answer.text if (self.body_all or self.body_any) else ""
        if self.body_all and not all(word in text for word in self.body_all):
            return False
        if self.body_any and not any(word in text for word in self.body_any):
            return False
        if self.json_keys or self.json_test:
            document = answer.json()
            if not isinstance(document, dict):
                return False
            if not all(key in document for key in self.json_keys):
                return False
            if self.json_test is not None and not self.json_test.holds(document):
                return False
        if self.header is not None:
            if self.header.contains.lower() not in answer.header(self.header.name).lower():
                return False
        return True


class Extraction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe: str
    json_path: str

    def values(self, answers: dict[str, ProbeAnswer]) -> list[Any]:
        answer = answers.get(self.probe)
        if answer is None or not 200 <= answer.status < 300:
            return []
        return json_values(answer.json(), self.json_path)


class AuthJson(BaseModel):
    """Auth read from a JSON flag (Open WebUI's `features.auth`)."""

    model_config = ConfigDict(extra="forbid")

    probe: str
    json_path: str
    none_when: Any
    required_when: Any


class Fingerprint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    ports: list[int]
    probes: list[str]
    matchers: list[Matcher]
    min_confidence: int = 50
    version: Extraction | None = None
    models: Extraction | None = None
    auth_probes: list[str] = Field(default_factory=list)
    auth_json: AuthJson | None = None
    unauthenticated_severity: Severity = Severity.HIGH
    remediation: str

    @field_validator("probes")
    @classmethod
    def _only_get(cls, probes: list[str]) -> list[str]:
        for key in probes:
            method, path = split_probe(key)
            if method != "GET" or not path.startswith("/"):
                raise ValueError(f"fingerprint probes must be 'GET /path', got {key!r}")
        return probes

    def all_probe_keys(self) -> set[str]:
        keys = set(self.probes) | {m.probe for m in self.matchers} | set(self.auth_probes)
        for extraction in (self.version, self.models):
            if extraction is not None:
                keys.add(extraction.probe)
        if self.auth_json is not None:
            keys.add(self.auth_json.probe)
        return keys

    def confidence(self, answers: dict[str, ProbeAnswer]) -> int:
        return min(100, sum(m.weight for m in self.matchers if m.matches(answers.get(m.probe))))


@lru_cache(maxsize=1)
def load_fingerprints() -> tuple[Fingerprint, ...]:
    raw = resources.files("ollama_guard.scan").joinpath("data/ai_servers.json").read_text(encoding="utf-8")
    document = json.loads(raw)
    return tuple(Fingerprint.model_validate(entry) for entry in document["servers"])


def fingerprint_by_id(server_id: str) -> Fingerprint:
    for fp in load_fingerprints():
        if fp.id == server_id:
            return fp
    raise KeyError(server_id)


def every_probe_key() -> set[str]:
    """Every GET the fingerprints can ask for (feeds the probe allowlist)."""
    keys = set(DISCOVERY_PROBES)
    for fp in load_fingerprints():
        keys |= fp.all_probe_keys()
    return keys


@dataclass(frozen=True, slots=True)
class Identification:
    fingerprint: Fingerprint
    confidence: int


def identify(answers: dict[str, ProbeAnswer]) -> Identification | None:
    """The best-scoring server at or above its threshold (ties: the first in the file)."""
    best: Identification | None = None
    for fp in load_fingerprints():
        score = fp.confidence(answers)
        if score >= fp.min_confidence and (best is None or score > best.confidence):
            best = Identification(fp, score)
    return best


def followup_probes(answers: dict[str, ProbeAnswer], port: int) -> list[str]:
    """Stage-two probes: those of servers with any matcher hit so far or that live on this port by default;
    when nothing is confidently named yet, those of every server."""
    current = identify(answers)
    wanted: dict[str, None] = {}
    for fp in load_fingerprints():
        hit = any(m.matches(answers.get(m.probe)) for m in fp.matchers)
        if hit or port in fp.ports or current is None or current.confidence < 80:
            for key in sorted(fp.all_probe_keys()):
                wanted.setdefault(key, None)
    return [key for key in wanted if key not in answers]


AuthState = Literal["none", "required", "unknown"]
