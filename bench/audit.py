"""Audit pipeline benchmark (not a test).

1. **Audit rows/s with 1, 2 and 4 replicas on PostgreSQL.** Each replica is a gateway process's
   `Recorder` with its own writer process and chain. R records per replica are spooled while the writers
   are stopped (SIGSTOP). The clock then starts, the writers are resumed, and the bench measures the time
   until every record is committed and chained: the rows/s the audit can absorb. Ratios are against 1
   replica in the same run, and `logs verify` is run on the result.
2. **Audit CPU per request in the serving process.** R records go through the same spool → chain →
   database code two ways, on SQLite, the default deployment:
   * *writer process* (as shipped): the serving process only spools;
   * *in-process*: the chaining and the database writes run in a thread of the serving process, as
     before the writer process existed.
   The bench reports the serving process's CPU µs per record (all its threads), and the writer
   process's CPU alongside.

    python bench/audit.py [--records 20000] [--replicas 1,2,4] [--write-doc docs/performance.md]

Everything runs on loopback; PostgreSQL is started on a free port (tests/support/pg_redis.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from audit_cap import CpuCap, WaitSampler, backend_of, cgroup_root  # noqa: E402
from audit_cap import cpu_seconds as proc_cpu  # noqa: E402
from ollama_guard.gateway.audit import Recorder, RecordFields, verify_chain  # noqa: E402
from ollama_guard.gateway.audit.spool import SpoolReader, SpoolWriter  # noqa: E402
from ollama_guard.gateway.audit.writer import Drain, Store  # noqa: E402
from ollama_guard.gateway.db import create_engine_for, init_schema  # noqa: E402
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key, secret_fingerprint  # noqa: E402

SECRET = b"bench-secret-" * 4
MARK = "<!-- bench/audit.py -->"


def fields(i: int) -> RecordFields:
    return RecordFields(time.time(), "0123456789abcdef", "bench", "10.1.2.3", "POST", "/api/chat",
                        "llama3.2:1b", 200, "allow", "ok", 412, 2048, 37, 12.5, f"req-{i:x}")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class FleetRun:
    rate: float  # rows/s, the whole fleet
    verdict: str  # logs verify's summary
    cpu: list[float] = field(default_factory=list)  # CPU s used by each replica (writer + its backend)
    throttled: list[float] = field(default_factory=list)  # share of each replica's periods at its quota
    elapsed: float = 0.0
    waits: str = ""  # the wait-event sample (capped runs)


async def replicas_run(url: str, replicas: int, records: int, spool: Path, *, cap: float | None = None,
                       pg_port: int = 0, sample: bool = False) -> FleetRun:
    """`replicas` recorders, each with its writer process (and, with `cap`, the writer and its
    PostgreSQL backend in a cgroup of `cap` CPUs); R records each spooled while the writers are
    stopped, then the time until every record is chained and committed."""
    recorders = [Recorder(url, SECRET, spool_dir=spool, max_backlog=10**9) for _ in range(replicas)]
    caps: list[CpuCap] = []
    sampler: WaitSampler | None = None
    try:
        for r in recorders:
            await r.start(wait_ready=True)
        pids = [r._process.pid for r in recorders if r._process is not None]
        backends = [backend_of(pid, pg_port) for pid in pids] if pg_port else []
        if cap is not None:
            if None in backends:
                raise SystemExit("could not find each writer's PostgreSQL backend")
            for i, (pid, backend) in enumerate(zip(pids, backends, strict=True)):
                group = CpuCap(f"og-bench-audit-{os.getpid()}-{i}", cap)
                caps.append(group)
                group.add(pid)
                group.add(backend)  # type: ignore[arg-type]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for r in recorders:
            for i in range(records):
                r.record(fields(i))
        members = [[pid, b] if b else [pid]
                   for pid, b in zip(pids, backends or [None] * len(pids), strict=True)]
        cpu_before = [sum(proc_cpu(x) for x in m) for m in members]
        periods_before = [c.throttled() for c in caps]
        if sample and backends:
            sampler = WaitSampler(url, [b for b in backends if b])
            sampler.start()
        started = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        done = await asyncio.gather(*(r.flush(wait=900) for r in recorders))
        elapsed = time.perf_counter() - started
        assert all(done), "a writer did not finish"
        run = FleetRun(replicas * records / elapsed, "", elapsed=elapsed)
        run.cpu = [sum(proc_cpu(x) for x in m) - before
                   for m, before in zip(members, cpu_before, strict=True)]
        for c, (p0, t0) in zip(caps, periods_before, strict=True):
            p1, t1 = c.throttled()
            run.throttled.append((t1 - t0) / max(p1 - p0, 1))
        if sampler is not None:
            await sampler.stop()
            run.waits = sampler.summary()
    finally:
        if sampler is not None:
            await sampler.stop()
        for r in recorders:
            await r.close()
        for c in caps:
            c.remove()
    engine = create_engine_for(url)
    result = await verify_chain(engine, SECRET)
    await engine.dispose()
    run.verdict = result.summary()
    return run


async def writer_process_cost(url: str, records: int, spool: Path) -> tuple[float, float]:
    recorder = Recorder(url, SECRET, spool_dir=spool, max_backlog=10**9)
    await recorder.start()
    before, before_child = cpu(), child_cpu()
    for i in range(records):
        recorder.record(fields(i))
        if i % 256 == 0:
            await asyncio.sleep(0)  # a serving loop gives other tasks a turn
    assert await recorder.flush(wait=600)
    serving = cpu() - before
    await recorder.close()  # the writer process exits: its CPU shows in RUSAGE_CHILDREN
    return serving / records * 1e6, (child_cpu() - before_child) / records * 1e6


def in_process_cost(url: str, records: int, spool: Path) -> float:
    fingerprint = secret_fingerprint(SECRET)
    writer = SpoolWriter(spool, "inproc", fingerprint)
    writer.open()
    done = threading.Event()

    def drain() -> None:
        async def run() -> None:
            store = Store(url)
            reader = SpoolReader(spool, "inproc", fingerprint)
            key = derive_key(SECRET, PURPOSE_AUDIT_MAC)
            d = Drain(store, key, reader, batch=2000, checkpoint_interval=1.0)
            while not done.is_set():
                if not await d.step():
                    await asyncio.sleep(0.02)
            await d.finish()
            await store.close()

        asyncio.run(run())

    before = cpu()
    thread = threading.Thread(target=drain)
    thread.start()
    for i in range(records):
        writer.append(i + 1, 1, fields(i))
    done.set()
    thread.join()
    writer.close()
    writer.release()
    return (cpu() - before) / records * 1e6


async def prepare(url: str) -> None:
    engine = create_engine_for(url)
    await init_schema(engine)
    await engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per replica / per run")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--cpu-cap", type=float, default=0.2,
                        help="CPUs per replica (writer process + its PostgreSQL backend) in the capped run")
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up PostgreSQL and the cgroups
    from support.pg_redis import PostgresServer

    counts = [int(x) for x in args.replicas.split(",")]
    lines, capped_lines = [], []
    waits = ""
    cgroups = cgroup_root()
    pg = PostgresServer()
    pg.start()
    try:
        rates: dict[int, float] = {}
        for n in counts:
            url = pg.url(pg.create_database())
            asyncio.run(prepare(url))
            with tempfile.TemporaryDirectory() as tmp:
                run = asyncio.run(replicas_run(url, n, args.records, Path(tmp), pg_port=pg.port))
            rates[n] = run.rate
            cpu = sum(run.cpu) / run.elapsed
            line = (f"| {n} | {n * args.records:,} | {run.rate:,.0f} | {run.rate / rates[counts[0]]:.2f}× | "
                    f"{cpu:.2f} | {run.verdict} |")
            print(line, flush=True)
            lines.append(line)
        if cgroups is not None:
            capped: dict[int, float] = {}
            for n in counts:
                url = pg.url(pg.create_database())
                asyncio.run(prepare(url))
                with tempfile.TemporaryDirectory() as tmp:
                    run = asyncio.run(replicas_run(url, n, args.records, Path(tmp), cap=args.cpu_cap,
                                                   pg_port=pg.port, sample=n == max(counts)))
                capped[n] = run.rate
                per = [c / run.elapsed / args.cpu_cap for c in run.cpu]
                ratio = run.rate / capped[counts[0]]
                line = (f"| {n} | {n * args.records:,} | {run.rate:,.0f} | {ratio:.2f}× | "
                        f"{run.rate / n:,.0f} | {min(per):.0%}–{max(per):.0%} | "
                        f"{min(run.throttled):.0%}–{max(run.throttled):.0%} | {run.verdict} |")
                print(line, flush=True)
                capped_lines.append(line)
                if run.waits:
                    waits = run.waits
                    print(waits, flush=True)
    finally:
        pg.destroy()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/guard.db"
        asyncio.run(prepare(url))
        serving, writer = asyncio.run(writer_process_cost(url, args.records, Path(tmp) / "a"))
        url2 = f"sqlite:///{tmp}/guard2.db"
        asyncio.run(prepare(url2))
        inproc = in_process_cost(url2, args.records, Path(tmp) / "b")
    cost = (f"| writer process (shipped) | {serving:.1f} | {writer:.1f} |\n"
            f"| in-process chaining + DB writes (before) | {inproc:.1f} | – |")
    print(cost)
    cores = os.cpu_count()
    if cgroups is None:
        capped_text = ("No writable cgroup with a cpu controller here: the capped run was skipped, so the "
                       "figures above are all there is.\n\n")
    else:
        capped_text = (
            f"Each replica capped at {args.cpu_cap} CPU (its writer process and its PostgreSQL backend in a "
            f"cgroup {cgroups[0]} of their own, high weight so they get the quota on a busy machine; the "
            f"{max(counts)}-replica fleet uses {max(counts) * args.cpu_cap:.1f} of {cores} cores):\n\n"
            "| replicas | records | rows/s | vs 1 | rows/s per replica | CPU used / cap | periods at the cap "
            "| verify |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(capped_lines) + "\n\n"
            f"PostgreSQL wait events of the {max(counts)} writers' backends during the capped "
            f"{max(counts)}-replica run (sampled every 20 ms): {waits}.\n\n"
        )
    section = (
        f"{MARK}\n"
        f"Measured by `python bench/audit.py --records {args.records} --cpu-cap {args.cpu_cap}` on this "
        f"machine ({cores} cores, shared, load average {os.getloadavg()[0]:.1f} at the end; PostgreSQL "
        "started by the bench with fsync off, as in the tests).\n\n"
        "Audit rows/s absorbed (spooled records chained and committed), by number of replicas (writers), "
        "uncapped (CPU = cores busy with the writers and their backends):\n\n"
        "| replicas | records | rows/s | vs 1 | CPU | verify |\n|---|---|---|---|---|---|\n"
        + "\n".join(lines) + "\n\n" + capped_text +
        "Audit CPU per record (µs), SQLite:\n\n"
        "| pipeline | serving process | writer process |\n|---|---|---|\n" + cost + "\n"
        f"{MARK}\n"
    )
    if args.write_doc is not None:
        text = args.write_doc.read_text()
        pattern = re.compile(re.escape(MARK) + ".*?" + re.escape(MARK) + "\n", re.S)
        text = pattern.sub(lambda _m: section, text) if pattern.search(text) else text + "\n" + section
        args.write_doc.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
