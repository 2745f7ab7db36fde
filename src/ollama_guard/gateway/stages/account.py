"""Stage 9, `account`: charge the tokens an answer used to its key's daily budget.

Generation and embedding routes (not `/api/create`, whose status lines are no tokens) get a
`TokenCounter` that watches the relayed answer; only a 200 answer is charged (an error generated
nothing).
"""

from __future__ import annotations

import logging
from typing import Any

from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.proxy import TokenCounter
from ollama_guard.gateway.request import AuditFacts
from ollama_guard.gateway.routes import Route

log = logging.getLogger("ollama_guard.gateway")


def token_counter(route: Route) -> TokenCounter | None:
    """A counter for routes whose answers spend tokens; None for the others."""
    return TokenCounter() if route.endpoint.is_compute and route.egress is None else None


async def account(
    facts: AuditFacts, route: Route, key: Any, counter: TokenCounter | None, limiter: Any,
    metrics: GatewayMetrics,
) -> None:
    if counter is None or facts.status != 200:
        return
    tokens = counter.total(route.endpoint.stream == "sse")
    facts.tokens = tokens
    if not tokens:
        return
    metrics.tokens.labels(facts.key_name or "").inc(tokens)
    try:
        await limiter.add_tokens(key, tokens)
    except Exception:
        log.exception("could not record token use for request %s", facts.request_id)
