"""Test helpers for the gateway: keys in a test database, a running `ollama-guard serve`, raw HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.servers import GATEWAY_READY, GUARD_ARGV, process_output, start_process, stop_process


@dataclass
class KeySpec:
    name: str
    role: str
    models: Sequence[str] | None = None
    rpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None


def _config_for(db_url: str) -> Any:
    from ollama_guard.gateway.config import load_config

    return load_config(None, {"db": db_url}, {})


def create_keys(db_url: str, specs: Sequence[KeySpec]) -> dict[str, str]:
    """Create keys with the key store API; returns name → secret token."""
    from ollama_guard.gateway.db import create_engine_for, init_schema
    from ollama_guard.gateway.keys import KeyStore
    from ollama_guard.gateway.secrets import load_server_secret

    config = _config_for(db_url)

    async def work() -> dict[str, str]:
        engine = create_engine_for(db_url)
        try:
            await init_schema(engine)
            store = KeyStore(engine, load_server_secret(config))
            out: dict[str, str] = {}
            for spec in specs:
                _key, token = await store.create(
                    spec.name,
                    spec.role,
                    models=spec.models,
                    rpm=spec.rpm,
                    concurrency=spec.concurrency,
                    tokens_per_day=spec.tokens_per_day,
                )
                out[spec.name] = token
            return out
        finally:
            await engine.dispose()

    return asyncio.run(work())


def revoke_key(db_url: str, name: str) -> None:
    from ollama_guard.gateway.db import create_engine_for
    from ollama_guard.gateway.keys import KeyStore
    from ollama_guard.gateway.secrets import load_server_secret

    async def work() -> None:
        engine = create_engine_for(db_url)
        try:
            await KeyStore(engine, load_server_secret(_config_for(db_url))).revoke(name)
        finally:
            await engine.dispose()

    asyncio.run(work())


def audit_rows(db_url: str) -> list[dict[str, Any]]:
    """Every audit record written so far, oldest first."""
    import sqlite3

    path = db_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM og_audit_records ORDER BY id")]


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    url: str
    db_url: str
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def output(self) -> str:
        return process_output(self.proc)

    def stop(self) -> int | None:
        return stop_process(self.proc, grace=15)


@contextlib.contextmanager
def start_gateway(
    workdir: Path,
    upstream: str,
    *,
    db_url: str | None = None,
    config_toml: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 40.0,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[Gateway]:
    """`ollama-guard serve --listen 127.0.0.1:0` against `upstream`, stopped (SIGTERM) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = db_url or f"sqlite:///{workdir / 'guard.db'}"
    argv = [*GUARD_ARGV, "serve", "--listen", "127.0.0.1:0", "--upstream", upstream, "--db", db]
    if config_toml is not None:
        config_path = workdir / "gateway.toml"
        config_path.write_text(config_toml)
        argv += ["--config", str(config_path)]
    argv += list(extra_args)
    full_env = {"OLLAMA_GUARD_HOME": str(workdir / "home"), **(env or {})}
    proc, url = start_process(argv, GATEWAY_READY, timeout, env=full_env, preexec_fn=preexec_fn)
    gateway = Gateway(proc=proc, url=url, db_url=db)
    try:
        yield gateway
    finally:
        gateway.stop()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    host: str, port: int, data: bytes, *, timeout: float = 10.0, source: str | None = None
) -> RawResponse:
    """Send exact bytes (no client-side normalisation) and read one response."""
    with socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    ) as sock:
        sock.sendall(data)
        return read_response(sock, head_request=data.startswith(b"HEAD "))


def read_response(sock: socket.socket, *, head_request: bool = False) -> RawResponse:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head_request else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawResponse(status, headers, rest[:length])


def http_bytes(
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    host: str = "127.0.0.1",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    framed = any(k.lower() in ("content-length", "transfer-encoding") for k in headers or {})
    if body is not None and not framed:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
