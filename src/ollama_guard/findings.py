"""The one record every command produces, and the report that carries a command's findings."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ollama_guard.errors import InputError


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"

    @property
    def rank(self) -> int:
        """Higher is worse: info=0 … critical=4."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: str) -> Severity:
        try:
            return cls(value.strip().lower())
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise InputError(f"unknown severity {value!r} (expected one of: {choices})") from None

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank


_RANK = {
    Severity.INFO: 0,
    Severity.LOW: 1,
    Severity.MEDIUM: 2,
    Severity.HIGH: 3,
    Severity.CRITICAL: 4,
}

# CVSS-like numbers for SARIF's `security-severity` property (GitHub code scanning buckets).
SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "3.0",
    Severity.INFO: "0.0",
}


class Finding(BaseModel):
    """One conclusion of a check, with the evidence for it and how to fix it.

    Shared by scan, audit, verify and investigate; its JSON shape is part of the product contract.
    """

    model_config = ConfigDict(frozen=False, extra="forbid")

    rule: str
    severity: Severity
    target: str
    title: str
    detail: str = ""
    evidence: dict[str, Any] = Field(default_factory=dict)
    remediation: str = ""
    references: list[str] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """A stable identity for this finding across runs (rule + target + title)."""
        h = hashlib.sha256(f"{self.rule}\x00{self.target}\x00{self.title}".encode())
        return h.hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ReportSection(BaseModel):
    """Extra tabular information a command wants people to see (hosts, a timeline, …).

    Human formats (table, markdown, html) render it; json carries the command's own `data` instead.
    """

    title: str
    columns: list[str]
    rows: list[list[str]]
    # A lead section is shown right after the summary, before the findings (scan's hosts, an incident
    # timeline); the others follow the findings.
    lead: bool = False
    # A drawing of the section's data (an SVG element made by our own code, every text in it escaped
    # there): the HTML report shows it above the table; the other formats have the table only.
    svg: str = ""


class Report(BaseModel):
    """What a finding-producing command hands to the renderers."""

    command: str
    findings: list[Finding] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    sections: list[ReportSection] = Field(default_factory=list)
    # Command-specific top-level JSON fields (e.g. scan's "hosts"); merged into the json output.
    data: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None

    def lead_sections(self) -> list[ReportSection]:
        return [s for s in self.sections if s.lead]

    def trailing_sections(self) -> list[ReportSection]:
        return [s for s in self.sections if not s.lead]

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-f.severity.rank, f.rule, f.target))

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Severity}
        for f in self.findings:
            out[f.severity.value] += 1
        return out

    def worst(self) -> Severity | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=lambda s: s.rank)


def exit_code_for(findings: list[Finding], fail_on: str) -> int:
    """Contract: 0 if nothing at or above `fail_on` (default high), 1 otherwise; `never` always gives 0."""
    if fail_on == "never":
        return 0
    threshold = Severity.parse(fail_on)
    return 1 if any(f.severity.at_least(threshold) for f in findings) else 0
