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
import queue
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
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


def _serve(conn: Connection) -> None:
    """A worker: limits, then the body's bytes, in; the outcome out; until the pipe closes."""
    with contextlib.suppress(OSError):
        os.nice(5)  # yield the CPU to the serving process when both want it
    while True:
        try:
            max_depth, max_values = conn.recv()
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send(_judge(raw, max_depth, max_values))


class _Worker:
    def __init__(self, context: Any) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True, name="ollama-guard judge")
        self.process.start()
        child.close()

    def stop(self) -> None:
        self.conn.close()
        self.process.join(1)
        if self.process.is_alive():
            self.process.kill()


class Judges:
    """Worker processes, each behind a pipe. A body goes to a worker with one write of its bytes
    (no pickling, no copy: pickling 30 MB held the GIL for 150-250 ms on a busy machine), from a
    thread of this process so the event loop never waits for the pipe. One worker by default: a
    worker parsing a 30 MiB body holds ~3x its size, so the pool's size bounds that memory too."""

    def __init__(self, workers: int = 1) -> None:
        self._workers = workers
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all: list[_Worker] = []
        self._threads: ThreadPoolExecutor | None = None
        self._context: Any = None

    async def start(self) -> None:
        # forkserver: workers are forked from a clean server process, never from this one (which
        # runs threads and an event loop)
        self._context = multiprocessing.get_context("forkserver")
        loop = asyncio.get_running_loop()
        context = self._context
        workers = await loop.run_in_executor(None, lambda: [_Worker(context) for _ in range(self._workers)])
        for worker in workers:
            self._all.append(worker)
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(self._workers, thread_name_prefix="ollama-guard-judge")

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None
        for worker in self._all:
            worker.stop()
        self._all.clear()

    def _roundtrip(self, raw: bytes, max_depth: int, max_values: int) -> tuple[str, Any]:
        worker = self._idle.get()
        try:
            worker.conn.send((max_depth, max_values))
            worker.conn.send_bytes(raw)
            return worker.conn.recv()
        except (EOFError, OSError):  # the worker died (killed, out of memory): a new one takes its place
            worker.stop()
            self._all.remove(worker)
            worker = _Worker(self._context)
            self._all.append(worker)
            return "refused", (503, "the gateway could not judge this body, try again", "judge-failed")
        finally:
            self._idle.put(worker)

    async def judge(self, raw: bytes, max_depth: int, max_values: int) -> JsonBody:
        if len(raw) <= INLINE_JUDGE_BYTES or self._threads is None:
            return judge_json(raw, max_depth, max_values)
        loop = asyncio.get_running_loop()
        threads = self._threads
        outcome, value = await loop.run_in_executor(threads, self._roundtrip, raw, max_depth, max_values)
        if outcome == "refused":
            raise Refusal(*value)
        return JsonBody(raw, value)
