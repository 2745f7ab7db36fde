"""Readiness (`GET /-/ready`): whether this process should be sent traffic, checked in the background
once a second so the answer costs nothing and tells the public nothing but yes or no.

Ready means: Ollama answers (`GET /`, any status below 500, within 2 s), the key snapshot is fresh
(the key store answered within its staleness limit), the limit store answers (Redis `PING`), and
the audit recorder's backlog is below `ready_max_audit_backlog`. From the moment a shutdown starts
(SIGTERM) the process is not ready, while it still serves for `shutdown_delay` seconds so a load
balancer can take it out of rotation before its listener closes.

Changes of state are logged (why it is not ready, and when it is again), so a dead upstream at start
is one warning, repeated as a reminder every minute while it lasts — not silence, not a line per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("ollama_guard.gateway")

CHECK_INTERVAL = 1.0
UPSTREAM_TIMEOUT = 2.0
STORE_TIMEOUT = 1.0
REMIND_EVERY = 60.0


class Readiness:
    def __init__(self, upstream: Any, upstream_url: str, max_backlog: int) -> None:
        self._upstream = upstream
        self._url = upstream_url
        self._max_backlog = max_backlog
        self.draining = False
        self.ok = False
        self.reason = "starting"
        self._task: asyncio.Task[None] | None = None
        self._last_said = float("-inf")

    @property
    def ready(self) -> bool:
        return self.ok and not self.draining

    def start(self, services: Any) -> None:
        self._task = asyncio.create_task(self._run(services), name="ollama-guard readiness")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, services: Any) -> None:
        while True:
            reason = await self.check(services)
            self._note(reason)
            await asyncio.sleep(CHECK_INTERVAL)

    def _note(self, reason: str | None) -> None:
        now = time.monotonic()
        if reason is None:
            if not self.ok and self.reason != "starting":
                log.warning("ready again (%s no longer)", self.reason)
            self.ok, self.reason = True, ""
            return
        if self.ok or reason != self.reason or now - self._last_said >= REMIND_EVERY:
            log.warning("not ready: %s (checking again every %g s)", reason, CHECK_INTERVAL)
            self._last_said = now
        self.ok, self.reason = False, reason

    async def check(self, services: Any) -> str | None:
        """None when ready, else why not (for the log, never for the public)."""
        reason = await self._check_upstream()
        if reason is not None:
            return reason
        authenticator = getattr(services, "authenticator", None)
        if authenticator is not None and getattr(authenticator, "fresh", True) is False:
            return "the API key snapshot is stale (key store unreadable)"
        ping = getattr(getattr(services, "limiter", None), "ping", None)
        if ping is not None:
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await ping()
            except Exception as exc:  # any failure: not ready
                return f"the limit store does not answer ({type(exc).__name__})"
        backlog = getattr(getattr(services, "audit", None), "backlog", 0)
        if isinstance(backlog, int) and backlog >= self._max_backlog:
            return f"the audit backlog is {backlog} records (limit {self._max_backlog})"
        return None

    async def _check_upstream(self) -> str | None:
        try:
            async with asyncio.timeout(UPSTREAM_TIMEOUT):
                resp = await self._upstream.open("GET", "/", [], None)
                try:
                    await resp.read()
                finally:
                    resp.close()
        except Exception as exc:
            detail = str(exc) or type(exc).__name__
            return f"upstream {self._url} does not answer ({detail})"
        if resp.status >= 500:
            return f"upstream {self._url} answers {resp.status}"
        return None
