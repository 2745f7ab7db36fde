"""Building findings from check metadata."""

from __future__ import annotations

from typing import Any

from ollama_guard.audit.fixes import Fix, remediation_text
from ollama_guard.audit.registry import Outcome, load_metadata
from ollama_guard.findings import Finding, Severity


def outcome(
    check_id: str,
    *,
    target: str,
    detail: str,
    evidence: dict[str, Any],
    fixes: list[Fix],
    severity: Severity | None = None,
    title: str | None = None,
    rule: str | None = None,
    references: list[str] | None = None,
    impact: str | None = None,
    with_rationale: bool = True,
) -> Outcome:
    meta = load_metadata()[check_id]
    finding = Finding(
        rule=rule or check_id,
        severity=severity or meta.severity,
        target=target,
        title=title or meta.title,
        detail=f"{detail} {meta.rationale}".strip() if with_rationale else detail,
        evidence=evidence,
        remediation=remediation_text(fixes, impact or meta.impact),
        references=list(references if references is not None else meta.references),
    )
    return Outcome(finding, fixes)
