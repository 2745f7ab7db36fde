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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

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


async def replicas_run(url: str, replicas: int, records: int, spool: Path) -> tuple[float, str]:
    recorders = [Recorder(url, SECRET, spool_dir=spool, max_backlog=10**9) for _ in range(replicas)]
    for r in recorders:
        await r.start()
    for r in recorders:
        assert r._process is not None
        os.kill(r._process.pid, signal.SIGSTOP)
    for r in recorders:
        for i in range(records):
            r.record(fields(i))
    started = time.perf_counter()
    for r in recorders:
        assert r._process is not None
        os.kill(r._process.pid, signal.SIGCONT)
    done = await asyncio.gather(*(r.flush(wait=900) for r in recorders))
    elapsed = time.perf_counter() - started
    assert all(done), "a writer did not finish"
    for r in recorders:
        await r.close()
    engine = create_engine_for(url)
    result = await verify_chain(engine, SECRET)
    await engine.dispose()
    return replicas * records / elapsed, result.summary()


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
    parser.add_argument("--write-doc", type=Path)
    args = parser.parse_args()
    from support.pg_redis import PostgresServer

    counts = [int(x) for x in args.replicas.split(",")]
    lines = []
    pg = PostgresServer()
    pg.start()
    try:
        rates: dict[int, float] = {}
        for n in counts:
            url = pg.url(pg.create_database())
            asyncio.run(prepare(url))
            with tempfile.TemporaryDirectory() as tmp:
                rate, verdict = asyncio.run(replicas_run(url, n, args.records, Path(tmp)))
            rates[n] = rate
            ratio = rate / rates[counts[0]]
            line = f"| {n} | {n * args.records:,} | {rate:,.0f} | {ratio:.2f}× | {verdict} |"
            print(line, flush=True)
            lines.append(line)
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
    section = (
        f"{MARK}\n"
        f"Measured by `python bench/audit.py --records {args.records}` on this machine ({cores} cores, "
        "shared; "
        "PostgreSQL started by the bench with fsync off, as in the tests).\n\n"
        "Audit rows/s absorbed (spooled records chained and committed), by number of replicas (writers):\n\n"
        "| replicas | records | rows/s | vs 1 | verify |\n|---|---|---|---|---|\n" + "\n".join(lines) + "\n\n"
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
