"""A private asyncio event loop in its own thread, for the gateway's background database work.

The audit writer (HMAC chain + batch inserts) and the key poller run here instead of in the serving
loop: a saturated serving loop then can neither starve them (a key poll that merely could not run is
not a store failure) nor be stalled by their periodic bursts (the audit batch no longer runs between
two requests' callbacks).

Async database engines whose connections are bound to the loop that opened them (asyncpg's pool)
must not be shared between loops; ``engine_for_loop`` returns the engine itself when that is safe
(SQLite with one fresh connection per use) and an equivalent new engine otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

T = TypeVar("T")


class BackgroundLoop:
    """An event loop running in a daemon thread; coroutines are handed to it from any other loop."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            ready.set()
            try:
                loop.run_forever()
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the background loop (thread-safe)."""
        assert self._loop is not None, "background loop not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the background loop and await its result from the caller's loop
        (cancelling the caller cancels it there too)."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` in the background thread (thread-safe, never blocks)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, *args)

    async def stop(self) -> None:
        """Stop the loop (cancelling what still runs there) and wait for the thread to end."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join)
        self._thread = None
        self._loop = None


def engine_for_loop(engine: AsyncEngine) -> tuple[AsyncEngine, bool]:
    """(engine usable from another event loop, whether it is a new engine the caller must dispose)."""
    if isinstance(engine.pool, NullPool):
        return engine, False  # every use opens its own connection: nothing is bound to a loop
    from ollama_guard.gateway.db import create_engine_for

    return create_engine_for(engine.url.render_as_string(hide_password=False)), True
