"""Stage 10, `record`: what happened to the request goes to the metrics and the audit log.

This is the only place that calls the audit recorder (``Services.audit``, a ``Recorder``), through
its narrow interface:

* ``record(...)`` — every request, whatever stage ended it: ``audit.record(fields)`` spools the
  decision (one ``write(2)``; the writer process chains and stores it). Never the key, never the body.
* ``before_last_byte(audit)`` — awaited before the answer's last byte is sent: with
  ``audit_sync = "answer"`` it returns once the record is on disk (``audit.durable()``,
  one group-commit fsync shared by every answer waiting at that moment); False when that fsync failed,
  and then the answer is not completed (the client sees a cut-off answer, never a complete one whose
  record a power loss could erase).
* ``before_forward(...)`` — every request about to be forwarded: when the audit pipeline has fallen
  behind or its spool fails, the request is refused 503 (fail closed: nothing keyed goes unrecorded);
  a state-changing admin action (pull, push, create, copy, delete, blob upload) is first spooled *and
  fsynced* as a ``forwarding`` record, so it is on disk before Ollama acts on it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ollama_guard.gateway.audit import AuditUnavailable, RecordFields
from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts
from ollama_guard.gateway.routes import Route

log = logging.getLogger("ollama_guard.gateway")

_READ_ONLY = frozenset({"GET", "HEAD"})


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


def fields_of(facts: AuditFacts, latency_ms: float, *, intent: bool = False) -> RecordFields:
    """The audit record's fields (``intent``: the ``forwarding`` record of a state-changing action)."""
    return RecordFields(
        time.time(), facts.key_id, facts.key_name, facts.client, facts.method, facts.path, facts.model,
        0 if intent else facts.status, "allow" if intent else facts.decision,
        "forwarding" if intent else facts.reason or "ok", facts.bytes_in, facts.bytes_out, facts.tokens,
        latency_ms, facts.request_id,
    )


def state_changing(route: Route, method: str) -> bool:
    return route.role == "admin" and method not in _READ_ONLY


async def before_forward(facts: AuditFacts, route: Route, audit: Any) -> None:
    """Refuse (503) when the audit log cannot take the request's record; spool a state-changing
    admin action durably before it is forwarded."""
    refusal = Refusal(503, "audit log unavailable, try again", "audit-unavailable", retry_after=1)
    if not audit.accepting():
        raise refusal
    if state_changing(route, facts.method):
        try:
            await audit.spool_before_forward(fields_of(facts, 0.0, intent=True))
        except AuditUnavailable:
            raise refusal from None


async def before_last_byte(audit: Any | None) -> bool:
    """True when the answer's last byte may be sent: its record is durable as configured."""
    return True if audit is None else await audit.durable()


def record(facts: AuditFacts, started: float, metrics: GatewayMetrics, audit: Any | None) -> None:
    elapsed = time.perf_counter() - started
    settle(facts)
    metrics.observe(facts.route, facts.decision, facts.key_name or "", elapsed)
    if audit is not None:
        audit.record(fields_of(facts, round(elapsed * 1000, 3)))  # never raises; a failure is counted
