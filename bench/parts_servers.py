"""The servers `bench/gateway_parts.py` measures, one process each (`--serve VARIANT`).

Every variant runs on the gateway's own server set-up — `server._uvicorn_config` (uvicorn, uvloop,
httptools, `GuardHttpToolsProtocol`: header deadline, size caps, one send per response) after
`server.configure_protocol` — and the same cyclic-GC settings the gateway applies at start-up, so
two variants differ only by the part added between them:

* ``fixed``       — an ASGI app answering the canned upstream answer itself: HTTP parsing, the
                    ASGI cycle, the response and the client-side system calls (the floor);
* ``passthrough`` — reads the request body and forwards it with the gateway's pooled upstream client
                    (`gateway/upstream.py`), relaying the answer (streamed answers chunk by chunk):
                    adds the upstream client and its system calls;
* ``pipeline``    — the real `GatewayApp` (every stage, the real key store, limiter, ban list) with
                    Prometheus metrics replaced by no-op objects and the audit recorder by one that
                    drops records;
* ``metrics``     — the same with the real metrics;
* ``full``        — the same with the real audit recorder too (spool + writer process): the gateway
                    as `ollama-guard serve` runs it;
* ``quiet-pollers`` (optional) — ``pipeline`` with the key and ban pollers polling once an hour
                    instead of every 0.25 s: what the background polling costs the serving process;
* ``full-writer-0.2`` (optional) — ``full`` with the audit writer process looking at the spool every
                    0.2 s instead of every 0.02 s: how much of the writer's CPU is per batch.

`--profile-out FILE`: SIGUSR1 starts cProfile in the serving thread, a second SIGUSR1 stops it and
writes the stats to FILE (the driver profiles only the load it sends in between).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as gw_bench  # bench/gateway.py: the canned Ollama answers

READY = "gateway-parts listening on "
VARIANTS = ("fixed", "passthrough", "pipeline", "metrics", "full")
EXTRA_VARIANTS = ("quiet-pollers", "full-writer-0.2")
_STREAM_TYPES = (b"application/x-ndjson", b"text/event-stream")

Scope = dict[str, Any]


def canned(path: str) -> tuple[bytes, bytes]:
    """The content type and body the upstream stub (bench/gateway.py's nginx) answers `path` with."""
    if path == "/api/generate":
        return b"application/x-ndjson", gw_bench.GENERATE.encode()
    if path == "/api/show":
        return b"application/json", gw_bench.SHOW.encode()
    return b"application/json", gw_bench.TAGS.encode()


def gateway_gc() -> None:
    """What `GatewayApp.startup` does to the cyclic GC (so the floor variants pay the same for it)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


async def read_all(receive: Any) -> bytes:
    parts: list[bytes] = []
    more = True
    while more:
        message = await receive()
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Lifespan:
    on_ready: Any = None

    async def started(self) -> None:
        gateway_gc()

    async def stopped(self) -> None:
        return None

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.started()
                await send({"type": "lifespan.startup.complete"})
                if self.on_ready is not None:
                    self.on_ready()
            elif message["type"] == "lifespan.shutdown":
                await self.stopped()
                await send({"type": "lifespan.shutdown.complete"})
                return


class FixedBody(_Lifespan):
    """Answers every request with the upstream stub's own answer for its path (no upstream call)."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        await read_all(receive)
        ctype, body = canned(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})


class PassThrough(_Lifespan):
    """Forwards every request with the gateway's upstream client; no checks, no headers judged."""

    def __init__(self, upstream_url: str) -> None:
        from ollama_guard.gateway.config import GatewayConfig
        from ollama_guard.gateway.upstream import Upstream

        self.upstream = Upstream(GatewayConfig(upstream=upstream_url))

    async def started(self) -> None:
        await self.upstream.start()
        gateway_gc()

    async def stopped(self) -> None:
        await self.upstream.close()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        body = await read_all(receive)
        headers = [(b"Accept-Encoding", b"identity")]
        if body:
            headers.append((b"Content-Type", b"application/json"))
        resp = await self.upstream.open(scope["method"], scope["raw_path"].decode("latin-1"), headers,
                                        body or None)
        try:
            ctype = resp.content_type or b"application/octet-stream"
            if ctype.startswith(_STREAM_TYPES):
                await send({"type": "http.response.start", "status": resp.status,
                            "headers": [(b"content-type", ctype)]})
                async for chunk in resp.iter_chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await resp.read()
            await send({"type": "http.response.start", "status": resp.status,
                        "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(data))]})
            await send({"type": "http.response.body", "body": data})
        finally:
            resp.close()


class _Noop:
    """A metric that counts nothing (`labels(...)` is itself)."""

    def labels(self, *_: Any) -> _Noop:
        return self

    def inc(self, *_: Any) -> None:
        return None

    def dec(self, *_: Any) -> None:
        return None

    def set_function(self, *_: Any) -> None:
        return None


class NullMetrics:
    """`GatewayMetrics`' interface, measuring nothing."""

    def __init__(self) -> None:
        noop = _Noop()
        self.proxying = 0
        self.requests = self.upstream_errors = self.tokens = self.in_flight = noop
        self.refusals = self.auto_bans = self.bans_active = noop

    def observe(self, *_: Any) -> None:
        return None

    def watch_audit(self, *_: Any) -> None:
        return None

    def render(self) -> bytes:
        return b""


class NullRecorder:
    """The audit `Recorder`'s request-path interface, dropping every record."""

    def record(self, fields: Any) -> None:
        return None

    async def spool_before_forward(self, fields: Any) -> None:
        return None

    async def durable(self) -> bool:
        return True

    def accepting(self) -> bool:
        return True

    def backlog(self) -> int:
        return 0

    def healthy(self) -> bool:
        return True

    async def flush(self, wait: float = 10.0) -> bool:
        return True

    async def close(self) -> None:
        return None


def gateway_app(config: Any, *, metrics: bool, audit: bool) -> Any:
    from ollama_guard.gateway.app import GatewayApp
    from ollama_guard.gateway.services import Services

    class PartsGateway(GatewayApp):
        async def startup(self) -> None:
            if not audit:
                self.services = await Services.build(self.config)
                await self.services.audit.close()  # the real recorder (and its writer) stopped again
                self.services.audit = NullRecorder()
            await super().startup()

    app = PartsGateway(config)
    if not metrics:
        app.metrics = app.forward.metrics = NullMetrics()  # type: ignore[assignment]
    return app


def quiet_pollers() -> None:
    """The key and ban pollers poll once an hour instead of every 0.25 s (and the key snapshot never
    goes stale): a measurement of what polling costs the serving process, never a configuration."""
    import ollama_guard.gateway.bans as bans_module
    import ollama_guard.gateway.keys as keys_module

    key_init, ban_init = keys_module.KeyAuthenticator.__init__, bans_module.BanList.__init__

    def keys(self: Any, engine: Any, secret: bytes, **_: Any) -> None:
        key_init(self, engine, secret, poll_interval=3600.0, stale_after=1e9)

    def bans(self: Any, engine: Any, **_: Any) -> None:
        ban_init(self, engine, poll_interval=3600.0)

    keys_module.KeyAuthenticator.__init__ = keys  # type: ignore[method-assign]
    bans_module.BanList.__init__ = bans  # type: ignore[method-assign]


def slow_writer(interval: float) -> None:
    """The audit writer process polls its spool every `interval` seconds (a measurement only)."""
    from ollama_guard.gateway.audit import recorder as recorder_module

    init = recorder_module.Recorder.__init__

    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["writer_settings"] = {**(kwargs.get("writer_settings") or {}), "interval": interval}
        init(self, *args, **kwargs)

    recorder_module.Recorder.__init__ = patched  # type: ignore[method-assign]


def install_profiler(out: Path) -> None:
    """SIGUSR1 toggles cProfile in this (the serving) thread; the second one writes the stats. The
    profiler's clock is the thread's CPU time, so time the thread spends descheduled (a busy shared
    machine) is not charged to whatever it was doing; each clock read is itself a system call, which
    inflates every call's time."""
    profiler = cProfile.Profile(time.thread_time)
    state = {"on": False}

    def toggle(_signum: int, _frame: Any) -> None:
        if not state["on"]:
            state["on"] = True
            profiler.enable()
        else:
            profiler.disable()
            state["on"] = False
            profiler.dump_stats(str(out))

    signal.signal(signal.SIGUSR1, toggle)


def serve(variant: str, upstream_url: str, db_url: str, profile_out: Path | None) -> None:
    import uvicorn

    from ollama_guard.gateway.config import load_config
    from ollama_guard.gateway.server import _prepare, _uvicorn_config, bind_socket, configure_protocol

    if variant == "quiet-pollers":
        quiet_pollers()
    if variant == "full-writer-0.2":
        slow_writer(0.2)
    config = load_config(None, {"db": db_url, "upstream": upstream_url, "listen": "127.0.0.1:0"}, {})
    asyncio.run(_prepare(config))
    configure_protocol(config)
    app: Any
    if variant == "fixed":
        app = FixedBody()
    elif variant == "passthrough":
        app = PassThrough(upstream_url)
    else:
        full = variant.startswith("full")
        app = gateway_app(config, metrics=full or variant == "metrics", audit=full)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app.on_ready = lambda: print(f"{READY}http://127.0.0.1:{port}", flush=True)
    if profile_out is not None:
        install_profiler(profile_out)
    uvicorn.Server(_uvicorn_config(config, app)).run(sockets=[sock])
