"""Bans page: every active ban; add one; lift one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.console.web import Response, Send

if TYPE_CHECKING:
    from ollama_guard.gateway.console.app import ConsoleApp, Ctx


async def bans_page(
    app: ConsoleApp,
    ctx: Ctx,
    send: Send,
    receive: Any,
    *,
    status: int = 200,
    error: str = "",
    acted: bool = False,
) -> Response:
    if not acted:
        ctx.audit("bans")
    bans = await app.deps.bans.list() if app.deps.bans is not None else None
    return app.render(
        ctx, "bans.html.j2", status, bans=bans, error=error, form=ctx.request.form if error else {}
    )


async def add(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    form = ctx.request.form
    if app.deps.bans is None:
        return await bans_page(
            app, ctx, send, receive, status=503, error="bans are not available", acted=True
        )
    try:
        minutes_text = form.get("minutes", "").strip() or "60"
        if not minutes_text.isdigit() or int(minutes_text) < 1:
            raise InputError("minutes must be a whole number of at least 1")
        address = form.get("address", "").strip()
        await app.deps.bans.add(
            address,
            minutes=int(minutes_text),
            reason=form.get("reason", "").strip()[:200] or "banned in the console",
            source=f"console:{ctx.key.name if ctx.key else '?'}",
        )
    except (InputError, GuardError, ValueError) as exc:
        ctx.audit("ban-add-failed", "deny")
        return await bans_page(app, ctx, send, receive, status=400, error=str(exc), acted=True)
    ctx.audit(f"ban-add {address} {minutes_text}m")
    return await bans_page(app, ctx, send, receive, acted=True)


async def lift(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    if app.deps.bans is None:
        return await bans_page(
            app, ctx, send, receive, status=503, error="bans are not available", acted=True
        )
    address = ctx.request.form.get("address", "").strip()
    try:
        await app.deps.bans.remove(address)
    except (InputError, GuardError, ValueError) as exc:
        ctx.audit("ban-lift-failed", "deny")
        return await bans_page(app, ctx, send, receive, status=400, error=str(exc), acted=True)
    ctx.audit(f"ban-lift {address}")
    return await bans_page(app, ctx, send, receive, acted=True)
