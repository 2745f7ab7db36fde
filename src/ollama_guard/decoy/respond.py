"""Response helpers shared by the handlers: Go-style timestamps, progress streams, paced NDJSON/SSE."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ollama_guard.decoy.bodies import BadRequest
from ollama_guard.decoy.http import NDJSON_TYPE, Send, json_bytes, send_bytes, send_stream

GO_JSON_TYPE = "application/json"  # what Ollama's waitForStream/streamResponse errors use (no charset)


def go_time(moment: datetime | None = None) -> str:
    """A time as Go's encoding/json writes it (RFC 3339 with nanoseconds, trailing zeros trimmed)."""
    if moment is None:
        ns = time.time_ns()
        moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
        frac_ns = ns % 1_000_000_000
    else:
        frac_ns = moment.microsecond * 1000
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{frac_ns:09d}".rstrip("0").rstrip(".") if frac_ns else ""
    offset = moment.utcoffset()
    if not offset:
        zone = "Z"
    else:
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return base + frac + zone


def local_time(timestamp: datetime) -> datetime:
    """A UTC timestamp in the machine's local zone (Go's file ModTime is local)."""
    return timestamp.astimezone()


@dataclass(frozen=True)
class ProgressError:
    """An error in a progress stream (Ollama's gin.H{"error": …, "status": …})."""

    message: str
    status: int = 500


ProgressEvent = dict[str, Any] | ProgressError


async def paced(items: Iterable[bytes], delay: float) -> AsyncIterator[bytes]:
    """Yield chunks with `delay` seconds between them (none before the first)."""
    first = True
    for item in items:
        if not first and delay > 0:
            await asyncio.sleep(delay)
        first = False
        yield item


async def respond_progress(send: Send, events: AsyncIterator[ProgressEvent], *, stream: bool) -> None:
    """Ollama's streamResponse (NDJSON) or waitForStream (one JSON object: the last event)."""
    if not stream:
        latest: dict[str, Any] = {}
        async for event in events:
            if isinstance(event, ProgressError):
                await send_bytes(send, event.status, json_bytes({"error": event.message}), GO_JSON_TYPE)
                return
            latest = event
        await send_bytes(send, 200, json_bytes(latest), GO_JSON_TYPE)
        return

    iterator = events.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        await send_stream(send, 200, NDJSON_TYPE, _empty())
        return
    if isinstance(first, ProgressError):
        await send_bytes(send, first.status, json_bytes({"error": first.message}), GO_JSON_TYPE)
        return

    async def lines() -> AsyncIterator[bytes]:
        yield json_bytes(first) + b"\n"
        async for event in iterator:
            if isinstance(event, ProgressError):
                yield json_bytes({"error": event.message}) + b"\n"
                return
            yield json_bytes(event) + b"\n"

    await send_stream(send, 200, NDJSON_TYPE, lines())


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


def model_not_found(name: str) -> BadRequest:
    """404 `model 'x' not found` (generate, show, delete, embed lookups)."""
    return BadRequest(404, f"model '{name}' not found")


def try_pulling(name: str) -> BadRequest:
    """404 `model "x" not found, try pulling it first` (the scheduler's message: chat, embed, embeddings)."""
    return BadRequest(404, f'model "{name}" not found, try pulling it first')
