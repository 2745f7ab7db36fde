"""Benchmark for `ollama-guard watch` (not a test).

Two measurements on a log file that `watch` follows (a separate process, alerts as JSON lines on its
stdout), against a baseline measured in the same run:

* **throughput** — N lines of a busy server's traffic (owner chats and listings on loopback, LAN
  users, a scanner now and then) are appended as fast as the disk takes them, then one deletion by a
  fresh client; the time until its alert arrives gives the lines per second `watch` keeps up with
  (one process, one event loop: one core). Baseline: `investigate` (the batch driver, fast scanner on)
  over the same lines, and the parser + engine alone in this process (no I/O).
* **alert latency** — while benign traffic is written at a steady --rate, a deletion by a new client is
  appended every 50 ms; latency = alert read − line written (one clock, this process). p50/p99.

    python bench/watch.py [--lines 1000000] [--rate 20000] [--alerts 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

OWNER = [("POST", "/api/chat", 50), ("GET", "/api/tags", 20), ("POST", "/api/generate", 15),
         ("GET", "/api/ps", 5), ("POST", "/api/embed", 10)]
LATENCIES = ["971.777µs", "1.193025ms", "5.923456s", "414.019µs", "32.779561288s"]


def gin(stamp: str, status: int, latency: str, client: str, method: str, path: str) -> str:
    return f"[GIN] {stamp} | {status:3d} | {latency:>13} | {client:>15} | {method:<7}  \"{path}\""


def traffic(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    routes = [r for r in OWNER for _ in range(r[2])]
    out = []
    for i in range(n):
        hour, minute, second = 10 + (i // 3_600_000) % 12, (i // 60_000) % 60, (i // 1000) % 60
        stamp = f"2024/08/19 - {hour:02d}:{minute:02d}:{second:02d}"
        roll = rnd.random()
        if roll < 0.85:
            method, path, _ = rnd.choice(routes)
            client = "127.0.0.1"
        elif roll < 0.99:
            method, path, _ = rnd.choice(routes)
            client = f"192.168.1.{rnd.randrange(2, 250)}"
        else:
            method, path = "GET", rnd.choice(["/", "/api/tags", "/api/version"])
            client = f"203.0.113.{rnd.randrange(1, 250)}"
        out.append(gin(stamp, 200, rnd.choice(LATENCIES), client, method, path))
    return out


def deletion(i: int) -> str:
    client = f"198.51.{100 + i // 250}.{i % 250 + 1}"
    return gin("2024/08/19 - 23:59:59", 200, "1.2ms", client, "DELETE", "/api/delete")


class Watcher:
    def __init__(self, log: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollama_guard", "watch", str(log), "--tz", "UTC", "--dedup", "1h"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.alerts: queue.Queue[tuple[float, dict]] = queue.Queue()
        ready = threading.Event()

        def read_out() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.alerts.put((time.monotonic(), json.loads(line)))

        def read_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                if "following" in line:
                    ready.set()

        threading.Thread(target=read_out, daemon=True).start()
        threading.Thread(target=read_err, daemon=True).start()
        if not ready.wait(30):
            raise SystemExit("watch did not start")

    def wait_for(self, target: str, timeout: float = 300) -> float:
        deadline = time.monotonic() + timeout
        while True:
            at, alert = self.alerts.get(timeout=max(0.01, deadline - time.monotonic()))
            if alert["rule"] == "model-deleted" and alert["target"] == target:
                return at

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def baseline_engine(lines: list[str]) -> float:
    from datetime import UTC

    from ollama_guard.investigate.engine import Engine
    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.investigate.parse import LineParser
    from ollama_guard.investigate.rules import load_rules

    engine, parser = Engine(load_rules(), ClientClassifier([])), LineParser("x", UTC)
    start = time.perf_counter()
    for n, text in enumerate(lines, 1):
        event = parser.parse(text, n)
        if event is not None:
            engine.feed(event)
    return len(lines) / (time.perf_counter() - start)


def throughput(out: Path, lines: list[str]) -> dict[str, float]:
    log = out / "watch-bench.log"
    log.write_text("")
    watcher = Watcher(log)
    try:
        marker = deletion(0)
        start = time.monotonic()
        with open(log, "a", encoding="utf-8") as fh:
            for i in range(0, len(lines), 20_000):
                fh.write("\n".join(lines[i : i + 20_000]) + "\n")
                fh.flush()
            fh.write(marker + "\n")
        written = time.monotonic()
        seen = watcher.wait_for("198.51.100.1")
    finally:
        watcher.stop()
    whole = log.read_text(encoding="utf-8")
    start_inv = time.monotonic()
    subprocess.run([sys.executable, "-m", "ollama_guard", "investigate", str(log), "--tz", "UTC", "--format",
                    "json", "--fail-on", "never"], check=True, stdout=subprocess.DEVNULL)
    investigate_s = time.monotonic() - start_inv
    log.unlink()
    n = len(lines) + 1
    return {"lines": n, "bytes": len(whole.encode()), "write_s": written - start, "watch_s": seen - start,
            "watch_lps": n / (seen - start), "investigate_s": investigate_s,
            "investigate_lps": n / investigate_s, "engine_lps": baseline_engine(lines[:200_000])}


def latency(out: Path, rate: int, alerts: int) -> dict[str, float]:
    log = out / "watch-latency.log"
    log.write_text("")
    watcher = Watcher(log)
    background = traffic(rate, seed=11)
    lat: list[float] = []
    try:
        with open(log, "a", encoding="utf-8") as fh:
            step = max(1, rate // 20)  # benign lines per 50 ms
            pos = 0
            for i in range(1, alerts + 1):
                tick = time.monotonic()
                fh.write("\n".join(background[pos : pos + step]) + "\n")
                pos = (pos + step) % max(1, len(background) - step)
                fh.write(deletion(i) + "\n")
                fh.flush()
                written = time.monotonic()
                seen = watcher.wait_for(f"198.51.{100 + i // 250}.{i % 250 + 1}", timeout=30)
                lat.append(seen - written)
                time.sleep(max(0.0, 0.05 - (time.monotonic() - tick)))
    finally:
        watcher.stop()
        log.unlink()
    lat.sort()
    return {"alerts": len(lat), "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], "max_ms": 1000 * lat[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=20_000, help="benign lines/s during the latency run")
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = traffic(args.lines)
    t = throughput(args.out, lines)
    print(f"throughput: {t['lines']:,} lines ({t['bytes'] / 1e6:.0f} MB) written in {t['write_s']:.2f} s; "
          f"watch alerted on the last after {t['watch_s']:.2f} s = {t['watch_lps']:,.0f} lines/s")
    print(f"  baseline investigate (batch, same file): {t['investigate_s']:.2f} s = "
          f"{t['investigate_lps']:,.0f} lines/s; "
          f"watch/investigate = {t['watch_lps'] / t['investigate_lps']:.2f}x")
    print(f"  baseline parser+engine alone (no I/O): {t['engine_lps']:,.0f} lines/s; "
          f"watch/engine = {t['watch_lps'] / t['engine_lps']:.2f}x")
    lat = latency(args.out, args.rate, args.alerts)
    print(f"latency: {lat['alerts']} alerts with {args.rate:,} benign lines/s: p50 {lat['p50_ms']:.0f} ms, "
          f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms")


if __name__ == "__main__":
    main()
