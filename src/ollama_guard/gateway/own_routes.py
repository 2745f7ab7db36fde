"""The gateway's own routes under `/-/`: `/-/health` (liveness, no auth), `/-/ready` (readiness, no
auth, no details: `gateway/readiness.py`), `/-/metrics` (admin key) and `/-/console` (the web
console; admin keys, see `gateway.console`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_guard.gateway.metrics import METRICS_CONTENT_TYPE
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import Request, RequestHeaders
from ollama_guard.gateway.respond import JSON, send_simple
from ollama_guard.gateway.stages.authenticate import authenticate
from ollama_guard.gateway.stages.authorise import role_allows

if TYPE_CHECKING:
    from ollama_guard.gateway.app import GatewayApp

HEALTH = "/-/health"
READY = "/-/ready"
UNAUTHENTICATED = frozenset({HEALTH, READY})
CONSOLE = "/-/console"


async def answer_health(req: Request, ready: bool | None = None) -> None:
    if ready is None:  # liveness: the process answers
        await send_simple(req.send, 200, b'{"status":"ok"}', JSON, req.facts)
    elif ready:
        await send_simple(req.send, 200, b'{"status":"ready"}', JSON, req.facts)
    else:
        await send_simple(req.send, 503, b'{"status":"not ready"}', JSON, req.facts)


def _console(app: GatewayApp) -> Any:
    """The console of this gateway process, built on first use (a gateway nobody opens it on pays nothing)."""
    if app.console is None:
        from ollama_guard.gateway.console import ConsoleApp, ConsoleDeps, probe
        from ollama_guard.gateway.secrets import load_server_secret

        services = app.services
        assert services is not None
        secret = services.secret if services.secret is not None else load_server_secret(app.config)

        async def health() -> dict[str, tuple[bool, str]]:
            return await probe(services, app.config)

        async def verify() -> Any:
            from ollama_guard.gateway.audit import verify_chain

            await services.audit.flush()
            return await verify_chain(services.engine, secret)

        from ollama_guard.gateway.alerts import AlertStore
        from ollama_guard.gateway.bans import BanStore

        bans = getattr(services, "bans", None)  # the gateway enforces bans only when it has a ban list
        autoban = getattr(services, "autoban", None)
        app.console = ConsoleApp(
            ConsoleDeps(
                services.engine, secret, services.authenticator, health, verify,
                bans=BanStore(services.engine) if bans is not None else None,
                alerts=AlertStore(services.engine).latest,
                on_login_failure=autoban.failure if autoban is not None else None,
            )
        )
    return app.console


async def answer_own_route(app: GatewayApp, req: Request) -> None:
    if app.config.console and (req.path == CONSOLE or req.path.startswith(CONSOLE + "/")):
        headers = RequestHeaders(req.scope["headers"])
        req.headers = headers
        app.client.check(req, headers)
        await _console(app)(req.scope, req.receive, req.send, req.facts)
        return
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
