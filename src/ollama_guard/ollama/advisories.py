"""Known Ollama advisories (CVE, CNVD and no-CVE issues), shipped as data in ``data/advisories.json``.

Affected versions are OSV-style ranges: ``{"introduced": "0", "fixed": "0.1.34"}`` (every version before
0.1.34), ``{"introduced": "0", "last_affected": "0.3.14"}`` (up to and including 0.3.14) or
``{"introduced": "0"}`` (every version: no fix exists). ``"0"`` means "from the first release".
Pre-releases of a fixed version (``0.1.34-rc1``) count as affected. A ``0.0.0`` developer build sorts
after every release (see ``versions``), so it matches only advisories that have no fix.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ollama_guard.findings import Severity
from ollama_guard.ollama.versions import OllamaVersion, parse_version

_DATA_PACKAGE = "ollama_guard.ollama"
_DATA_FILE = "data/advisories.json"


class AffectedRange(BaseModel):
    """One OSV-style range. At most one of `fixed` / `last_affected`; neither means open-ended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    introduced: str = "0"
    fixed: str | None = None
    last_affected: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AffectedRange:
        if self.fixed is not None and self.last_affected is not None:
            raise ValueError("a range has either 'fixed' or 'last_affected', not both")
        for bound in (self.introduced, self.fixed, self.last_affected):
            if bound is not None and bound != "0":
                parse_version(bound)
        if self.introduced != "0":
            low = parse_version(self.introduced)
            if self.fixed is not None and not low < parse_version(self.fixed):
                raise ValueError(f"empty range: introduced {self.introduced} >= fixed {self.fixed}")
            if self.last_affected is not None and parse_version(self.last_affected) < low:
                raise ValueError(f"empty range: last_affected {self.last_affected} < introduced")
        return self

    def contains(self, version: OllamaVersion) -> bool:
        if self.introduced != "0" and version < parse_version(self.introduced):
            return False
        if self.fixed is not None:
            return version < parse_version(self.fixed)
        if self.last_affected is not None:
            return version <= parse_version(self.last_affected)
        return True

    def describe(self) -> str:
        low = "" if self.introduced == "0" else f">= {self.introduced}"
        if self.fixed is not None:
            high = f"< {self.fixed}"
        elif self.last_affected is not None:
            high = f"<= {self.last_affected}"
        else:
            high = ""
        if low and high:
            return f"{low}, {high}"
        return low or high or "all versions"


class Advisory(BaseModel):
    """One advisory: what is affected, how it works, where it is reachable, and what fixes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    aliases: list[str] = Field(default_factory=list)
    severity: Severity
    title: str
    mechanism: str
    endpoints: list[str] = Field(default_factory=list)  # "POST /api/pull"; "*" = the whole API
    ranges: list[AffectedRange]
    affected: str = ""  # human-readable range, derived from `ranges` when not given
    fixed: str | None = None
    likely_fixed: str | None = None  # code evidence of a fix that no advisory source lists yet
    # With no published fix the range is open-ended (conservative); this is the newest version any
    # source actually reports as affected. Newer versions are "possibly affected", not confirmed.
    reported_through: str | None = None
    # The advisory is the unauthenticated API itself (missing auth, open pull/push): it does not apply
    # where every request must authenticate (e.g. behind ollama-guard serve).
    requires_open_api: bool = False
    references: list[str] = Field(default_factory=list)
    notes: str = ""
    check: str = ""

    @model_validator(mode="after")
    def _derive(self) -> Advisory:
        if not self.ranges:
            raise ValueError(f"{self.id}: at least one affected range is required")
        if not self.affected:
            object.__setattr__(self, "affected", "; ".join(r.describe() for r in self.ranges))
        for v in (self.fixed, self.likely_fixed, self.reported_through):
            if v is not None:
                parse_version(v)
        return self

    @property
    def has_fix(self) -> bool:
        return self.fixed is not None

    @property
    def url(self) -> str:
        return self.references[0] if self.references else ""

    def affects(self, version: OllamaVersion | str) -> bool:
        """Whether this Ollama version is affected (raises InvalidVersion for a bad string)."""
        v = parse_version(version)
        return any(r.contains(v) for r in self.ranges)

    def confirmed_for(self, version: OllamaVersion | str) -> bool:
        """Whether a source confirms this (affected) version, rather than only the open-ended range.

        False past `reported_through`, or at/after `likely_fixed` (code evidence of a fix).
        """
        v = parse_version(version)
        if self.likely_fixed is not None and v >= parse_version(self.likely_fixed):
            return False
        return self.reported_through is None or v <= parse_version(self.reported_through)

    def severity_for(self, version: OllamaVersion | str) -> Severity:
        """The advisory's severity where confirmed; LOW where the version is only possibly affected.

        Keeps an up-to-date server from failing `--fail-on high` on advisories that no source reports for
        its version, while still listing them.
        """
        return self.severity if self.confirmed_for(version) else Severity.LOW

    def confidence_note(self, version: OllamaVersion | str) -> str:
        """One sentence for a finding's detail explaining an unconfirmed match ('' when confirmed)."""
        if self.confirmed_for(version):
            return ""
        parts = ["No fixed release is published, so every version is treated as possibly affected"]
        if self.reported_through:
            parts.append(f"sources report versions up to {self.reported_through}")
        if self.likely_fixed:
            parts.append(f"Ollama's code history suggests a fix in {self.likely_fixed}")
        return "; ".join(parts) + "."

    def names(self) -> list[str]:
        return [self.id, *self.aliases]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _sort_key(a: Advisory) -> tuple[int, str]:
    return (-a.severity.rank, a.id)


@cache
def _load() -> tuple[Advisory, ...]:
    text = resources.files(_DATA_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    raw = json.loads(text)
    items = tuple(Advisory.model_validate(item) for item in raw["advisories"])
    ids = [a.id for a in items]
    if len(ids) != len(set(ids)):
        raise ValueError("duplicate advisory id in advisories.json")
    return items


def load_advisories() -> list[Advisory]:
    """Every known advisory (the shipped table), worst first."""
    return sorted(_load(), key=_sort_key)


def advisories_for(version: OllamaVersion | str) -> list[Advisory]:
    """The advisories that affect an Ollama version, worst first (raises InvalidVersion)."""
    v = parse_version(version)
    return [a for a in load_advisories() if a.affects(v)]


def get_advisory(advisory_id: str) -> Advisory:
    """Look an advisory up by id or alias (case-insensitive); KeyError if unknown."""
    wanted = advisory_id.strip().lower()
    for a in _load():
        if any(name.lower() == wanted for name in a.names()):
            return a
    raise KeyError(advisory_id)


def latest_fixed_version() -> OllamaVersion:
    """The newest version that any advisory names as its fix (a floor for "outdated")."""
    return max(parse_version(a.fixed) for a in _load() if a.fixed is not None)
