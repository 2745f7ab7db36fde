"""Large JSON bodies are judged in worker processes, so parsing megabytes never holds the serving
process's event loop or its GIL (Python's C JSON scanner keeps the GIL for a whole string: a 30 MB
image string held it ~100 ms, in a thread as much as on the loop).

A worker parses and judges the body exactly like `body.judge_json` and sends back only the decoded
top-level fields the gateway's stages read (`READ_FIELDS`); the bytes themselves stay in the serving
process for forwarding. Bodies up to `INLINE_JUDGE_BYTES` are judged in place (at most ~20 k values,
a few milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from ollama_guard.gateway.body import JsonBody, judge_json
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.ollama.endpoints import ENDPOINTS

INLINE_JUDGE_BYTES = 64 * 1024

# Every top-level field a stage reads from a JSON body (a field missing here reads as absent from a
# body judged in a worker: keep it complete when a stage starts reading a new field).
READ_FIELDS: frozenset[str] = frozenset(
    {f for ep in ENDPOINTS for f in ep.model_fields}
    | {"insecure", "remote_host", "modelfile", "path", "files", "adapters", "options", "keep_alive",
       "stream", "max_tokens", "max_completion_tokens", "max_output_tokens"}
)


def _judge(raw: bytes, max_depth: int, max_values: int) -> tuple[str, Any]:
    """In a worker: ("ok", fields) or ("refused", (status, message, reason))."""
    try:
        return "ok", judge_json(raw, max_depth, max_values).fields(READ_FIELDS)
    except Refusal as refusal:
        return "refused", (refusal.status, refusal.message, refusal.reason)


def _ready() -> bool:
    return True


def _lower_priority() -> None:
    """Workers yield the CPU to the serving process when both want it (nice +5)."""
    with contextlib.suppress(OSError):
        os.nice(5)


class Judges:
    """A pool of worker processes (started with the gateway, stopped with it). One worker by default:
    a worker parsing a 30 MiB body holds ~3× its size, so the pool's size bounds that memory too,
    and one worker judges ~200 MB of JSON per second."""

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        # forkserver: workers are forked from a clean server process, never from this one (which
        # runs threads and an event loop)
        context = multiprocessing.get_context("forkserver")
        self._pool = ProcessPoolExecutor(self._workers, mp_context=context, initializer=_lower_priority)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self._workers)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def judge(self, raw: bytes, max_depth: int, max_values: int) -> JsonBody:
        if len(raw) <= INLINE_JUDGE_BYTES or self._pool is None:
            return judge_json(raw, max_depth, max_values)
        loop = asyncio.get_running_loop()
        outcome, value = await loop.run_in_executor(self._pool, _judge, raw, max_depth, max_values)
        if outcome == "refused":
            raise Refusal(*value)
        return JsonBody(raw, value)
