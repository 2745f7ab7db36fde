"""Audit page: the log newest first, filterable by key, client, route, decision and time; a live tail
over server-sent events; a "verify chain" action that shows what `logs verify` says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ollama_guard.gateway.audit.follow import Cursor, cursor_now, snapshot
from ollama_guard.gateway.console.queries import AUDIT_PAGE, AuditFilter, audit_follow
from ollama_guard.gateway.console.queries import audit_page as read_page
from ollama_guard.gateway.console.web import SECURITY_HEADERS, Response, Send

if TYPE_CHECKING:
    from ollama_guard.gateway.console.app import ConsoleApp, Ctx

STREAM_SECONDS = 300.0  # one event stream lasts this long; the browser reconnects where it left off
POLL_SECONDS = 0.5
MAX_CURSOR = 20_000  # characters of a resume cursor we look at (a handful of writers needs ~100)
DECISIONS = ("", "allow", "deny")


def _time(text: str) -> datetime | None:
    """An ISO time from a filter field (a browser's datetime-local is UTC here); naive UTC or None."""
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _int(text: str) -> int | None:
    """A row id from the query (below 0 for an older release's migrated records), or None."""
    text = text.strip()
    return int(text) if re.fullmatch(r"-?[0-9]{1,18}", text) else None


def _filter(query: dict[str, str]) -> AuditFilter:
    before = query.get("before", "")
    decision = query.get("decision", "")
    return AuditFilter(
        key=query.get("key", "").strip()[:64],
        client=query.get("client", "").strip()[:64],
        path=query.get("path", "").strip()[:256],
        decision=decision if decision in DECISIONS else "",
        since=_time(query.get("since", "")),
        until=_time(query.get("until", "")),
        before_seq=_int(before),
    )


def _json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["time"] = row["time"].isoformat(timespec="milliseconds") + "Z"
    return out


async def audit_page(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any, *, verify: Any = None) -> Response:
    if verify is None:
        ctx.audit("audit")
    flt = _filter(ctx.request.query)
    rows, newest = await read_page(app.deps.engine, flt)
    return app.render(
        ctx,
        "audit.html.j2",
        rows=rows,
        flt=flt,
        query=ctx.request.query,
        decisions=DECISIONS,
        newest=newest,
        verify=verify,
        older=rows[-1]["seq"] if len(rows) == AUDIT_PAGE else None,
    )


async def verify(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> Response:
    result = await app.deps.verify()
    ctx.audit(f"verify-chain {'intact' if result.intact else 'broken'}")
    return await audit_page(app, ctx, send, receive, verify=result)


async def stream(app: ConsoleApp, ctx: Ctx, send: Send, receive: Any) -> None:
    """Server-sent events: each new matching record as ``event: audit``; each chunk's last event carries
    the follow cursor as its id, so a reconnecting browser resumes exactly there (Last-Event-ID)."""
    ctx.audit("audit-stream")
    flt = _filter(ctx.request.query)
    last = ctx.request.headers.get(b"last-event-id", b"").decode("latin-1") or ctx.request.query.get(
        "after", ""
    )
    cursor = Cursor.decode(last[:MAX_CURSOR])  # else (none, or a row id from an older page): from now
    if cursor is None:
        async with snapshot(app.deps.engine) as conn:
            cursor = await cursor_now(conn)
    facts = ctx.facts
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"x-request-id", facts.request_id.encode()),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
            ],
        }
    )
    facts.status, facts.started_response = 200, True
    gone = asyncio.Event()

    async def watch_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch_disconnect())
    deadline = time.monotonic() + STREAM_SECONDS
    try:
        await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})
        while not gone.is_set() and time.monotonic() < deadline:
            rows, cursor = await audit_follow(app.deps.engine, flt, cursor)
            if rows:
                # the cursor (where to resume) goes with the chunk's last event: one write, one id
                chunk = "".join(f"event: audit\ndata: {json.dumps(_json_row(r))}\n\n" for r in rows[:-1])
                chunk += f"id: {cursor.encode()}\nevent: audit\ndata: {json.dumps(_json_row(rows[-1]))}\n\n"
                await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})
                facts.bytes_out += len(chunk)
            else:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), POLL_SECONDS)
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass
    finally:
        watcher.cancel()
