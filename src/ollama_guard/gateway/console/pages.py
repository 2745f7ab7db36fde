"""The console's routes: (method, route name) → handler. Handlers take (app, ctx, send, receive)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ollama_guard.gateway.console import pages_audit, pages_bans, pages_keys
from ollama_guard.gateway.console.charts import usage_chart
from ollama_guard.gateway.console.queries import top_keys, top_refused_clients, usage_series, utc_now
from ollama_guard.gateway.console.session import SESSION_COOKIE
from ollama_guard.gateway.console.web import Response, Send, redirect

if TYPE_CHECKING:
    from ollama_guard.gateway.console.app import ConsoleApp, Ctx


async def login_page(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    ctx.audit("login-page")
    return app.login_form(ctx)


async def login(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    return await app.try_login(ctx)


async def logout(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    ctx.audit("logout")
    response = redirect(f"{app.env.globals['prefix']}/login")
    response.clear_cookie(SESSION_COOKIE, path=str(app.env.globals["prefix"]))
    return response


async def overview(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    ctx.audit("overview")
    deps = app.deps
    now = utc_now()
    day = await usage_series(deps.engine, hours=24, hourly=True, now=now)
    week = await usage_series(deps.engine, hours=24 * 7, hourly=False, now=now)
    bans = await deps.bans.list() if deps.bans is not None else None
    alerts = await deps.alerts(10) if deps.alerts is not None else None
    return app.render(
        ctx,
        "overview.html.j2",
        health=await deps.health(),
        totals={
            "requests": sum(b.allowed + b.refused for b in day),
            "refused": sum(b.refused for b in day),
            "tokens": sum(b.tokens for b in day),
        },
        chart_day=usage_chart(day, hourly=True, label="Requests and tokens per hour, last 24 hours"),
        chart_week=usage_chart(week, hourly=False, label="Requests and tokens per day, last 7 days"),
        top_keys=await top_keys(deps.engine, now - timedelta(hours=24)),
        top_refused=await top_refused_clients(deps.engine, now - timedelta(hours=24)),
        bans=bans,
        alerts=alerts,
    )


def routes() -> dict[tuple[str, str], Any]:
    return {
        ("GET", ""): overview,
        ("GET", "login"): login_page,
        ("POST", "login"): login,
        ("POST", "logout"): logout,
        ("GET", "keys"): pages_keys.keys_page,
        ("POST", "keys/create"): pages_keys.create,
        ("POST", "keys/*/revoke"): pages_keys.revoke,
        ("POST", "keys/*/rotate"): pages_keys.rotate,
        ("POST", "keys/*/edit"): pages_keys.edit,
        ("GET", "audit"): pages_audit.audit_page,
        ("GET", "audit/stream"): pages_audit.stream,
        ("POST", "audit/verify"): pages_audit.verify,
        ("GET", "bans"): pages_bans.bans_page,
        ("POST", "bans/add"): pages_bans.add,
        ("POST", "bans/lift"): pages_bans.lift,
    }
