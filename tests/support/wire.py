"""Raw-socket helpers for transport tests: send exact bytes, read everything back, compare servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GO_SOURCE = Path(__file__).resolve().parent.parent / "go" / "refserver"
_DATE = re.compile(rb"\r\nDate: [^\r\n]*")


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 3.0, half_close: bool = True) -> bytes:
    """Send `raw` on a fresh connection, half-close, and return every byte the server sends back."""
    with socket.create_connection(address, timeout=timeout) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        with contextlib.suppress(OSError):
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks)


def mask_date(data: bytes) -> bytes:
    return _DATE.sub(b"\r\nDate: <masked>", data)


def build_reference(out_dir: Path) -> Path | None:
    """`go build` the reference server; None when no Go toolchain is installed."""
    go = shutil.which("go")
    if go is None:
        return None
    binary = out_dir / "refserver"
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOPATH=str(out_dir / "gopath"))
    env.setdefault("HOME", str(out_dir))  # Go keeps its build cache under the home directory
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=GO_SOURCE,
        env=env,
        check=True,
        timeout=300,
        capture_output=True,
    )
    return binary


@contextlib.contextmanager
def run_reference(binary: Path) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        host, port = proc.stdout.readline().strip().rsplit(":", 1)
        yield host, int(port)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def run_transport(app: Any, **limits: Any) -> Iterator[tuple[str, int]]:
    """Our Go-like transport serving `app` on 127.0.0.1 in a background thread."""
    from ollama_guard.decoy.transport.server import GoHTTPServer, Limits

    loop = asyncio.new_event_loop()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = GoHTTPServer(app, Limits(**limits))
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            holder["server"] = await server.start(sock)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield sock.getsockname()[:2]
    finally:

        async def stop() -> None:
            holder["server"].close()
            await server.close_connections()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        sock.close()
