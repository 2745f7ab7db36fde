"""`ollama-guard decoy`: run the Ollama-compatible decoy server."""

from __future__ import annotations

import math
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import click

from ollama_guard.decoy.app import DecoyApp
from ollama_guard.decoy.cors import default_origins, origins_from_env
from ollama_guard.decoy.hostguard import HOST_GUARD_SINCE, is_loopback_listener
from ollama_guard.decoy.library import install_library
from ollama_guard.decoy.requestlog import RequestLog
from ollama_guard.decoy.serverlog import ServerLog
from ollama_guard.decoy.state import DecoySettings, DecoyState
from ollama_guard.decoy.transport.server import GoHTTPServer, Limits
from ollama_guard.errors import InputError
from ollama_guard.ollama.versions import InvalidVersion, parse_version

READY_PREFIX = "ollama-guard decoy listening on "


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0 = any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve --host {host!r}: {exc.strerror}") from exc
    family, socktype, proto, _, address = infos[0]
    sock = socket.socket(family, socktype, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, option: str) -> int:
    """`2G`, `500M`, `1048576` → bytes (InputError for anything else)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _UNITS and value[-1:] else ""
    number = value[:-1] if unit else value
    try:
        amount = float(number)
    except ValueError:
        raise InputError(f"{option} {text!r} is not a size (bytes, or a number with K, M, G or T)") from None
    if not math.isfinite(amount) or amount <= 0:
        raise InputError(f"{option} {text!r} must be a positive size")
    return int(amount * _UNITS[unit])


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@click.command("decoy")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=11434,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free port.",
)
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model store in Ollama's layout. Default: a fresh temporary directory, deleted on exit "
    "(the decoy never touches ~/.ollama unless you point it there).",
)
@click.option(
    "--ollama-version",
    default="0.6.5",
    show_default=True,
    help="Version to report and emulate (e.g. 0.1.33 answers like the old versions did).",
)
@click.option(
    "--seed-models",
    default=0,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Create this many small fake models at start (deterministic names and contents).",
)
@click.option(
    "--request-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per request (written before the response's last byte is sent).",
)
@click.option(
    "--server-log",
    help="Also write an Ollama-format server log (startup lines, one [GIN] line per request) to this file; "
    "'-' = stderr.",
)
@click.option(
    "--origins",
    default=None,
    help="Extra allowed CORS origins, comma-separated ('*' allows all). Default: $OLLAMA_ORIGINS.",
)
@click.option(
    "--stream-delay",
    default=0.01,
    show_default=True,
    type=click.FloatRange(0, 10),
    help="Seconds between streamed chunks.",
)
@click.option(
    "--no-host-guard",
    is_flag=True,
    help="Disable the Host-header check on loopback listeners (versions before 0.1.29 never had it).",
)
@click.option(
    "--library",
    is_flag=True,
    help="Also install public library models (gemma:2b, llama3.2) with their real manifests, digests and "
    "sizes, backed by sparse files (a few KiB on disk).",
)
@click.option(
    "--upload-quota",
    default="2G",
    show_default=True,
    help="Disk the model store may fill (blob uploads stop there and answer as a full disk would); "
    "bytes or K/M/G.",
)
@click.option(
    "--request-log-max",
    default="256M",
    show_default=True,
    help="Rotate the request log past this size (3 old files kept); bytes or K/M/G.",
)
@click.option(
    "--shown-models-dir",
    default="/usr/share/ollama/.ollama/models",
    show_default=True,
    help="The models directory answers name (FROM lines, error messages), whatever --models-dir is.",
)
@click.option(
    "--max-conns-per-ip",
    default=64,
    show_default=True,
    type=click.IntRange(1, 100000),
    help="Open connections one client address may hold; more are dropped on accept.",
)
def decoy(
    host: str,
    port: int,
    models_dir: Path | None,
    ollama_version: str,
    seed_models: int,
    request_log: Path | None,
    server_log: str | None,
    origins: str | None,
    stream_delay: float,
    no_host_guard: bool,
    upload_quota: str,
    request_log_max: str,
    max_conns_per_ip: int,
    shown_models_dir: str,
    library: bool,
) -> None:
    """Serve an Ollama-compatible API backed by a real on-disk model store and fake, deterministic models.

    Prints `ollama-guard decoy listening on URL` as its first stdout line once it accepts connections.
    Never makes a network connection of its own (pull fabricates models locally, push only records).
    """
    if not math.isfinite(stream_delay):  # click's FloatRange lets nan through
        raise InputError(f"--stream-delay {stream_delay} is not a number of seconds")
    try:
        version = parse_version(ollama_version)
    except InvalidVersion as exc:
        raise InputError(str(exc)) from None
    quota_bytes = parse_size(upload_quota, "--upload-quota")
    log_max = parse_size(request_log_max, "--request-log-max")
    user_origins = origins.split(",") if origins is not None else origins_from_env()
    sock = bind_socket(host, port)
    temporary = models_dir is None
    root = Path(tempfile.mkdtemp(prefix="models-")) if models_dir is None else models_dir
    log: RequestLog | None = None
    gin_log: ServerLog | None = None
    try:
        settings = DecoySettings(
            version=str(version) if ollama_version.startswith("v") else ollama_version,
            models_dir=root.resolve(),
            origins=tuple(default_origins(user_origins, str(version))),
            host_guard=not no_host_guard
            and version >= parse_version(HOST_GUARD_SINCE)
            and is_loopback_listener(sock.getsockname()[0]),
            stream_delay=stream_delay,
            upload_quota=quota_bytes,
            shown_models_dir=shown_models_dir.rstrip("/") or "/",
        )
        state = DecoyState.open(settings)
        if seed_models:
            state.seed(seed_models)
        if library:
            install_library(state.store)
            state.catalog.invalidate()
        log = RequestLog(request_log, max_bytes=log_max) if request_log is not None else None
        if server_log is not None:
            gin_log = ServerLog(server_log)
            bound_host, bound_port = sock.getsockname()[:2]
            gin_log.startup(
                host=bound_host,
                port=bound_port,
                models_dir=settings.models_dir,
                origins=list(settings.origins),
                version=settings.version,
                blobs=sum(1 for _ in state.store.iter_blobs()),
            )
        state.server_log = gin_log
        serve(DecoyApp(state, log, gin_log), sock, settings, Limits(max_conns_per_ip=max_conns_per_ip))
    except OSError as exc:
        raise InputError(f"decoy failed: {exc}") from exc
    finally:
        sock.close()
        if log is not None:
            log.close()
        if gin_log is not None:
            gin_log.close()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def serve(app: DecoyApp, sock: socket.socket, settings: DecoySettings, limits: Limits | None = None) -> None:
    """Serve on an already bound socket with the Go-like transport on uvloop; print the ready line once
    accepting; stop on SIGTERM/SIGINT."""
    import asyncio

    import uvloop

    url = url_for(sock)

    async def main() -> None:
        server = GoHTTPServer(app, limits, on_reject=app.record_rejection)
        listener = await server.start(sock)
        click.echo(f"{READY_PREFIX}{url}")
        sys.stdout.flush()
        click.echo(f"models dir: {settings.models_dir}", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            listener.close()
            await server.close_connections()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
