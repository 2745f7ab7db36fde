"""Readiness (`GET /-/ready`): whether this process should be sent traffic. It tells the public
nothing but yes or no; why not goes to the log.

Ready means: Ollama answers (`GET /`, any status below 500, within 2 s), the key snapshot is fresh
(the key store answered within its staleness limit), the limit store answers (Redis `PING`), and
the audit recorder's backlog is below `ready_max_audit_backlog`. The checks run when someone asks
(an orchestrator polling `/-/ready`), at most once a second whatever the number of askers, so a
gateway nobody polls sends Ollama nothing of its own. From the moment a shutdown starts (SIGTERM)
the process is not ready, while it still serves for `shutdown_delay` seconds so a load balancer can
take it out of rotation before its listener closes.

At start the upstream is tried once; if it does not answer, a warning says so and it is tried again
every 2 s (a reminder in the log every minute) until it does.

The log says when readiness changes and why — once per cause (`not ready: …`, `ready again: …`), with a
reminder every minute while it lasts — never once per probe, however the details (a growing backlog, a
different error) change in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, NamedTuple

log = logging.getLogger("ollama_guard.gateway")

CACHE_SECONDS = 1.0
UPSTREAM_TIMEOUT = 2.0
STORE_TIMEOUT = 1.0
RETRY_EVERY = 2.0
REMIND_EVERY = 60.0


class NotReady(NamedTuple):
    """Why this process is not ready: `kind` names the dependency, `text` is for the log only."""

    kind: str
    text: str


class Readiness:
    def __init__(self, upstream: Any, upstream_url: str, max_backlog: int) -> None:
        self._upstream = upstream
        self._url = upstream_url
        self._max_backlog = max_backlog
        self.draining = False
        self._checked_at = float("-inf")
        self._reason: NotReady | None = NotReady("start", "not checked yet")
        self._since = time.monotonic()  # when the current state (ready, or not for this kind) began
        self._reminded = self._since
        self._running: asyncio.Task[NotReady | None] | None = None
        self._retry: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Try the upstream once; when it does not answer, warn and keep trying in the background."""
        reason = await self._check_upstream()
        if reason is not None:
            log.warning("%s; trying again every %g s", reason, RETRY_EVERY)
            self._retry = asyncio.create_task(self._until_upstream_answers(), name="ollama-guard upstream")

    async def close(self) -> None:
        for task in (self._retry, self._running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._retry = self._running = None

    async def _until_upstream_answers(self) -> None:
        said = time.monotonic()
        while True:
            await asyncio.sleep(RETRY_EVERY)
            reason = await self._check_upstream()
            if reason is None:
                log.warning("upstream %s answers now", self._url)
                return
            if time.monotonic() - said >= REMIND_EVERY:
                log.warning("%s (still)", reason)
                said = time.monotonic()

    async def ready(self, services: Any) -> bool:
        if self.draining:
            return False
        if time.monotonic() - self._checked_at >= CACHE_SECONDS:
            if self._running is None:
                self._running = asyncio.create_task(self.check(services))
            running = self._running
            try:
                reason = await asyncio.shield(running)
            finally:
                if self._running is running and running.done():
                    self._running = None
            self._note(reason)
            self._reason, self._checked_at = reason, time.monotonic()
        return self._reason is None

    def _note(self, reason: NotReady | None) -> None:
        """Log a change of state (or of cause), and a reminder every minute while not ready."""
        now = time.monotonic()
        previous = self._reason
        if (reason is None) != (previous is None) or (reason and previous and reason.kind != previous.kind):
            if reason is not None:
                log.warning("not ready: %s", reason.text)
            elif previous is not None and previous.kind != "start":  # not after start-up: the first check
                log.warning("ready again after %.0f s (was: %s)", now - self._since, previous.text)
            self._since = self._reminded = now
        elif reason is not None and now - self._reminded >= REMIND_EVERY:
            log.warning("still not ready: %s (for %.0f s)", reason.text, now - self._since)
            self._reminded = now

    async def check(self, services: Any) -> NotReady | None:
        """None when ready, else why not (for the log, never for the public)."""
        reason = await self._check_upstream()
        if reason is not None:
            return NotReady("upstream", reason)
        authenticator = getattr(services, "authenticator", None)
        if authenticator is not None and getattr(authenticator, "fresh", True) is False:
            return NotReady("keys", "the API key snapshot is stale (key store unreadable)")
        ping = getattr(getattr(services, "limiter", None), "ping", None)
        if ping is not None:
            try:
                async with asyncio.timeout(STORE_TIMEOUT):
                    await ping()
            except Exception as exc:  # any failure: not ready
                return NotReady("limits", f"the limit store does not answer ({type(exc).__name__})")
        audit = getattr(services, "audit", None)
        backlog = getattr(audit, "backlog", 0)
        backlog = backlog() if callable(backlog) else backlog
        if isinstance(backlog, int) and backlog >= self._max_backlog:
            return NotReady("audit-backlog",
                            f"the audit backlog is {backlog} records (limit {self._max_backlog})")
        healthy = getattr(audit, "healthy", None)
        if callable(healthy) and not healthy():  # the writer process is down, failing or not yet connected
            return NotReady("audit-writer", "the audit pipeline is not writing")
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
