"""Stage 10, `record`: what happened to the request goes to the metrics and the audit log.

Runs for every request, whatever stage ended it. This is the only place that calls the audit
recorder (`Services.audit.submit`); the record carries ids and outcomes, never the key or the body.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ollama_guard.gateway.audit import QueuedRecord
from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.request import AuditFacts

log = logging.getLogger("ollama_guard.gateway")


def settle(facts: AuditFacts) -> None:
    """Final status and reason of a request that ended without an answer of its own."""
    if facts.client_gone:
        if facts.reason in ("", "ok"):
            facts.reason = "client-disconnected"
        if not facts.status:
            facts.status = 499
    elif not facts.status:
        facts.status = 500
        facts.reason = facts.reason or "internal-error"


def record(facts: AuditFacts, started: float, metrics: GatewayMetrics, audit: Any | None) -> None:
    elapsed = time.perf_counter() - started
    settle(facts)
    metrics.observe(facts.route, facts.decision, facts.key_name or "", elapsed)
    if audit is None:
        return
    try:
        # a plain tuple: the writer thread builds, normalises and chains the record
        audit.submit(
            QueuedRecord(
                time.time(), facts.key_id, facts.key_name, facts.client, facts.method, facts.path,
                facts.model, facts.status, facts.decision, facts.reason or "ok", facts.bytes_in,
                facts.bytes_out, facts.tokens, round(elapsed * 1000, 3), facts.request_id,
            )
        )
    except Exception:
        metrics.audit_failures.inc()
        log.exception("could not queue an audit record")
