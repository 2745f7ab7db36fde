"""cors-any-origin: OLLAMA_ORIGINS admitting every web origin."""

from __future__ import annotations

from collections.abc import Iterator

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext
from ollama_guard.audit.hostspec import judge_origins
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.findings import Severity


@check("cors-any-origin")
def cors_any_origin(ctx: AuditContext) -> Iterator[Outcome]:
    for inst in ctx.facts.instances:
        item = inst.env.get("OLLAMA_ORIGINS")
        if item is None:
            continue
        verdict = judge_origins(item.value)
        if not verdict.any_origin:
            continue
        exposed = ctx.instance_exposed(inst)
        severity = Severity.HIGH if exposed else Severity.MEDIUM
        if not inst.effective:
            severity = Severity.LOW if severity is Severity.MEDIUM else Severity.MEDIUM
        reach = (
            "and it is reachable from the network" if exposed else "even though it listens only on loopback"
        )
        safe = verdict.safe_value or None
        yield outcome(
            "cors-any-origin",
            target=inst.target,
            severity=severity,
            detail=f"{inst.label} sets OLLAMA_ORIGINS={item.value!r}: any web page may "
            f"call the API, {reach}.",
            evidence={
                "source": inst.label,
                "OLLAMA_ORIGINS": item.value,
                "any_origin_entries": verdict.any_origin,
                "set_at": item.origin.to_json(),
            },
            fixes=ctx.env_fixes(inst, {"OLLAMA_ORIGINS": safe}, "cors"),
        )
