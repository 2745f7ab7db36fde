"""What it costs to make every answer wait for the fsync of its audit record (not a test).

Three `ollama-guard serve` processes run side by side in front of the same static nginx upstream (the
one bench/gateway.py uses), each with its own SQLite database:

* `audit_sync = "answer"` (the default): the last byte of every answer waits for the group-commit
  fsync that covers its record (one fsync shared by every answer waiting at that moment);
* `audit_sync = "interval"` (the default): the record is handed to the kernel before the last byte
  and its sequence number is durably reserved (1,024 at a time, in the background); the writer process
  fsyncs the records about every 20 ms.
* `before` — `interval` with `audit_reserve_ahead` = 10^12: one reservation at start and never again,
  which is what `interval` cost before reservations existed (the baseline).

Each round loads both with `wrk` in turn (the order alternates between rounds): c=64 for throughput,
then c=1 for the added latency. It prints each round and the medians, the differences, the CPU of
each gateway's process tree per request, and checks that each audit log holds a record per answer.

    python bench/audit_sync.py [--rounds 3] [--duration 8] [--priority] [--write-doc docs/performance.md]

Everything runs on loopback. Needs nginx and wrk on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/gateway.py: the upstream, wrk and gateway helpers
from audit_cap import CpuCap
from gateway import (
    Result,
    audit_count,
    cpu_seconds,
    create_admin_key,
    free_port,
    process_tree,
    run_wrk,
    start_gateway,
    stop,
    upstream_conf,
    wait_for_audit_backlog,
)

MODES = ("before", "interval", "answer")
SETTINGS = {
    "before": {"OLLAMA_GUARD_AUDIT_SYNC": "interval", "OLLAMA_GUARD_AUDIT_RESERVE_AHEAD": str(10**12)},
    "interval": {"OLLAMA_GUARD_AUDIT_SYNC": "interval"},
    "answer": {"OLLAMA_GUARD_AUDIT_SYNC": "answer"},
}
MARK = "<!-- bench/audit_sync.py -->"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fsync_probe(directory: Path, n: int = 200) -> float:
    """Median ms of one append + fsync of a 300-byte line on this disk, now (what the default pays)."""
    path = directory / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 299 + b"\n")
            started = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8, help="seconds of c=64 per run (c=1: half)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--path", default="/api/tags")
    parser.add_argument("--write-doc", type=Path)
    parser.add_argument("--modes", default=",".join(MODES), help="which of before,interval,answer to run")
    parser.add_argument("--priority", action="store_true",
                        help="run everything in a cgroup of high CPU weight (other jobs share this machine)")
    args = parser.parse_args()
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if "before" not in modes:
        raise SystemExit("--modes must include before (the baseline)")
    group = None
    if args.priority:
        group = CpuCap(f"og-bench-sync-{os.getpid()}", None)
        group.add(os.getpid())  # nginx, the gateways, their writers and wrk inherit it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the gateways and nginx on the way out
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    workdir = Path(tempfile.mkdtemp(prefix="og-bench-sync-"))
    port = free_port()
    (workdir / "upstream.conf").write_text(upstream_conf(workdir, port))
    nginx = subprocess.Popen(["nginx", "-c", str(workdir / "upstream.conf"), "-p", str(workdir)],
                             start_new_session=True)
    env = {**os.environ, "OLLAMA_GUARD_HOME": str(workdir / "home"), "PYTHONUNBUFFERED": "1"}
    os.environ["OLLAMA_GUARD_HOME"] = env["OLLAMA_GUARD_HOME"]
    gateways: dict[str, tuple[subprocess.Popen, str, str, str]] = {}
    runs: dict[str, list[tuple[Result, Result, float]]] = {m: [] for m in modes}
    probes: list[float] = []
    answered = dict.fromkeys(modes, 0)
    load = os.getloadavg()[0]
    try:
        time.sleep(0.5)
        for mode in modes:
            db = f"sqlite:///{workdir / f'{mode}.db'}"
            token = create_admin_key(db)
            mode_env = {**env, **SETTINGS[mode]}
            proc, url = start_gateway(f"http://127.0.0.1:{port}", db, mode_env, [])
            gateways[mode] = (proc, url, token, db)
        time.sleep(1)
        for r in range(args.rounds):
            probes.append(fsync_probe(workdir))
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # each goes first in turn
                proc, url, token, db = gateways[mode]
                pids = process_tree(proc.pid)  # the gateway and its audit writer process
                before = cpu_seconds(pids)
                many = run_wrk(url + args.path, "GET", None, token, args.duration, args.connections, 2,
                               workdir)
                cpu_us = (cpu_seconds(pids) - before) / max(many.requests, 1) * 1e6
                wait_for_audit_backlog(db)
                one = run_wrk(url + args.path, "GET", None, token, max(2, args.duration // 2), 1, 1, workdir)
                answered[mode] += many.requests + one.requests
                runs[mode].append((many, one, cpu_us))
                print(f"round {r + 1} {mode:8s} c={args.connections}: {many.rps:8,.0f} req/s "
                      f"(errors {many.errors})  c=1: p50 {one.p50_ms:.3f} ms  p99 {one.p99_ms:.3f} ms  "
                      f"cpu {cpu_us:.0f} us/req", flush=True)
        records = {}
        for mode in modes:
            proc, _url, _token, db = gateways[mode]
            stop(proc)
            records[mode] = audit_count(db)
        gateways.clear()
    finally:
        for proc, *_ in gateways.values():
            stop(proc)
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        if group is not None:
            group.remove()

    med = {m: (median([a.rps for a, _, _ in runs[m]]), median([b.p50_ms for _, b, _ in runs[m]]),
               median([b.p99_ms for _, b, _ in runs[m]]), median([c for _, _, c in runs[m]])) for m in modes}
    base = med["before"]

    def versus(mode: str) -> str:
        pairs = list(zip(runs["before"], runs[mode], strict=True))
        d_rps = sorted(b[0].rps / a[0].rps - 1 for a, b in pairs)
        d_p50 = sorted(b[1].p50_ms - a[1].p50_ms for a, b in pairs)
        d_p99 = sorted(b[1].p99_ms - a[1].p99_ms for a, b in pairs)
        return (f"`{mode}` vs `before`, median of the {len(pairs)} paired rounds (range): throughput at "
                f"c={args.connections} {median(d_rps):+.1%} ({d_rps[0]:+.1%} to {d_rps[-1]:+.1%}); added "
                f"latency at c=1 p50 {median(d_p50):+.3f} ms ({d_p50[0]:+.3f} to {d_p50[-1]:+.3f}), p99 "
                f"{median(d_p99):+.3f} ms ({d_p99[0]:+.3f} to {d_p99[-1]:+.3f}); CPU "
                f"{med[mode][3] - base[3]:+.0f} µs per request.")

    rows = [f"| `{m}` | {med[m][0]:,.0f} | {med[m][1]:.3f} | {med[m][2]:.3f} | {med[m][3]:.0f} | "
            f"{answered[m]:,} / {records[m]:,} |" for m in modes]
    cost = ("\n\n".join(versus(m) for m in modes if m != "before")
            + f"\n\nOne append + fsync on this disk, probed each round: median {median(probes):.3f} ms "
            f"({min(probes):.3f} to {max(probes):.3f}).")
    print(cost)
    section = (
        f"{MARK}\n"
        f"Measured by `python bench/audit_sync.py --rounds {args.rounds} --duration {args.duration}` "
        f"(GET {args.path} with an admin key; {os.cpu_count()} cores, shared, load average {load:.1f} at "
        f"the start{'; the bench in a cgroup of high CPU weight' if group else ''}). Medians of the "
        "rounds:\n\n"
        f"| audit_sync | req/s (c={args.connections}) | p50 ms (c=1) | p99 ms (c=1) | CPU µs/req | "
        "answered / records |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n" + cost + "\n"
        f"{MARK}\n"
    )
    print(section)
    if args.write_doc is not None:
        text = args.write_doc.read_text()
        pattern = re.compile(re.escape(MARK) + ".*?" + re.escape(MARK) + "\n", re.S)
        text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text + "\n" + section
        args.write_doc.write_text(text)
    ok = all(answered[m] <= records[m] for m in modes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
