"""Helpers for bench/audit.py's scale-out run (not a benchmark of its own).

* `CpuCap` puts processes in a cgroup of their own with a fixed CPU quota (cgroup v2 `cpu.max`, or
  cgroup v1 `cpu.cfs_quota_us` where the cpu controller is still on v1, as on this machine), and a
  high weight so that the group gets its quota even on a busy machine. Each replica (its writer process
  and its PostgreSQL backend) is then a fixed amount of CPU, like a replica on a host of its own, and
  the fleet as a whole is far from using the machine's cores: what limits the fleet's rows/s is then
  what the replicas share (the database, its locks), not the cores.
* `WaitSampler` samples `pg_stat_activity` and `pg_locks` for the writers' backends while they run:
  what each backend is doing (on CPU, waiting for its writer, waiting on a lock — and on which
  relation), so a shared serialisation point would show as lock waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from pathlib import Path

import psutil

V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


def cgroup_root() -> tuple[str, Path] | None:
    """("v2"|"v1", directory under which we may create groups), or None if neither is writable."""
    controllers = V2 / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split() and os.access(V2, os.W_OK):
        return "v2", V2
    if (V1 / "cpu.cfs_quota_us").exists() and os.access(V1, os.W_OK):
        return "v1", V1
    return None


class CpuCap:
    """One cgroup with `cpus` CPUs' worth of quota (None: no quota, only the high weight)."""

    def __init__(self, name: str, cpus: float | None) -> None:
        found = cgroup_root()
        if found is None:
            raise OSError("no writable cgroup with a cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us)")
        self.kind, root = found
        self.root = root
        self.path = root / name
        self.path.mkdir()
        quota = -1 if cpus is None else int(cpus * PERIOD_US)
        if self.kind == "v2":
            (self.path / "cpu.max").write_text(f"{'max' if quota < 0 else quota} {PERIOD_US}")
            (self.path / "cpu.weight").write_text("10000")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            (self.path / "cpu.shares").write_text("262144")
        self.pids: list[int] = []

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))
        self.pids.append(pid)

    def throttled(self) -> tuple[int, int]:
        """(periods with runnable tasks, periods in which the group hit its quota)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat.get("nr_periods", 0)), int(stat.get("nr_throttled", 0))

    def remove(self) -> None:
        for pid in self.pids:  # back to the root group (a PostgreSQL backend may outlive its writer)
            with contextlib.suppress(OSError):
                (self.root / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            self.path.rmdir()


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    return 0.0


def backend_of(writer_pid: int, pg_port: int) -> int | None:
    """The PostgreSQL backend pid serving the writer process's (one, persistent) connection."""
    ports = [c.laddr.port for c in psutil.Process(writer_pid).net_connections("tcp")
             if c.raddr and c.raddr.port == pg_port]
    if len(ports) != 1:
        return None
    for conn in psutil.net_connections("tcp"):
        if conn.raddr and conn.raddr.port == ports[0] and conn.laddr.port == pg_port and conn.pid:
            return int(conn.pid)
    return None


class WaitSampler:
    """Every `interval` s: the state of each backend in `pids`, and any lock they wait for."""

    QUERY = """
        SELECT a.pid, a.state, a.wait_event_type, a.wait_event,
               (SELECT string_agg(coalesce(c.relname, l.locktype), ',')
                  FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation
                 WHERE l.pid = a.pid AND NOT l.granted) AS waiting_for
          FROM pg_stat_activity a WHERE a.pid = ANY($1::int[])
    """

    def __init__(self, dsn: str, pids: list[int], interval: float = 0.02) -> None:
        self.dsn, self.pids, self.interval = dsn, pids, interval
        self.states: Counter[str] = Counter()
        self.locks: Counter[str] = Counter()
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            while True:
                for row in await conn.fetch(self.QUERY, self.pids):
                    self.samples += 1
                    if row["wait_event_type"] is None:
                        what = "running (on CPU)" if row["state"] == "active" else f"{row['state']}"
                    elif row["wait_event_type"] == "Client":
                        what = "waiting for its writer (Client)"
                    else:
                        what = f"{row['wait_event_type']}:{row['wait_event']}"
                    self.states[what] += 1
                    if row["waiting_for"]:
                        self.locks[row["waiting_for"]] += 1
                await asyncio.sleep(self.interval)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> str:
        total = max(self.samples, 1)
        parts = [f"{what} {n / total:.1%}" for what, n in self.states.most_common()]
        lock = "; ".join(f"{rel} {n / total:.1%}" for rel, n in self.locks.most_common()) or "none"
        return f"{self.samples} samples: " + ", ".join(parts) + f". Lock waits by relation: {lock}"
