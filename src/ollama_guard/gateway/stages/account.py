"""Stage 9, `account`: what a request may spend from its key's daily token budget, and what it spent.

Before forwarding (`reservation`): a request that spends tokens reserves what it may use — the cap on
output Ollama really applies to this route (`options.num_predict` on the native API, `max_tokens` on
/v1/chat/completions, /v1/completions and /v1/messages, `max_output_tokens` on /v1/responses: the
catalog `ollama_guard.ollama.generation`), else — absent, zero or negative, which Ollama reads as
"until the context is full" — `token_reservation` from the configuration; plus its prompt, estimated at
one token per four body bytes. A field Ollama ignores on a route bounds nothing and reserves nothing;
a cap above 2**53 is read as none (Go turns one near 2**63 into "unbounded"). The output reserved is
never more than the key's whole daily budget (`output_limit`): a key with 100 tokens a day asking for
`num_predict: 1e9` reserves, and is bounded at, 100. The `limits` stage takes the reservation
atomically with the admission, so concurrent requests cannot together pass the budget by more than
one reservation. A request whose own bound is missing or larger than what it reserved is given that
bound (`bound_output`): the route's cap field is appended to the forwarded body, so the reservation
is a real upper bound of what Ollama generates.

After the answer (`account`): the reservation is replaced by the counts Ollama reported where it
writes them (`usage.TokenCounter`); when the answer has none (a stream cut short, an upstream that does
not say), the reservation is charged — or what was relayed, if that is more. An upstream error
answer, or a refusal before forwarding, spends nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from ollama_guard.gateway.body import BodyStream, JsonBody
from ollama_guard.gateway.limits import Reservation, StoreUnavailable
from ollama_guard.gateway.metrics import GatewayMetrics
from ollama_guard.gateway.ratelog import GATEWAY_LOG
from ollama_guard.gateway.request import AuditFacts
from ollama_guard.gateway.routes import Route
from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import cap_member, output_cap, token_accounting

log = logging.getLogger("ollama_guard.gateway")


def token_counter(route: Route) -> TokenCounter | None:
    """A counter for routes whose answers spend tokens; None for the others."""
    if not route.endpoint.is_compute or route.egress is not None:
        return None
    return TokenCounter(token_accounting(route.endpoint.key))


def requested_cap(route: Route, body: JsonBody | BodyStream | None) -> int | None:
    """The bound this request puts on its output, read as Ollama reads it; None when unbounded."""
    cap = token_accounting(route.endpoint.key).cap
    if cap is None or not isinstance(body, JsonBody):
        return None
    value: Any = body.get(cap[0])  # a top-level field: Go's case-insensitive match
    for name in cap[1:]:  # inside a map (`options`): the exact key
        value = value.get(name) if isinstance(value, dict) else None
    return output_cap(value)


def output_limit(route: Route, key: Any, body: JsonBody | BodyStream | None, default_output: int) -> int:
    """The output a budgeted request reserves and may generate: its own cap, else `default_output`
    (`token_reservation`), and never more than the key's daily budget."""
    output = requested_cap(route, body)
    limit = output if output is not None else default_output
    budget = getattr(key, "tokens_per_day", None)
    return min(limit, budget) if budget is not None else limit


def reservation(route: Route, key: Any, body: JsonBody | BodyStream | None, default_output: int,
                body_bytes: int) -> int:
    """Tokens to reserve for this request (0 when the key has no token budget)."""
    if getattr(key, "tokens_per_day", None) is None or not route.endpoint.is_compute or route.egress:
        return 0
    prompt = -(-body_bytes // 4)
    if not token_accounting(route.endpoint.key).generates:
        return max(prompt, 1)  # embeddings generate nothing
    return prompt + output_limit(route, key, body, default_output)


def bound_output(route: Route, body: JsonBody | BodyStream | None, limit: int) -> bool:
    """Make Ollama stop after `limit` tokens (what the reservation assumed, `output_limit`) when the
    request sets no bound of its own or a larger one: the route's cap field is appended as the body's
    last member, which Ollama reads over anything the body said before. The judged bytes are
    unchanged before it. Returns whether the body was bounded."""
    accounting = token_accounting(route.endpoint.key)
    cap = accounting.cap
    if cap is None or not isinstance(body, JsonBody):
        return False
    requested = requested_cap(route, body)
    if requested is None and accounting.cap_required:
        return False  # Ollama refuses it (no positive cap): left to say so
    if requested is not None and requested <= limit:
        return False
    raw = body.raw.rstrip(b" \t\r\n")
    if not raw.endswith(b"}"):  # cannot happen for a judged body (a JSON object, nothing after it)
        return False
    head = raw[:-1].rstrip(b" \t\r\n")
    body.raw = head + (b"" if head.endswith(b"{") else b",") + cap_member(cap, limit) + b"}"
    return True


async def account(
    facts: AuditFacts, route: Route, key: Any, counter: TokenCounter | None, limiter: Any,
    metrics: GatewayMetrics, reserved: Reservation | None,
) -> None:
    if counter is None:
        return
    # forwarded and answered, or the client went away while Ollama was at work
    spent = facts.status == 200 or facts.client_gone
    usage = counter.usage()
    if usage is not None:
        tokens = usage
    elif spent:
        tokens = counter.total(route.endpoint.stream == "sse", reserved.tokens if reserved else 0)
    else:
        tokens = 0
    if spent:
        facts.tokens = tokens
        if tokens:
            metrics.tokens.labels(facts.key_name or "").inc(tokens)
    try:
        if reserved is not None:
            await limiter.settle(key, reserved, tokens if spent else 0)
        elif spent and tokens:
            await limiter.add_tokens(key, tokens)
    except StoreUnavailable as exc:  # an outage (every request in flight ends here): counted, not repeated
        GATEWAY_LOG.error("limit-store-account", "could not record token use (%s)", exc)
    except Exception:
        log.exception("could not record token use for request %s", facts.request_id)
