"""The gateway's own routes under `/-/`: `/-/health` (liveness, no auth) and `/-/metrics` (admin key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ollama_guard.gateway.metrics import METRICS_CONTENT_TYPE
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import Request, RequestHeaders
from ollama_guard.gateway.respond import JSON, send_simple
from ollama_guard.gateway.stages.authenticate import authenticate
from ollama_guard.gateway.stages.authorise import role_allows

if TYPE_CHECKING:
    from ollama_guard.gateway.app import GatewayApp

HEALTH = "/-/health"


async def answer_health(req: Request) -> None:
    await send_simple(req.send, 200, b'{"status":"ok"}', JSON, req.facts)


async def answer_own_route(app: GatewayApp, req: Request) -> None:
    if req.path == "/-/metrics" and req.method == "GET" and app.config.metrics:
        req.facts.route = "GET /-/metrics"
        headers = RequestHeaders(req.scope["headers"])
        req.headers = headers
        app.client.check(req, headers)
        assert app.services is not None
        key = await authenticate(headers, req.facts, app.services.authenticator)
        if not role_allows(key.role, "admin"):
            raise Refusal(403, "metrics need an admin key", "role")
        req.facts.decision, req.facts.reason = "allow", "ok"
        await send_simple(req.send, 200, app.metrics.render(), METRICS_CONTENT_TYPE, req.facts)
        return
    raise Refusal(403, "path not allowed by the gateway", "route-not-allowed")
