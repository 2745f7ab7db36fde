"""How `serve` stops (SIGTERM, or Ctrl-C).

1. SIGTERM: every process is not ready at once (`/-/ready` 503, see `app.GatewayApp._drain_on_sigterm`)
   and goes on serving for `shutdown_delay` seconds, so a load balancer polling readiness takes it out
   of rotation before anything closes.
2. Then uvicorn's graceful shutdown: stop accepting, close idle connections, let the requests in flight
   finish (at most `timeout_graceful_shutdown` seconds), run the application's shutdown.
3. From the moment the server stops accepting, `drain.ListenerDrain` answers whatever still connects
   with a clean 503 and closes the listening socket last, once nothing can join its queue: with
   `--workers N` in the supervisor (`DrainingSupervisor`), which holds the socket until every worker
   has ended; in one process in the server itself (`DrainingServer`, on a descriptor of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import threading
import time

import uvicorn
from uvicorn.supervisors import Multiprocess

from ollama_guard.errors import GuardError
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.drain import ListenerDrain


class DrainingServer(uvicorn.Server):
    """uvicorn's server (one process), except that when it stops accepting, `drain` (holding its own
    descriptor of the listening socket) answers what still connects, and closes the socket last."""

    drain: ListenerDrain | None = None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.drain is not None:
            for server in getattr(self, "servers", ()):
                server.close()  # stop accepting here first, so the drain does not compete with us
            self.drain.start()
        await super().shutdown(sockets)
        if self.drain is not None:
            await asyncio.to_thread(self.drain.finish)


class DrainingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, except that SIGTERM gives the workers `shutdown_delay` seconds (they
    are not ready from the signal on, still serving) before they are told to stop, and that once they
    are, `drain` answers what still connects to the listening socket (which this process holds open
    until the workers have ended) and closes it last."""

    shutdown_delay = 0.0
    _term_at: float | None = None
    drain: ListenerDrain | None = None

    def terminate_all(self) -> None:
        super().terminate_all()
        if self.drain is not None:
            self.drain.start()

    def join_all(self) -> None:
        super().join_all()
        if self.drain is not None:
            self.drain.finish()

    def handle_term(self) -> None:
        if self._term_at is None and self.shutdown_delay > 0:
            self._term_at = time.monotonic()
            for process in self.processes:  # not ready at once, in every worker
                with contextlib.suppress(OSError, ProcessLookupError):
                    if process.pid is not None:
                        os.kill(process.pid, signal.SIGTERM)
            threading.Timer(self.shutdown_delay, self.should_exit.set).start()
            return
        self.should_exit.set()


def drain_tls_context(config: GatewayConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key) if config.tls_key else None)
    except (ssl.SSLError, OSError) as exc:
        raise GuardError(f"cannot load the TLS certificate {config.tls_cert}: {exc.strerror or exc}") \
            from None
    return context
