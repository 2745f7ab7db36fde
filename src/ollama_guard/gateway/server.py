"""Running the gateway: check the setup, bind the socket, announce the URL, hand over to uvicorn.

* The listening socket is bound here (so `--listen 127.0.0.1:0` can report the port it got) and
  passed to uvicorn; with `--workers N` every worker process accepts on that same socket.
* The database schema and the server secret are prepared once in the parent before any worker
  starts, so a bad `--db` or secret file ends the command with a one-line error.
* uvicorn runs with uvloop and httptools; our protocol subclass records whether the request target
  was in origin form (`/path`) so the app can refuse absolute-form targets (`GET http://x/api/tags`).
* How it stops (SIGTERM: not ready, drain window, graceful shutdown, no queued connection reset) is
  `gateway/shutdown.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ollama_guard.errors import GuardError
from ollama_guard.gateway.app import GatewayApp
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.drain import ListenerDrain
from ollama_guard.gateway.ratelog import GATEWAY_LOG
from ollama_guard.gateway.shutdown import DrainingServer, DrainingSupervisor, drain_tls_context
from ollama_guard.gateway.stages.client import address_group

READY_PREFIX = "ollama-guard gateway listening on "
_CONFIG_ENV = "OLLAMA_GUARD__SERVE_CONFIG_JSON"
PREPARE_TIMEOUT = 15.0  # seconds for the start-up checks of the database and Redis


class _CoalescingTransport:
    """Delegates to the real transport, but writes issued within one event-loop step go out as one
    send: uvicorn writes a response's status line + headers and its body separately, which cost a
    system call each (measured: ~10 % of the gateway's CPU per small request)."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        pending = self._pending
        if not pending:
            self._loop.call_soon(self._flush)
        pending.append(data)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two additions:

    * a note in the scope whether the request target was `/…` (origin form), so the app can refuse
      absolute-form targets;
    * a header deadline: a request's headers must be complete within `header_timeout` seconds of the
      connection opening or of the previous response (uvicorn itself lets a client trickle header
      bytes forever — slowloris);
    * writes of one event-loop step are sent together (`_CoalescingTransport`);
    * size caps on the request target and the header block (llhttp has none): past them the parser
      callback fails, and uvicorn answers 400 and closes the connection;
    * at shutdown, a connection that has not yet sent a whole request head (accepted a moment ago,
      its request maybe on the way) is not closed at once — that would reset it with its request
      unread — but gets `first_request_grace` seconds to send it; it is then served, with
      `Connection: close`.
    """

    header_timeout: ClassVar[float] = 30.0
    unauthenticated_timeout: ClassVar[float] = 10.0
    max_per_client: ClassVar[int] = 256
    exempt: ClassVar[tuple[Any, ...]] = ()  # trusted proxies: every client comes through them
    open_per_client: ClassVar[dict[str, int]] = {}
    _client: str | None = None
    max_target_bytes: ClassVar[int] = 16 * 1024
    max_header_bytes: ClassVar[int] = 64 * 1024
    # The header deadline is a time, not a timer per request: `_deadline_at` is set when the connection
    # opens and when a response completes, cleared when a request's headers are complete; one timer per
    # connection (`_deadline_timer`) checks it and re-arms itself when the deadline has moved on (a
    # timer armed and cancelled for every request cost a call_later + cancel on the hot path).
    _deadline_at: float | None = None
    _deadline_timer: asyncio.TimerHandle | None = None
    _header_bytes = 0
    first_request_grace: ClassVar[float] = 2.0
    _shutting_down = False

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_target_bytes:
            raise ValueError("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise ValueError("request headers too large")
        super().on_header(name, value)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self.conn_state = {"authenticated": False}  # the app marks it (`mark_authenticated`)
        peer = transport.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) and peer else ""
        if self.max_per_client and client and not _exempt(client, self.exempt):
            client = address_group(client)  # an IPv6 client counts per /64 (one host or customer)
            count = self.open_per_client.get(client, 0)
            if count >= self.max_per_client:
                transport.abort()  # over the cap: no answer, no fd kept
                return
            self.open_per_client[client] = count + 1
            self._client = client
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._deadline_at = None  # the request is in; the next deadline starts when it is answered
        self.scope["ollama_guard.origin_form"] = self.url.startswith(b"/")  # type: ignore[typeddict-unknown-key]
        self.scope["ollama_guard.connection"] = self.conn_state  # type: ignore[typeddict-unknown-key]
        super().on_headers_complete()
        if self._shutting_down and self.cycle is not None:
            self.cycle.keep_alive = False  # the one request a connection gets during shutdown

    def shutdown(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self._shutting_down = True  # no request yet: wait a moment for it rather than reset it
            self._arm_header_deadline(self.first_request_grace)
            return
        super().shutdown()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline_at = None
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        client, self._client = self._client, None
        if client is not None:
            left = self.open_per_client.get(client, 1) - 1
            if left > 0:
                self.open_per_client[client] = left
            else:
                self.open_per_client.pop(client, None)
        super().connection_lost(exc)

    def _arm_header_deadline(self, limit: float | None = None) -> None:
        timeout = self.header_timeout
        if not self.conn_state["authenticated"]:  # an idle connection nobody has vouched for
            timeout = min(timeout, self.unauthenticated_timeout)
        if limit is not None:
            timeout = min(timeout, limit)
        deadline = self._deadline_at = self.loop.time() + timeout
        timer = self._deadline_timer
        if timer is not None and timer.when() > deadline:  # a shorter limit than the one it was set for
            timer.cancel()
            timer = None
        if timer is None:
            self._deadline_timer = self.loop.call_at(deadline, self._check_header_deadline)

    def _check_header_deadline(self) -> None:
        self._deadline_timer = None
        deadline = self._deadline_at
        if deadline is None:
            return  # a request is being answered; its response sets the next deadline
        if self.loop.time() < deadline - 0.001:  # requests were answered since: the deadline moved on
            self._deadline_timer = self.loop.call_at(deadline, self._check_header_deadline)
        elif not self.transport.is_closing():
            self.transport.close()


def _exempt(client: str, networks: tuple[Any, ...]) -> bool:
    if not networks:
        return False
    from ollama_guard.gateway.stages.client import in_networks

    return in_networks(client, networks)


class _NoIncompleteResponseLine(logging.Filter):
    """The gateway cuts off clients that read nothing of a stream and says so itself (rate-limited);
    uvicorn's own line for the response it then leaves unfinished would be one line per such client."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def configure_protocol(config: GatewayConfig) -> None:
    """The connection-level limits and the log's pace, from the configuration (in every worker)."""
    logging.getLogger("uvicorn.error").addFilter(_NoIncompleteResponseLine())
    GATEWAY_LOG.interval = config.error_log_interval
    GuardHttpToolsProtocol.header_timeout = config.request_timeout
    GuardHttpToolsProtocol.unauthenticated_timeout = config.unauthenticated_timeout
    GuardHttpToolsProtocol.max_per_client = config.max_connections_per_client
    GuardHttpToolsProtocol.exempt = config.trusted_proxy_networks


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (systemd's default soft limit is 1024:
    ~1000 idle connections would lock everyone out). Returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


async def _prepare(config: GatewayConfig) -> None:
    from ollama_guard.gateway.db import bind_secret, create_engine_for, init_schema, redact_url
    from ollama_guard.gateway.limits import build_limiter
    from ollama_guard.gateway.secrets import load_server_secret, secret_fingerprint

    limiter = build_limiter(config, config.workers)  # refuses several workers without Redis
    if config.redis:
        # a bad or unreachable Redis URL is a one-line error here, not a failed uvicorn start-up
        try:
            async with asyncio.timeout(PREPARE_TIMEOUT):
                await limiter.start()
        except TimeoutError:
            raise GuardError(f"cannot reach Redis within {PREPARE_TIMEOUT:g} s") from None
        finally:
            await limiter.close()
    secret = load_server_secret(config)  # creates the secret file once, before workers race for it
    engine = create_engine_for(config.db)
    try:
        async with asyncio.timeout(PREPARE_TIMEOUT):
            await init_schema(engine)
            # a secret that is not this database's is a one-line error here, not a failed start-up
            async with engine.begin() as conn:
                await bind_secret(conn, secret_fingerprint(secret))
    except TimeoutError:
        raise GuardError(
            f"cannot reach database {redact_url(config.db)} within {PREPARE_TIMEOUT:g} s"
        ) from None
    finally:
        await engine.dispose()


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise GuardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url(config: GatewayConfig, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.tls_cert else "http"
    return f"{scheme}://{shown}:{port}"


def create_app() -> GatewayApp:
    """Factory used by worker processes (`--workers N`): the configuration comes from the parent."""
    raw = os.environ.get(_CONFIG_ENV)
    if not raw:
        raise GuardError("gateway worker started without its configuration")
    config = GatewayConfig.model_validate_json(raw)
    configure_protocol(config)
    app = GatewayApp(config)
    app.handle_signals = True
    return app


def _uvicorn_config(config: GatewayConfig, app: Any, **extra: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http=GuardHttpToolsProtocol,
        lifespan="on",
        ws="none",
        access_log=False,
        server_header=False,
        date_header=True,
        log_level="warning",
        proxy_headers=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=config.shutdown_timeout,
        ssl_certfile=str(config.tls_cert) if config.tls_cert else None,
        ssl_keyfile=str(config.tls_key) if config.tls_key else None,
        h11_max_incomplete_event_size=64 * 1024,
        **extra,
    )


def serve(config: GatewayConfig) -> int:
    """Run until SIGINT/SIGTERM. Prints the ready line as the first stdout line."""
    for path in (config.tls_cert, config.tls_key):
        if path is not None and not path.is_file():
            raise GuardError(f"TLS file {path} does not exist")
    files = raise_fd_limit()
    if files < 4096:
        print(f"ollama-guard: warning: only {files} open files allowed (raise LimitNOFILE / ulimit -n)",
              file=sys.stderr)
    asyncio.run(_prepare(config))
    configure_protocol(config)
    sock = bind_socket(config.listen_host, config.listen_port)
    url = _url(config, sock)
    try:
        if config.workers == 1:
            app = GatewayApp(config)
            app.handle_signals = True
            server = DrainingServer(_uvicorn_config(config, app))
            # the drain holds its own descriptor of the listening socket: uvicorn closes `sock`
            server.drain = ListenerDrain(sock.dup(), drain_tls_context(config))
            announced = False

            def announce() -> None:
                nonlocal announced
                if not announced:
                    announced = True
                    print(f"{READY_PREFIX}{url}", flush=True)

            app.on_ready = announce
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass  # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a clean stop
            finally:
                server.drain.finish()  # done already after a shutdown; closes the descriptor otherwise
            if not announced:
                raise GuardError("the gateway could not start (see the messages above)")
            return 0
        os.environ[_CONFIG_ENV] = config.model_dump_json()
        uv_config = _uvicorn_config(
            config, "ollama_guard.gateway.server:create_app", factory=True, workers=config.workers
        )
        print(f"{READY_PREFIX}{url}", flush=True)
        supervisor = DrainingSupervisor(uv_config, sockets=[sock])
        supervisor.shutdown_delay = config.shutdown_delay
        supervisor.drain = ListenerDrain(sock, drain_tls_context(config))
        try:
            supervisor.run()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        sock.close()
        sys.stdout.flush()
