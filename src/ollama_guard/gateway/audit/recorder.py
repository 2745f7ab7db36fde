"""The request path's only door to the audit log.

    recorder.record(fields)                      # every decision; spooled before it returns
    await recorder.durable()                     # before the answer's last byte: its record is on disk
    await recorder.spool_before_forward(fields)  # a state-changing admin action: on disk before it goes
    recorder.accepting()                         # False → answer keyed requests 503 (fail closed)
    recorder.backlog(), recorder.healthy()       # readiness and metrics
    await recorder.flush()                       # wait until what was spooled is in the database

``record`` hands the record to the kernel (the spool, one ``write(2)``) and returns; the writer
process chains and stores it. The record stage then awaits ``durable()`` before the answer's last
byte is sent: the record is on disk (``audit_sync = "answer"``), or its sequence number is durably
reserved, so that a power loss that erases it leaves a gap ``logs verify`` names (``"interval"``; see
``ack.py``). ``durable()`` is False when an fsync failed: the answer is then not completed, and keyed
requests are refused until an fsync succeeds again.

Refusals of unauthenticated traffic are aggregated: the first refusal of each (client address, reason)
in an interval is recorded at once, the repeats are counted and recorded as one row with ``count`` = N
when the interval ends (at most ``aggregate_limit`` distinct pairs per interval; beyond that they are
counted under client ``*``). So a flood neither delays nor displaces a keyed record, and the log grows
with distinct attackers, not with packets.

Sequence numbers are given here, before the write: a record that could not be spooled leaves a gap that
``logs verify`` names, and is counted in ``dropped`` (which must stay 0); the recorder then stops
accepting keyed requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ollama_guard.errors import GuardError
from ollama_guard.gateway.audit.ack import RESERVE_AHEAD, AnswerGate
from ollama_guard.gateway.audit.record import RecordFields
from ollama_guard.gateway.audit.spool import SEGMENT_BYTES, SpoolWriter
from ollama_guard.gateway.db import redact_url, sqlite_path
from ollama_guard.gateway.secrets import secret_fingerprint
from ollama_guard.paths import data_dir

log = logging.getLogger("ollama_guard.gateway.audit")

# The writer ignores SIGTERM/SIGINT from its first instruction (before the heavy imports), and runs in
# a session of its own: a stop signal for the gateway's process group (a shell, a supervisor, the
# tests) does not cut it off mid-drain; it stops when the gateway tells it to or when the gateway is gone.
WRITER_ARGV = (
    sys.executable, "-c",
    "import signal\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "from ollama_guard.gateway.audit.writer import main\n"
    "raise SystemExit(main())",
    "ollama_guard.gateway.audit.writer",  # argv[1]: names the process in `ps`
)


class AuditUnavailable(Exception):
    """The record could not be made durable: the request must not go ahead."""


def spool_dir_for(db_url: str) -> Path:
    """Where the gateway processes using ``db_url`` spool their records (shared by the processes of
    one host, so a survivor drains a dead process's spool): next to a SQLite file, else under the
    data directory, named after the (password-free) database URL."""
    path = sqlite_path(db_url)
    if path is not None:
        db = Path(path).expanduser()
        return db.parent / "audit-spool" / db.name
    digest = hashlib.sha256(redact_url(db_url).encode()).hexdigest()[:16]
    return data_dir() / "audit-spool" / digest


def new_writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class Recorder:
    def __init__(
        self,
        db_url: str,
        secret: bytes,
        *,
        spool_dir: Path | None = None,
        writer: str | None = None,
        max_backlog: int = 50_000,
        aggregate_interval: float = 1.0,
        aggregate_limit: int = 10_000,
        segment_bytes: int = SEGMENT_BYTES,
        close_timeout: float = 30.0,
        writer_settings: dict[str, Any] | None = None,
        sync_answers: bool = False,
        reserve_ahead: int = RESERVE_AHEAD,
    ) -> None:
        self._db_url = db_url
        self._secret = secret
        self.writer = writer or new_writer_id()
        self.spool = SpoolWriter(spool_dir or spool_dir_for(db_url), self.writer, secret_fingerprint(secret),
                                 segment_bytes=segment_bytes)
        self._max_backlog = max_backlog
        self._aggregate_interval = aggregate_interval
        self._aggregate_limit = aggregate_limit
        self._close_timeout = close_timeout
        self._writer_settings = writer_settings or {}
        self._gate = AnswerGate(self.spool, sync_answers=sync_answers, reserve_ahead=reserve_ahead)
        self._seq = 0
        self._committed = 0
        self._aggregates: dict[tuple[str, str], list[Any]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # the writer process has connected
        self._closing = False
        self._spool_error: str | None = None
        self._last_error_log = float("-inf")
        self.last_error: str | None = None  # the writer process's last database error
        # metrics
        self.spooled = 0
        self.dropped = 0
        self.aggregated = 0
        self.gaps = 0
        self.corrupt = 0

    # --- lifecycle --------------------------------------------------------------------------------
    async def start(self, *, wait_ready: bool = False) -> None:
        """Open the spool and start the writer process. Records are accepted at once (they wait in
        the spool); the writer process connects in the background (``wait_ready`` waits for it)."""
        try:
            self.spool.open()
            await self._gate.start(self._seq)
        except OSError as exc:
            where = self.spool.directory
            raise GuardError(f"cannot open the audit spool in {where}: {exc.strerror or exc}") from None
        self._ready = asyncio.Event()
        first = await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(first), name="ollama-guard audit writer")
        self._arm_flush()
        if wait_ready:
            await asyncio.wait_for(self._ready.wait(), timeout=60)

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *WRITER_ARGV, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        settings = {"db": self._db_url, "secret": self._secret.hex(), "spool": str(self.spool.directory),
                    "writer": self.writer, **self._writer_settings}
        assert process.stdin is not None
        process.stdin.write(json.dumps(settings).encode() + b"\n")
        await process.stdin.drain()
        self._process = process
        return process

    async def _supervise(self, process: asyncio.subprocess.Process) -> None:
        """Run the writer process; restart it if it dies while the gateway runs."""
        while True:
            assert process.stdout is not None
            async for raw in process.stdout:
                self._on_message(raw.decode("ascii", "replace").strip())
            await process.wait()
            if self._closing:
                return
            self.last_error = f"audit writer exited ({process.returncode}); restarting"
            log.error("%s", self.last_error)
            await asyncio.sleep(1.0)
            process = await self._spawn()

    def _on_message(self, line: str) -> None:
        kind, _, rest = line.partition(" ")
        if kind == "c":
            seq, gaps, corrupt = (int(x) for x in rest.split())
            self._committed, self.gaps, self.corrupt = seq, gaps, corrupt
        elif kind == "ready":
            self.last_error = None
            self._ready.set()
        elif kind == "e":
            self.last_error = rest
            log.error("audit log write failed (will retry): %s", rest)
        elif kind == "ok":
            self.last_error = None
            log.warning("audit log writable again")

    async def close(self) -> None:
        """Spool what is aggregated, let the writer process drain everything, then stop."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        with contextlib.suppress(Exception):
            self._flush_aggregates()
        self._closing = True
        self.spool.close()
        process = self._process
        if process is not None and process.returncode is None and process.stdin is not None:
            with contextlib.suppress(OSError, RuntimeError):
                process.stdin.write(b"close\n")
                await process.stdin.drain()
                process.stdin.close()
        if self._supervisor is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._supervisor), timeout=self._close_timeout)
            except TimeoutError:
                log.error("audit writer still busy after %.0f s: %d records stay in the spool for the "
                          "next start", self._close_timeout, self.backlog())
                if process is not None and process.returncode is None:
                    process.kill()
                    await process.wait()
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
        self.spool.release()

    # --- the request path's interface ---------------------------------------------------------------
    def record(self, fields: RecordFields) -> None:
        """Spool one decision (never raises; a failure is counted, logged and leaves a gap)."""
        if fields[1] is None and fields[8] == "deny":  # key_id, decision: unauthenticated refusal
            self._aggregate(fields)
        else:
            self._append(1, fields)

    async def spool_before_forward(self, fields: RecordFields) -> None:
        """Spool ``fields`` and fsync before returning; ``AuditUnavailable`` if that is impossible."""
        if not self._append(1, fields):
            raise AuditUnavailable(self._spool_error or "audit spool unavailable")
        if not await self._gate.sync():
            raise AuditUnavailable(self._gate.error or "audit spool unavailable")

    async def durable(self) -> bool:
        """Before an answer's last byte: False if it must not be completed (see ``ack.AnswerGate``:
        its record on disk, or its sequence number durably reserved)."""
        return await self._gate.before_answer(self._seq)

    async def flush(self, wait: float = 10.0) -> bool:
        """Wait until every record spooled so far is in the database (False after ``wait`` seconds)."""
        target = self._seq
        deadline = time.monotonic() + wait
        while self._committed < target:
            if time.monotonic() > deadline or self._closing:
                return False
            await asyncio.sleep(0.01)
        return True

    def backlog(self) -> int:
        """Records spooled but not yet in the database."""
        return self._seq - self._committed

    def accepting(self) -> bool:
        """False when keyed requests must be refused: the spool failed or the writer fell behind."""
        return (self._spool_error is None and self._gate.error is None and self.backlog() < self._max_backlog
                and not self._closing)

    def healthy(self) -> bool:
        """For readiness: accepting, and the writer process is writing."""
        return self.accepting() and self._ready.is_set() and self.last_error is None \
            and self._process is not None and self._process.returncode is None

    def stats(self) -> dict[str, int]:
        return {"backlog": self.backlog(), "spooled": self.spooled, "dropped": self.dropped,
                "aggregated": self.aggregated, "gaps": self.gaps, "corrupt": self.corrupt}

    # --- internals ----------------------------------------------------------------------------------
    def _append(self, count: int, fields: tuple[Any, ...]) -> bool:
        self._seq += 1
        try:
            self.spool.append(self._seq, count, fields)
        except (OSError, ValueError) as exc:
            self._spool_failed(exc)
            return False
        self.spooled += 1
        if self._spool_error is not None:  # the spool works again; what was lost stays a named gap
            self._spool_error = None
            log.warning("audit spool writable again (%d records lost)", self.dropped)
        return True

    def _spool_failed(self, exc: BaseException) -> None:
        self.dropped += 1
        self._spool_error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        now = time.monotonic()
        if now - self._last_error_log > 5:
            self._last_error_log = now
            log.error("audit spool write failed (%d records lost so far, keyed requests refused): %s",
                      self.dropped, self._spool_error)

    def _aggregate(self, fields: RecordFields) -> None:
        key = (fields[3], fields[9])  # client, reason
        entry = self._aggregates.get(key)
        if entry is None:
            if len(self._aggregates) < self._aggregate_limit:
                self._aggregates[key] = [0, fields]
                self._append(1, fields)
                return
            key = ("*", fields[9])
            entry = self._aggregates.get(key)
            if entry is None:
                entry = self._aggregates[key] = [0, fields]
        entry[0] += 1
        entry[1] = fields
        self.aggregated += 1

    def _flush_aggregates(self) -> None:
        pending, self._aggregates = self._aggregates, {}
        now = time.time()
        for (client, _reason), (repeats, sample) in pending.items():
            if repeats:
                sample = sample if isinstance(sample, RecordFields) else RecordFields(*sample)
                self._append(repeats, sample._replace(time=now, client=client, latency_ms=0.0,
                                                      request_id="", bytes_in=0, bytes_out=0))

    def _arm_flush(self) -> None:
        def tick() -> None:
            try:
                self._flush_aggregates()
            finally:
                if not self._closing:
                    self._arm_flush()

        self._flush_handle = asyncio.get_running_loop().call_later(self._aggregate_interval, tick)
