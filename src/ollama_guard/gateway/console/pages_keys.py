"""Keys page: every key with its grants, limits, status, last use and today's usage; create (the
secret is shown once), rotate, revoke, edit limits and model patterns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.console.queries import key_usage
from ollama_guard.gateway.console.web import Response, Send
from ollama_guard.gateway.keys import key_version

if TYPE_CHECKING:
    from ollama_guard.gateway.console.app import ConsoleApp, Ctx

ROLES = ("read", "inference", "admin")


def _optional_int(form: dict[str, str], name: str, label: str) -> int | None:
    text = form.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise InputError(f"{label} must be a whole number")
    return int(text)


def _patterns(form: dict[str, str]) -> list[str]:
    """Model patterns from the form. Empty is refused: "all models" must be said with ``*``."""
    text = form.get("models", "").strip()
    if not text:
        raise InputError("give the models this key may use (patterns, comma separated), or * for all models")
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise InputError("no model pattern given")
    return patterns


async def keys_page(
    app: ConsoleApp,
    ctx: Ctx,
    send: Send,
    receive: Any,
    *,
    status: int = 200,
    new_secret: dict[str, str] | None = None,
    error: str = "",
    acted: bool = False,
) -> Response:
    if not acted:
        ctx.audit("keys")
    keys = await app.keys.list()
    usage = await key_usage(app.deps.engine)
    versions = {
        k.id: key_version(entry[1].hex())
        for k in keys
        if (entry := app.deps.authenticator.usable_entry(k.id))
    }
    return app.render(
        ctx,
        "keys.html.j2",
        status,
        keys=keys,
        usage=usage,
        roles=ROLES,
        versions=versions,
        new_secret=new_secret,
        error=error,
        form=ctx.request.form if error else {},  # a failed form keeps its values
    )


async def _act(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any, action: str, work: Any) -> Response:
    try:
        shown = await work()
    except (InputError, GuardError) as exc:
        ctx.audit(f"{action}-failed", "deny")
        return await keys_page(app, ctx, send, receive, status=400, error=str(exc), acted=True)
    return await keys_page(app, ctx, send, receive, new_secret=shown, acted=True)


async def create(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    form = ctx.request.form

    async def work() -> dict[str, str]:
        role = form.get("role", "")
        if role not in ROLES:
            raise InputError("choose a role: read, inference or admin")
        expires = _optional_int(form, "expires_days", "expiry (days)")
        key, token = await app.keys.create(
            form.get("name", "").strip(),
            role,
            models=_patterns(form),
            rpm=_optional_int(form, "rpm", "requests per minute"),
            concurrency=_optional_int(form, "concurrency", "concurrency"),
            tokens_per_day=_optional_int(form, "tokens_per_day", "tokens per day"),
            expires_days=float(expires) if expires is not None else None,
        )
        ctx.audit(f"create-key {key.name} ({key.id}) role={key.role}")
        return {"name": key.name, "id": key.id, "secret": token, "what": "created"}

    return await _act(app, ctx, send, receive, "create-key", work)


def _key_id(ctx: Ctx) -> str:
    return ctx.request.path.split("/")[1]


async def revoke(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    async def work() -> None:
        key = await app.keys.revoke(_key_id(ctx))
        ctx.audit(f"revoke-key {key.name} ({key.id})")

    return await _act(app, ctx, send, receive, "revoke-key", work)


async def rotate(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    async def work() -> dict[str, str]:
        version = ctx.request.form.get("version", "")
        if len(version) != 32:
            raise InputError("this form is out of date; reload the page")
        key, token = await app.keys.rotate(_key_id(ctx), expected_version=version)
        ctx.audit(f"rotate-key {key.name} ({key.id})")
        return {"name": key.name, "id": key.id, "secret": token, "what": "rotated"}

    return await _act(app, ctx, send, receive, "rotate-key", work)


async def edit(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    form = ctx.request.form

    async def work() -> None:
        key = await app.keys.update(
            _key_id(ctx),
            models=_patterns(form),
            rpm=_optional_int(form, "rpm", "requests per minute"),
            concurrency=_optional_int(form, "concurrency", "concurrency"),
            tokens_per_day=_optional_int(form, "tokens_per_day", "tokens per day"),
        )
        ctx.audit(f"edit-key {key.name} ({key.id})")

    return await _act(app, ctx, send, receive, "edit-key", work)
