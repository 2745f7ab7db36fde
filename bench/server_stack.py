"""Server-stack benchmark (not a test): uvicorn (uvloop + httptools) versus aiohttp's server.

Issue #3 asked to choose between a pure ASGI app on uvicorn and aiohttp's server by measurement.
The same minimal proxy handler — read the request, forward it to a fast static upstream with one
pooled keep-alive client, return the answer — runs as

* ``uvicorn``: a pure ASGI app on uvicorn, ``loop="uvloop"``, ``http="httptools"``;
* ``uvicorn+coalesce``: the same, with the gateway's own protocol subclass
  (``GuardHttpToolsProtocol``: one send per response, header deadline, size caps);
* ``aiohttp``: aiohttp's low-level ``web.Server`` (no router, no middleware, access log off) on uvloop;
* ``gateway /-/health``: the real ``ollama-guard serve`` answering ``/-/health`` (no upstream call;
  reference floor of the full gateway stack).

All proxy variants use the gateway's own pooled upstream client (``ollama_guard.gateway.upstream.Upstream``),
so only the server side differs. The upstream is nginx on 127.0.0.1 serving the canned ``/api/tags``
JSON of bench/gateway.py (whose helpers are imported). Each variant is its own process; load is
``wrk -t2 -c64`` for ``--duration`` seconds, rounds alternate between the variants, and CPU per request
is the server process's user+system time (``/proc/PID/stat``) over the wrk run divided by the requests.

    python bench/server_stack.py [--duration 5] [--rounds 3] [--connections 64]

Everything runs on loopback. Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway as gw_bench  # bench/gateway.py: nginx config, wrk runner, CPU reader

READY = "server-stack listening on "
PROXY_VARIANTS = ("uvicorn", "uvicorn+coalesce", "aiohttp")
FORWARD_HEADERS = [(b"Accept-Encoding", b"identity")]


# --- the servers (run in child processes via --serve) ------------------------------------------------


def _upstream(url: str) -> Any:
    from ollama_guard.gateway.config import GatewayConfig
    from ollama_guard.gateway.upstream import Upstream

    return Upstream(GatewayConfig(upstream=url))


async def _forward(upstream: Any, method: str, raw_path: str, body: bytes) -> tuple[int, bytes, bytes]:
    """One proxied exchange: status, content type and body of the upstream's answer."""
    resp = await upstream.open(method, raw_path, FORWARD_HEADERS, body or None)
    try:
        data = await resp.read()
    finally:
        resp.close()
    return resp.status, resp.content_type or b"application/octet-stream", data


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ProxyASGI:
    """The minimal proxy handler as a pure ASGI application."""

    def __init__(self, upstream_url: str) -> None:
        self.upstream = _upstream(upstream_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.upstream.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.upstream.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        parts: list[bytes] = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw_path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            raw_path += "?" + scope["query_string"].decode("latin-1")
        status, ctype, data = await _forward(self.upstream, scope["method"], raw_path, b"".join(parts))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", b"%d" % len(data))],
            }
        )
        await send({"type": "http.response.body", "body": data})


def serve_uvicorn(upstream_url: str, coalesce: bool) -> None:
    import uvicorn

    http: Any = "httptools"
    if coalesce:
        from ollama_guard.gateway.server import GuardHttpToolsProtocol

        http = GuardHttpToolsProtocol
    sock = _listening_socket()
    config = uvicorn.Config(
        ProxyASGI(upstream_url),
        loop="uvloop",
        http=http,
        lifespan="on",
        ws="none",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    print(f"{READY}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def serve_aiohttp(upstream_url: str) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        upstream = _upstream(upstream_url)
        await upstream.start()

        async def handler(request: web.BaseRequest) -> web.Response:
            body = await request.read()
            status, ctype, data = await _forward(upstream, request.method, request.raw_path, body)
            return web.Response(status=status, body=data, headers={"Content-Type": ctype.decode("latin-1")})

        server = web.Server(handler, access_log=None)
        sock = _listening_socket()
        await asyncio.get_running_loop().create_server(server, sock=sock, backlog=2048)
        print(f"{READY}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await server.shutdown(1.0)
        await upstream.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# --- the driver --------------------------------------------------------------------------------------


def start_variant(name: str, upstream_url: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", name, "--upstream", upstream_url],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        gw_bench.stop(proc)
        raise SystemExit(f"{name} did not start: {line!r}")
    return proc, line[len(READY) :].strip()


def check_answer(url: str, expected: bytes | None) -> None:
    """One request before the load, so a broken variant cannot post figures."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # loopback URL we built
                data = resp.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    if expected is not None and data != expected:
        raise SystemExit(f"{url} answered {data[:80]!r}, not the upstream's JSON")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="seconds of uncounted load per server first")
    parser.add_argument("--serve", choices=PROXY_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.serve == "aiohttp":
            serve_aiohttp(args.upstream)
        else:
            serve_uvicorn(args.upstream, coalesce=args.serve == "uvicorn+coalesce")
        return 0
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="og-stack-"))
    upstream_port = gw_bench.free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    (workdir / "upstream.conf").write_text(gw_bench.upstream_conf(workdir, upstream_port))
    nginx = subprocess.Popen(
        ["nginx", "-c", str(workdir / "upstream.conf"), "-p", str(workdir)], start_new_session=True
    )
    env = {**os.environ, "OLLAMA_GUARD_HOME": str(workdir / "home"), "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        check_answer(f"{upstream_url}/api/tags", gw_bench.TAGS.encode())
        targets: dict[str, str] = {}
        for name in PROXY_VARIANTS:
            procs[name], base = start_variant(name, upstream_url)
            targets[name] = f"{base}/api/tags"
            check_answer(targets[name], gw_bench.TAGS.encode())
        health = "gateway /-/health"
        db_url = f"sqlite:///{workdir / 'guard.db'}"
        procs[health], base = gw_bench.start_gateway(upstream_url, db_url, env, [])
        targets[health] = f"{base}/-/health"
        check_answer(targets[health], None)
        load = os.getloadavg()[0]
        print(
            f"load average {load:.2f}; wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{args.rounds} alternating rounds",
            flush=True,
        )
        for url in targets.values():  # pools filled, code paths warm: the first round is not special
            gw_bench.run_wrk(url, "GET", None, None, args.warmup, args.connections, args.threads, workdir)
        results: dict[str, list[gw_bench.Result]] = {name: [] for name in targets}
        for rnd in range(args.rounds):
            # alternate the order too, so no variant always runs right after the same one
            order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
            for name in order:
                pid = procs[name].pid
                before = gw_bench.cpu_seconds([pid])
                r = gw_bench.run_wrk(
                    targets[name], "GET", None, None, args.duration, args.connections, args.threads, workdir
                )
                r.cpu_us = (gw_bench.cpu_seconds([pid]) - before) / max(r.requests, 1) * 1e6
                results[name].append(r)
                print(
                    f"round {rnd + 1} {name:18s} {r.rps:9,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                    f"p99 {r.p99_ms:7.2f} ms  cpu {r.cpu_us:5.0f} us/req  errors {r.errors}",
                    flush=True,
                )
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        print()
        print(
            "| Server | req/s (mean of rounds) | p50 ms (median) | p99 ms (median) | CPU µs/req (mean) "
            "| req/s per round |"
        )
        print("|---|---:|---:|---:|---:|---|")
        summary: dict[str, tuple[float, float]] = {}
        for name, runs in results.items():
            rps = statistics.mean(r.rps for r in runs)
            cpu = statistics.mean(r.cpu_us or 0.0 for r in runs)
            summary[name] = (rps, cpu)
            per_round = " / ".join(f"{r.rps:,.0f}" for r in runs)
            print(
                f"| {name} | {rps:,.0f} | {statistics.median(r.p50_ms for r in runs):.2f} | "
                f"{statistics.median(r.p99_ms for r in runs):.2f} | {cpu:.0f} | {per_round} |"
            )
        base_rps, base_cpu = summary["uvicorn"]
        print()
        for name in ("uvicorn+coalesce", "aiohttp"):
            rps, cpu = summary[name]
            print(f"{name} / uvicorn: req/s ×{rps / base_rps:.2f}, CPU per request ×{cpu / base_cpu:.2f}")
        errors = sum(r.errors for runs in results.values() for r in runs)
        if errors:
            print(f"WARNING: {errors} wrk errors/non-2xx answers", file=sys.stderr)
        print(json.dumps({n: {"rps": s[0], "cpu_us": s[1]} for n, s in summary.items()}))
        return 1 if errors else 0
    finally:
        for proc in procs.values():
            gw_bench.stop(proc)
        nginx.send_signal(signal.SIGQUIT)
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            nginx.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
