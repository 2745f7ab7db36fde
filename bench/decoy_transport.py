"""Decoy transport benchmark (not a test): the Go-like transport versus uvicorn (uvloop + httptools).

The same DecoyApp (0.6.5, two seeded models, no request log) is served by each server in its own
process; a load generator in this process keeps `--connections` keep-alive connections busy with
`GET /api/version` and `POST /api/show` for `--duration` seconds per round, rounds alternating, and
prints requests/s and the ratio ours/uvicorn (the generator is Python too, so both numbers are bounded
by it alike; compare the ratio).

    python bench/decoy_transport.py [--duration 5] [--rounds 3] [--connections 16]

Everything runs on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SERVER = r"""
import asyncio, socket, sys, tempfile
from pathlib import Path
from ollama_guard.decoy.app import DecoyApp
from ollama_guard.decoy.state import DecoySettings, DecoyState
kind, port = sys.argv[1], int(sys.argv[2])
state = DecoyState.open(DecoySettings(version="0.6.5", models_dir=Path(tempfile.mkdtemp()), host_guard=False))
state.seed(2)
app = DecoyApp(state)
sock = socket.socket(); sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port)); sock.listen(1024)
if kind == "uvicorn":
    import uvicorn
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="off", access_log=False,
                            log_level="warning")
    print("ready", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
else:
    import uvloop
    from ollama_guard.decoy.transport.server import GoHTTPServer
    async def main():
        await GoHTTPServer(app).start(sock)
        print("ready", flush=True)
        await asyncio.Event().wait()
    uvloop.run(main())
"""

REQUESTS = [
    b"GET /api/version HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b'POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Length: 24\r\n\r\n{"model":"llama3.2:1b"}\n',
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = None
    chunked = False
    for line in head.split(b"\r\n"):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif lower.startswith(b"transfer-encoding:") and b"chunked" in lower:
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    elif length:
        await reader.readexactly(length)


async def load(port: int, connections: int, duration: float) -> int:
    deadline = time.perf_counter() + duration
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        while time.perf_counter() < deadline:
            writer.write(REQUESTS[i % len(REQUESTS)])
            i += 1
            await _read_response(reader)
            done += 1
        writer.close()

    await asyncio.gather(*(worker(n) for n in range(connections)))
    return done


def start(kind: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, kind, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
        env=dict(os.environ),
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    servers = {kind: start(kind) for kind in ("uvicorn", "go-like")}
    rates: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        for _ in range(args.rounds):
            for kind, (_, port) in servers.items():
                count = asyncio.run(load(port, args.connections, args.duration))
                rates[kind].append(count / args.duration)
    finally:
        for proc, _ in servers.values():
            proc.kill()
            proc.wait()
    for kind, values in rates.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{kind:8s} median {statistics.median(values):8.0f} req/s  (rounds: {rounds})")
    ratio = statistics.median(rates["go-like"]) / statistics.median(rates["uvicorn"])
    print(f"go-like / uvicorn = {ratio:.2f}")


if __name__ == "__main__":
    main()
