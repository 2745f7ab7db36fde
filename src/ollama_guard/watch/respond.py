"""`watch --ban`: the attacking address of each high or critical alert is banned in the gateway's
database, so every gateway replica refuses it within a second.

Never banned: loopback and `--trusted` networks (the owner), and the gateway's `trusted_proxies` and
`ban_allowlist` when `--config` names its configuration. Caveat, written in the docs: Ollama's own access
log takes the client address from X-Forwarded-For when anyone sends one, so a client that can reach
Ollama directly can name an address of its choosing; the gateway's audit log cannot be forged so.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any

from ollama_guard.findings import Severity
from ollama_guard.investigate.events import ClientClassifier

BAN_SEVERITIES = (Severity.HIGH, Severity.CRITICAL)


class Banner:
    def __init__(self, db_url: str, minutes: float, classifier: ClientClassifier,
                 exempt: Iterable[str], notice: Callable[[str], None]) -> None:
        self.db_url = db_url
        self.minutes = minutes
        self.classifier = classifier
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self.notice = notice
        self._engine: Any = None
        self._until: dict[str, float] = {}  # address → when our ban of it ends (no re-ban before)
        self.banned: list[str] = []

    def _bannable(self, client: str) -> bool:
        if self.classifier.is_owner(client):
            return False
        try:
            from ollama_guard.gateway.bans import canonical

            ip = ipaddress.ip_address(canonical(client))
        except Exception:
            return False
        return not any(ip in net for net in self.exempt if net.version == ip.version)

    async def __call__(self, alert: dict[str, Any]) -> None:
        if Severity(alert["severity"]) not in BAN_SEVERITIES:
            return
        client = (alert.get("evidence") or {}).get("client")
        if not client or not self._bannable(client):
            return
        now = time.monotonic()
        if self._until.get(client, 0) > now:
            return
        from ollama_guard.gateway.bans import BanStore, ensure_schema
        from ollama_guard.gateway.db import create_engine_for

        reason = f"watch: {alert['rule']} ({alert['severity']}) from {alert.get('source', '?')}"
        try:
            if self._engine is None:
                self._engine = create_engine_for(self.db_url)
                await ensure_schema(self._engine)
            await BanStore(self._engine).add(client, self.minutes, reason, source="watch")
        except Exception as exc:  # the watch goes on; the alert has been sent regardless
            self.notice(f"could not ban {client}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            return
        if len(self._until) > 10_000:
            self._until = {a: t for a, t in self._until.items() if t > now}
        self._until[client] = now + self.minutes * 60
        self.banned.append(client)
        self.notice(f"banned {client} for {self.minutes:g} min ({alert['rule']}, {alert['severity']})")

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


class Recorder:
    """`watch --db URL`: every alert also goes to the gateway database (``og_alerts``, no evidence), where
    the console lists the latest. A database error is said once; the watch goes on."""

    def __init__(self, db_url: str, notice: Callable[[str], None]) -> None:
        self.db_url = db_url
        self.notice = notice
        self._engine: Any = None
        self._store: Any = None
        self._failing = False

    async def __call__(self, alert: dict[str, Any]) -> None:
        from ollama_guard.gateway.alerts import AlertStore
        from ollama_guard.gateway.db import create_engine_for

        try:
            if self._store is None:
                self._engine = create_engine_for(self.db_url)
                self._store = AlertStore(self._engine)
            await self._store.record(alert)
            self._failing = False
        except Exception as exc:
            if not self._failing:
                self.notice(f"cannot record alerts in the database: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
            self._failing = True

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
