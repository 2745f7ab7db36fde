"""debug-request-logging: OLLAMA_DEBUG_LOG_REQUESTS stores request bodies on disk."""

from __future__ import annotations

from collections.abc import Iterator

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext
from ollama_guard.audit.hostspec import ollama_bool
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.findings import Severity


@check("debug-request-logging")
def debug_request_logging(ctx: AuditContext) -> Iterator[Outcome]:
    for inst in ctx.facts.instances:
        item = inst.env.get("OLLAMA_DEBUG_LOG_REQUESTS")
        if item is None or not ollama_bool(item.value):
            continue
        yield outcome(
            "debug-request-logging",
            target=inst.target,
            severity=Severity.MEDIUM if inst.effective else Severity.LOW,
            detail=f"{inst.label} sets OLLAMA_DEBUG_LOG_REQUESTS={item.value!r} (Ollama treats it as on).",
            evidence={
                "source": inst.label,
                "OLLAMA_DEBUG_LOG_REQUESTS": item.value,
                "set_at": item.origin.to_json(),
            },
            fixes=ctx.env_fixes(inst, {"OLLAMA_DEBUG_LOG_REQUESTS": None}, "debug-log"),
        )
