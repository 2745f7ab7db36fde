"""The state layer the stages consult: key store, limiter, audit recorder (built at start-up)."""

from __future__ import annotations

import logging
from typing import Any

from ollama_guard.gateway.config import GatewayConfig

log = logging.getLogger("ollama_guard.gateway")


class Services:
    """Key store (`authenticate`), limiter (`limits`, `account`), audit recorder (`record`), ban list
    (`client`) and automatic bans (refusals)."""

    def __init__(
        self, authenticator: Any, limiter: Any, audit: Any, engine: Any = None, secret: bytes | None = None,
        bans: Any = None, autoban: Any = None,
    ) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.audit = audit
        self.engine = engine
        self.secret = secret  # the server secret (the console signs its sessions with a key derived from it)
        self.bans = bans
        self.autoban = autoban

    @classmethod
    async def build(cls, config: GatewayConfig) -> Services:
        from ollama_guard.gateway.audit import Recorder
        from ollama_guard.gateway.autoban import AutoBan
        from ollama_guard.gateway.bans import BanList
        from ollama_guard.gateway.db import create_engine_for
        from ollama_guard.gateway.keys import KeyAuthenticator
        from ollama_guard.gateway.limits import build_limiter
        from ollama_guard.gateway.secrets import load_server_secret

        engine = create_engine_for(config.db)
        secret = load_server_secret(config)
        authenticator = KeyAuthenticator(engine, secret)
        limiter = build_limiter(config, config.workers, engine)
        audit = Recorder(config.db, secret, spool_dir=config.audit_spool_dir,
                         max_backlog=config.audit_max_backlog, sync_answers=config.audit_sync == "answer",
                         reserve_ahead=config.audit_reserve_ahead)
        await authenticator.start()
        await limiter.start()
        await audit.start()
        bans = BanList(engine)
        await bans.start()
        return cls(authenticator, limiter, audit, engine, secret, bans, AutoBan(config, bans, authenticator))

    async def close(self) -> None:
        parts = (self.autoban, self.bans, self.audit, self.limiter, self.authenticator)
        for part in (p for p in parts if p is not None):
            try:
                await part.close()
            except Exception:  # closing must go on for the other parts
                log.exception("error while closing %s", type(part).__name__)
        if self.engine is not None:
            await self.engine.dispose()
