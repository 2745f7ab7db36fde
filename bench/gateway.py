"""Gateway overhead benchmark (not a test).

A fast static upstream (nginx serving canned Ollama JSON/NDJSON on 127.0.0.1) is loaded with `wrk`
three ways: (a) directly, (b) through nginx as a plain reverse proxy, (c) through `ollama-guard serve`
with authentication, policy and the audit log on (one worker). Prints requests/s and p50/p99 latency
for each, the latency the proxies add over the direct path, and gateway/nginx ratios; then checks
that the audit log holds one record per request the gateway answered.

    python bench/gateway.py [--duration 10] [--connections 64] [--write-doc docs/performance.md]

Everything runs on loopback. Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TAGS = json.dumps(
    {
        "models": [
            {
                "name": f"model{i}:latest",
                "model": f"model{i}:latest",
                "modified_at": "2026-01-01T00:00:00Z",
                "size": 1000 + i,
                "digest": f"{i:064x}",
                "details": {
                    "parent_model": "",
                    "format": "gguf",
                    "family": "llama",
                    "families": ["llama"],
                    "parameter_size": "1B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for i in range(3)
        ]
    }
)
SHOW = json.dumps(
    {
        "license": "MIT",
        "modelfile": "FROM x",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": {"family": "llama", "parameter_size": "1B"},
        "capabilities": ["completion"],
    }
)
GENERATE = (
    "".join(
        json.dumps(
            {"model": "model0", "created_at": "2026-01-01T00:00:00Z", "response": f" tok{i}", "done": False}
        )
        + "\n"
        for i in range(20)
    )
    + json.dumps(
        {
            "model": "model0",
            "created_at": "2026-01-01T00:00:00Z",
            "response": "",
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": 20,
        }
    )
    + "\n"
)

SCENARIOS = {
    "GET /api/tags": ("GET", "/api/tags", None),
    "POST /api/show": ("POST", "/api/show", '{"model":"model0"}'),
    "POST /api/generate (NDJSON, 21 lines)": ("POST", "/api/generate", '{"model":"model0","prompt":"hi"}'),
}


def nginx_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nginx_head(workdir: Path, name: str) -> str:
    return f"""
worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/{name}-cb; proxy_temp_path {workdir}/{name}-px;
    fastcgi_temp_path {workdir}/{name}-fc; uwsgi_temp_path {workdir}/{name}-uw;
    scgi_temp_path {workdir}/{name}-sc;
    keepalive_requests 1000000;
"""


def upstream_conf(workdir: Path, port: int) -> str:
    return (
        _nginx_head(workdir, "upstream")
        + f"""
    server {{
        listen 127.0.0.1:{port};
        location = /api/tags {{ default_type application/json; return 200 '{nginx_escape(TAGS)}'; }}
        location = /api/show {{ default_type application/json; return 200 '{nginx_escape(SHOW)}'; }}
        location = /api/generate {{
            default_type application/x-ndjson; return 200 '{nginx_escape(GENERATE)}';
        }}
    }}
}}
"""
    )


def proxy_conf(workdir: Path, upstream_port: int, port: int) -> str:
    return (
        _nginx_head(workdir, "proxy")
        + f"""
    upstream ollama {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://ollama;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost:11434;
            proxy_buffering off;
        }}
    }}
}}
"""
    )


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU time of processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out.extend(process_tree(int(child)))
    return out


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_us: float | None = None  # CPU time of the proxy process(es) per request
    p50_1_ms: float | None = None  # latency with a single connection (no queueing)
    p99_1_ms: float | None = None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(
    url: str,
    method: str,
    body: str | None,
    token: str | None,
    duration: int,
    connections: int,
    threads: int,
    workdir: Path,
) -> Result:
    script = workdir / "req.lua"
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = '{body}'")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock_err:
        errors += sum(int(x) for x in sock_err.groups())
    return Result(rps, p50, p99, total, errors)


def create_admin_key(db_url: str) -> str:
    from ollama_guard.gateway.config import load_config
    from ollama_guard.gateway.db import create_engine_for, init_schema
    from ollama_guard.gateway.keys import KeyStore
    from ollama_guard.gateway.secrets import load_server_secret

    async def work() -> str:
        engine = create_engine_for(db_url)
        try:
            await init_schema(engine)
            secret = load_server_secret(load_config(None, {"db": db_url}, {}))
            _key, token = await KeyStore(engine, secret).create("bench", "admin")
            return token
        finally:
            await engine.dispose()

    return asyncio.run(work())


def start_gateway(
    upstream: str, db_url: str, env: dict[str, str], extra: list[str]
) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ollama_guard",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--db",
            db_url,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"gateway did not start: {line}{proc.stdout.read()}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def audit_count(db_url: str) -> int:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT count(*) FROM og_audit_records").fetchone()[0]


def wait_for_audit_backlog(db_url: str, limit: float = 30.0) -> None:
    """Until the audit log stops growing (the gateway has written what it queued)."""
    deadline = time.monotonic() + limit
    count = -1
    while time.monotonic() < deadline:
        now = audit_count(db_url)
        if now == count:
            return
        count = now
        time.sleep(0.5)


def render(results: dict[str, dict[str, Result]], args: argparse.Namespace, audit_note: str) -> str:
    cpu = os.cpu_count()
    rows = [
        f"| Workload | Path | req/s (c={args.connections}) | p50 / p99 ms (c={args.connections}) | "
        "added p50 / p99 ms (c=1) | CPU µs per request |",
        "|---|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for scenario, by_path in results.items():
        direct = by_path["direct"]
        for path_name, r in by_path.items():
            if path_name == "direct":
                added = f"({r.p50_1_ms:.2f} / {r.p99_1_ms:.2f} direct)"
            else:
                added = f"{r.p50_1_ms - direct.p50_1_ms:.2f} / {r.p99_1_ms - direct.p99_1_ms:.2f}"
            cpu_text = "–" if r.cpu_us is None else f"{r.cpu_us:.0f}"
            rows.append(
                f"| {scenario} | {path_name} | {r.rps:,.0f} | {r.p50_ms:.2f} / {r.p99_ms:.2f} | "
                f"{added} | {cpu_text} |"
            )
        gw, ng = by_path["gateway"], by_path["nginx proxy"]
        ratios.append(
            f"| {scenario} | {gw.rps / ng.rps:.0%} | {ng.cpu_us / gw.cpu_us:.0%} |"
            if gw.cpu_us and ng.cpu_us
            else f"| {scenario} | {gw.rps / ng.rps:.0%} | – |"
        )
    return "\n".join(
        [
            LATEST_HEADING,
            "",
            f"Measured with `python bench/gateway.py --duration {args.duration} "
            f"--connections {args.connections}` on {time.strftime('%Y-%m-%d')}: {cpu} CPU cores **shared "
            f"with other jobs while measuring** (load average {args.load:.1f} at the start), so absolute "
            "figures are low and noisy; CPU time per request is the steadier figure. Load: `wrk` "
            f"({args.threads} threads, keep-alive connections). Upstream: an nginx returning canned Ollama "
            "answers on 127.0.0.1. *nginx proxy* = a second nginx as a plain reverse proxy (keep-alive "
            "upstream, buffering off, no auth). *gateway* = `ollama-guard serve`, one worker (uvicorn + "
            "uvloop + httptools server, our pooled httptools client), with the API key check, route/role/"
            "model policy, Go-JSON body check, limiter, Prometheus metrics and the hash-chained SQLite audit "
            "log all on. Added latency is measured with one connection (c=1), where queueing does not hide "
            "the per-request cost.",
            "",
            *rows,
            "",
            "| Workload | gateway req/s as share of nginx's | gateway CPU efficiency vs nginx |",
            "|---|---:|---:|",
            *ratios,
            "",
            audit_note,
            "",
            "Targets: added p50 ≤ 1 ms, added p99 ≤ 5 ms, throughput ≥ 40 % of nginx's.",
        ]
    )


LATEST_HEADING = "### Latest `bench/gateway.py` run"


def update_doc(path: Path, section: str) -> None:
    """Replace only the generated subsection inside `## Gateway` (the written analysis stays)."""
    text = path.read_text() if path.exists() else "# Performance\n\n## Gateway\n"
    latest = re.compile(r"^" + re.escape(LATEST_HEADING) + r"\n.*?(?=^##|\Z)", re.M | re.S)
    if latest.search(text):
        text = latest.sub(lambda _m: section + "\n\n", text)
    else:
        gateway = re.compile(r"^## Gateway\n.*?(?=^## |\Z)", re.M | re.S)
        match = gateway.search(text)
        if match is None:
            text = text.rstrip("\n") + "\n\n## Gateway\n\n" + section + "\n"
        else:
            body = match.group(0).rstrip("\n") + "\n\n" + section + "\n\n"
            text = text[: match.start()] + body + text[match.end() :]
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-doc", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run only scenarios containing this text")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    workdir = Path(tempfile.mkdtemp(prefix="og-bench-"))
    upstream_port, proxy_port = free_port(), free_port()
    (workdir / "upstream.conf").write_text(upstream_conf(workdir, upstream_port))
    (workdir / "proxy.conf").write_text(proxy_conf(workdir, upstream_port, proxy_port))
    nginxes = [
        subprocess.Popen(["nginx", "-c", str(workdir / name), "-p", str(workdir)], start_new_session=True)
        for name in ("upstream.conf", "proxy.conf")
    ]
    db_url = f"sqlite:///{workdir / 'guard.db'}"
    env = {**os.environ, "OLLAMA_GUARD_HOME": str(workdir / "home"), "PYTHONUNBUFFERED": "1"}
    os.environ["OLLAMA_GUARD_HOME"] = env["OLLAMA_GUARD_HOME"]
    gateway = None
    try:
        time.sleep(0.5)
        token = create_admin_key(db_url)
        gateway, gw_url = start_gateway(f"http://127.0.0.1:{upstream_port}", db_url, env, [])
        time.sleep(1)
        targets = {
            "direct": (f"http://127.0.0.1:{upstream_port}", None, None),
            "nginx proxy": (f"http://127.0.0.1:{proxy_port}", None, process_tree(nginxes[1].pid)),
            "gateway": (gw_url, token, [gateway.pid]),
        }
        results: dict[str, dict[str, Result]] = {}
        gateway_requests = 0
        for scenario, (method, path, body) in SCENARIOS.items():
            if args.only and args.only not in scenario:
                continue
            results[scenario] = {}
            for name, (base, key, pids) in targets.items():
                before = cpu_seconds(pids) if pids else 0.0
                r = run_wrk(
                    base + path, method, body, key, args.duration, args.connections, args.threads, workdir
                )
                if pids:
                    r.cpu_us = (cpu_seconds(pids) - before) / max(r.requests, 1) * 1e6
                if name == "gateway":
                    wait_for_audit_backlog(db_url)  # the c=1 run must not pay for the c=64 backlog
                single = run_wrk(base + path, method, body, key, max(2, args.duration // 2), 1, 1, workdir)
                r.p50_1_ms, r.p99_1_ms = single.p50_ms, single.p99_ms
                results[scenario][name] = r
                if name == "gateway":
                    gateway_requests += r.requests + single.requests
                cpu_text = "" if r.cpu_us is None else f"  cpu {r.cpu_us:6.0f} us/req"
                print(
                    f"{scenario:40s} {name:12s} {r.rps:10,.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                    f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}  c=1: p50 {r.p50_1_ms:.2f} ms "
                    f"p99 {r.p99_1_ms:.2f} ms{cpu_text}",
                    flush=True,
                )
        stop(gateway)  # flushes the audit log
        gateway = None
        written = audit_count(db_url)
        # wrk counts only completed requests; connections cut at the end can add a few more records
        slack = (args.connections + 1) * 2 * len(results)
        audit_ok = gateway_requests <= written <= gateway_requests + slack
        verdict = "one per request" if audit_ok else "MISMATCH"
        audit_note = (
            f"Audit check: wrk counted {gateway_requests:,} completed requests through the gateway; the "
            f"audit log holds {written:,} records ({verdict}; requests cut off when wrk stops mid-request "
            "are logged too, so the log may hold a few more)."
        )
        print(audit_note)
        section = render(results, args, audit_note)
        print()
        print(section)
        if args.write_doc:
            update_doc(args.write_doc, section)
        return 0 if audit_ok else 1
    finally:
        if gateway is not None:
            stop(gateway)
        for proc in nginxes:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
