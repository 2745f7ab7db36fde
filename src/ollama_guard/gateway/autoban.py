"""fail2ban in the gateway: an address that fails authentication ``ban_after`` times within
``ban_window`` seconds is banned for ``ban_minutes`` — in this process at once, and in the database
for every replica.

What counts: refusals for a missing, malformed, unknown, revoked or expired key (401), and requests
for paths outside Ollama's catalog (``route-not-allowed``) made without a valid key. A request made
with a valid key never counts, whatever it was refused for: a misconfigured client of ours must not
lock itself out. Never banned: ``trusted_proxies`` and ``ban_allowlist`` (default: loopback).

Each process counts its own failures (replicas behind a balancer each see a share); memory is bounded
(``MAX_TRACKED`` addresses, the least recently failing forgotten first).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ollama_guard.gateway.bans import BanList, canonical
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.stages.authenticate import presented_key

if TYPE_CHECKING:
    from ollama_guard.gateway.config import GatewayConfig
    from ollama_guard.gateway.request import Request

log = logging.getLogger("ollama_guard.gateway")

AUTH_FAILURES = frozenset({"no-key", "bad-key", "bad-auth-scheme", "conflicting-keys", "revoked-key",
                           "expired-key"})
UNKNOWN_PATH = "route-not-allowed"
MAX_TRACKED = 50_000


class AutoBan:
    def __init__(self, config: GatewayConfig, bans: BanList, authenticator: Any,
                 clock: Callable[[], float] | None = None) -> None:
        self.threshold = config.ban_after
        self.window = config.ban_window
        self.minutes = config.ban_minutes
        self.exempt = tuple(config.trusted_proxy_networks) + tuple(
            ipaddress.ip_network(c, strict=False) for c in config.ban_allowlist)
        self.bans = bans
        self.authenticator = authenticator
        self.clock = clock or time.monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.banned = 0
        self.on_ban: Callable[[], None] | None = None  # metrics

    def refused(self, req: Request, refusal: Refusal) -> None:
        """Called for every refusal; counts the ones that are authentication failures."""
        if self.threshold <= 0:
            return
        reason = refusal.reason
        if reason in AUTH_FAILURES:
            self.failure(req.facts.client)
        elif reason == UNKNOWN_PATH:
            headers = req.headers
            if headers is None or (headers.authorization is None and headers.api_key is None):
                self.failure(req.facts.client)
            else:  # is the key presented with it valid? (decided off the request path)
                task = asyncio.get_running_loop().create_task(self._unless_valid_key(req))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _unless_valid_key(self, req: Request) -> None:
        assert req.headers is not None
        try:
            key = await self.authenticator.authenticate(presented_key(req.headers))
        except Refusal:
            key = None
        except Exception:  # the key store cannot decide: do not count (never lock out our own)
            return
        if key is None or not key.is_usable():
            self.failure(req.facts.client)

    def _exempt(self, client: str) -> bool:
        try:
            ip = ipaddress.ip_address(canonical(client))
        except Exception:
            return True  # not an address: nothing to ban
        return any(ip in net for net in self.exempt if net.version == ip.version)

    def failure(self, client: str) -> None:
        now = self.clock()
        times = self._failures.get(client)
        if times is None:
            if self._exempt(client):
                return
            times = deque(maxlen=self.threshold)
            self._failures[client] = times
            if len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        times.append(now)
        if len(times) == self.threshold and now - times[0] <= self.window:
            del self._failures[client]
            self._ban(client)

    def _ban(self, client: str) -> None:
        self.banned += 1
        if self.on_ban is not None:
            self.on_ban()
        reason = f"{self.threshold} authentication failures within {self.window:g} s"
        log.warning("auto-banned %s for %g min: %s", client, self.minutes, reason)
        self.bans.ban_locally(client, self.minutes)
        future = self.bans.submit(self.bans.store.add(client, self.minutes, reason, source="auto"))
        future.add_done_callback(_report_failure)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _report_failure(future: Any) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        log.error("could not store an automatic ban: %s: %s", type(exc).__name__, first)
