"""Scanner benchmark: ollama-guard scan vs nmap's connect scan over all of 127.1.0.0/16 on one port.

Starts a handful of decoys inside 127.1.0.0/16 on one port, then (alternating, several rounds) scans the
whole /16 with our engine in-process, with the `ollama-guard scan` command, and with
`nmap -sT -Pn -n -p PORT --open 127.1.0.0/16`. Prints wall and CPU times, hosts found, the ratio, and for
each live host the time from its discovery (TCP connect) to the end of its assessment.

    /work/venv/bin/python bench/scan.py [--decoys 5] [--rounds 3] [--write-docs]

Loopback only. Not a test: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ollama_guard.scan.engine import Scanner, ScanSettings, raise_fd_limit  # noqa: E402
from ollama_guard.scan.targets import TargetSet  # noqa: E402
from support.servers import DECOY_READY, GUARD_ARGV, start_process, stop_process  # noqa: E402

NETWORK = "127.1.0.0/16"
DOCS = ROOT / "docs" / "performance.md"


@dataclass
class Run:
    tool: str
    wall: float
    cpu: float
    found: set[str]
    discovery: float | None = None  # connect phase over the whole /16
    per_host: dict[str, tuple[float, float]] = field(default_factory=dict)  # ip -> (discovered, assessed)
    services: dict[str, str] = field(default_factory=dict)


def free_port(addresses: list[str]) -> int:
    for _ in range(200):
        port = random.randint(40000, 59999)
        try:
            with contextlib.ExitStack() as stack:
                for address in addresses:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((address, port))
            return port
        except OSError:
            continue
    raise SystemExit("no free port found")


def decoy_addresses(count: int) -> list[str]:
    rng = random.Random(7)
    chosen: dict[str, None] = {}
    while len(chosen) < count:
        chosen.setdefault(f"127.1.{rng.randint(0, 255)}.{rng.randint(1, 254)}", None)
    return list(chosen)


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_of_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ours_in_process(port: int, concurrency: int) -> Run:
    targets = TargetSet([NETWORK], ports=(port,))
    total = targets.count()
    loop = asyncio.get_running_loop()
    started = loop.time()
    discovery: list[float] = []

    def attempted() -> None:
        if scanner.stats.attempted == total:
            discovery.append(loop.time() - started)

    scanner = Scanner(targets, ScanSettings(concurrency=concurrency, timeout=2.0), on_attempt=attempted)
    cpu0 = cpu_of_self()
    run = Run("ours (engine)", 0.0, 0.0, set())
    async for result in scanner.results():
        run.found.add(result.target.host)
        run.per_host[result.target.host] = (result.discovered_at - started, result.finished_at - started)
        run.services[result.target.host] = f"{result.service} {result.version}"
    run.wall = loop.time() - started
    run.cpu = cpu_of_self() - cpu0
    run.discovery = discovery[0] if discovery else None
    return run


def ours_cli(port: int) -> Run:
    cpu0 = cpu_of_children()
    started = time.perf_counter()
    proc = subprocess.run(
        [*GUARD_ARGV, "scan", NETWORK, "--ports", str(port), "--format", "json", "--fail-on", "never"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"ollama-guard scan failed: {proc.stderr}")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        dump = Path(tempfile.gettempdir()) / "scan-bench-bad-output.txt"
        dump.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        raise SystemExit(f"ollama-guard scan printed bad JSON ({exc}); output saved in {dump}") from None
    found = {h["target"].rsplit(":", 1)[0] for h in report["hosts"]}
    return Run("ours (CLI, incl. start-up)", wall, cpu_of_children() - cpu0, found)


def nmap(port: int) -> Run:
    cpu0 = cpu_of_children()
    started = time.perf_counter()
    proc = subprocess.run(
        ["nmap", "-sT", "-Pn", "-n", "-p", str(port), "--open", NETWORK, "-oG", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    found = set(re.findall(rf"Host: (\S+) \(\)\s+Ports: {port}/open", proc.stdout))
    return Run("nmap -sT", wall, cpu_of_children() - cpu0, found)


def startup_seconds() -> float:
    walls = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([*GUARD_ARGV, "scan", "--help"], capture_output=True, check=True)
        walls.append(time.perf_counter() - started)
    return statistics.median(walls)


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


def write_docs(text: str) -> None:
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    current = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    pattern = re.compile(r"^## Scanner\n.*?(?=^## |\Z)", re.S | re.M)
    section = text.rstrip() + "\n\n"
    if pattern.search(current):
        current = pattern.sub(lambda _: section, current)
    else:
        current = current.rstrip() + "\n\n" + section
    DOCS.write_text(current)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoys", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1024)
    parser.add_argument("--write-docs", action="store_true", help=f"update the Scanner section of {DOCS}")
    args = parser.parse_args()
    if shutil.which("nmap") is None:
        raise SystemExit("nmap is not installed")
    raise_fd_limit()
    addresses = decoy_addresses(args.decoys)
    port = free_port(addresses)
    procs = []
    tmp = Path(tempfile.mkdtemp(prefix="scan-bench-"))
    try:
        for index, address in enumerate(addresses):
            proc, _url = start_process(
                [
                    *GUARD_ARGV,
                    "decoy",
                    "--host",
                    address,
                    "--port",
                    str(port),
                    "--seed-models",
                    "2",
                    "--models-dir",
                    str(tmp / f"m{index}"),
                ],
                DECOY_READY,
            )
            procs.append(proc)
        import uvloop

        runs: dict[str, list[Run]] = {}
        for _ in range(args.rounds):
            for make in (
                lambda: uvloop.run(ours_in_process(port, args.concurrency)),
                lambda: nmap(port),
                lambda: ours_cli(port),
            ):
                run = make()
                runs.setdefault(run.tool, []).append(run)
    finally:
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    expected = set(addresses)
    lines = [
        "## Scanner",
        "",
        f"`bench/scan.py`: {args.decoys} decoys inside {NETWORK} on one port; the whole /16 "
        f"(65,536 addresses) scanned {args.rounds} times by each tool, alternating. "
        f"Machine: {os_cpu()}; load average at the end: "
        f"{load_average()} (the machine is shared, so wall times are noisy: compare the medians).",
        "",
        "| tool | wall median (s) | wall best (s) | CPU median (s) | hosts found |",
        "|---|---|---|---|---|",
    ]
    medians: dict[str, float] = {}
    for tool, items in runs.items():
        walls = [r.wall for r in items]
        medians[tool] = statistics.median(walls)
        found = {len(r.found & expected) for r in items}
        extra = {len(r.found - expected) for r in items}
        lines.append(
            f"| {tool} | {statistics.median(walls):.2f} | {min(walls):.2f} | "
            f"{statistics.median(r.cpu for r in items):.2f} | {'/'.join(map(str, sorted(found)))} of "
            f"{len(expected)}{'' if extra == {0} else ' (+unexpected)'} |"
        )
    engine = runs["ours (engine)"]
    discoveries = [r.discovery for r in engine if r.discovery is not None]
    ratio = medians["nmap -sT"] / medians["ours (engine)"]
    lines += [
        "",
        f"Connect phase over the /16 (ours, median): {statistics.median(discoveries):.2f} s. "
        f"Ratio nmap / ours (engine wall, medians): **{ratio:.2f}×** "
        f"({'ours faster' if ratio >= 1 else 'nmap faster'}).",
        "",
        "Per live host, last round (seconds since scan start → discovered, assessed; assessed − discovered):",
        "",
        "| host | service | discovered | assessed | discovery → assessment |",
        "|---|---|---|---|---|",
    ]
    last = engine[-1]
    latencies = []
    for host in sorted(last.per_host):
        found_at, done_at = last.per_host[host]
        latencies.append(done_at - found_at)
        lines.append(
            f"| {host} | {last.services[host]} | {found_at:.3f} | {done_at:.3f} | {done_at - found_at:.3f} |"
        )
    all_latencies = [d - f for r in engine for f, d in r.per_host.values()]
    lines += [
        "",
        f"Discovery → full assessment over all rounds: max {max(all_latencies):.3f} s, "
        f"median {statistics.median(all_latencies):.3f} s (target: ≤ 1 s). Full assessment = every read-only "
        "probe: fingerprint, version, models, /api/ps, /api/status, CORS preflight, blob HEAD, /api/show.",
        "",
        "Notes:",
        "- A connect scan of refused loopback ports is kernel-bound: with a fresh socket per address, "
        "socket(), connect() and close() for 65,536 addresses cost ~0.7 s of system time (bare Python "
        "loop), about what nmap spends. Our engine reuses the socket of a refused connect (Linux resets it "
        "on the next connect(), which returns ECONNABORTED, then connects normally): no socket() and no "
        "close() per closed port, ~0.4-0.5 s of system time for the /16. Threads or processes gave nothing "
        "measurable on this shared 2-CPU box.",
        "- Other tuning in `scan/engine.py`: the connect is settled without the event loop when the kernel "
        "already knows (non-blocking connect, then SO_ERROR / getpeername: loopback and on-link refusals are "
        "immediate), sockets are created non-blocking by the C type in one syscall, targets are cheap "
        "non-frozen dataclasses produced lazily, one dispatcher (no task per address) yields to the loop "
        "every 2 ms so assessments of hosts already found run during the connect phase, only connects still "
        "in progress get a writer callback and one timer (`--concurrency`, default 1024, bounds those), and "
        "RLIMIT_NOFILE's soft limit is raised to the hard limit at start.",
        f"- The CLI row includes interpreter start-up and the scan command's imports (aiohttp, pydantic, "
        f"rich, uvloop): `python -m ollama_guard scan --help` alone takes {startup_seconds():.2f} s "
        "(median of 3) here.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"\nwrote {DOCS}")


def os_cpu() -> str:
    import os

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {model}, Python {sys.version.split()[0]} + uvloop"


if __name__ == "__main__":
    main()
