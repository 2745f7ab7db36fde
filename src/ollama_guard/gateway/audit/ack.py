"""What an answer's last byte waits for, so that no answered request's record can vanish unseen.

Two policies (``audit_sync``):

* ``answer`` — the record is on disk: the answer waits for the group-commit fsync that covers it
  (``SpoolWriter.sync``: one fsync shared by every answer waiting at that moment). A power loss then
  cannot erase an answered request's record.
* ``interval`` (the default) — the record is in the kernel (it was written before this is asked) and
  its *sequence number is reserved durably*: the spool holds a fsynced ``{"reserve": N}`` line with
  N ≥ the record's number. Reservations are made ``reserve_ahead`` numbers at a time, in the background
  once half of the current one is used, so an answer waits only when the numbers run out faster than
  one fsync. After a power loss the spool may end below its reservation: the writer process then
  records the numbers in between as a gap, which ``logs verify`` names (at most ``reserve_ahead``
  numbers, not all of them necessarily answered). Records are fsynced by the writer process about
  every 20 ms.

An fsync that fails withholds the answer (False) and makes ``error`` non-None: keyed requests are then
refused, and every answer tries the fsync again until one succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ollama_guard.gateway.audit.spool import SpoolWriter

log = logging.getLogger("ollama_guard.gateway.audit")

RESERVE_AHEAD = 1024


class AnswerGate:
    def __init__(self, spool: SpoolWriter, *, sync_answers: bool,
                 reserve_ahead: int = RESERVE_AHEAD) -> None:
        self.spool = spool
        self.sync_answers = sync_answers
        self.reserve_ahead = reserve_ahead
        self.reserved = 0  # reserved sequence numbers known to be on disk
        self.error: str | None = None  # the last fsync failed: nothing since is known to be on disk
        self._wanted = 0  # the highest number an answer waits for
        self._reserving: asyncio.Task[bool] | None = None
        self._last_log = float("-inf")

    async def start(self, seq: int) -> None:
        """The first reservation, before any answer (raises OSError if it cannot be made durable)."""
        if not self.sync_answers:
            self.spool.reserve(seq + self.reserve_ahead)
            await self.spool.sync()
            self.reserved = self.spool.reservation

    async def sync(self) -> bool:
        """Everything spooled so far on disk; False if the fsync failed."""
        try:
            await self.spool.sync()
        except OSError as exc:
            self._failed(exc)
            return False
        if self.error is not None:
            self.error = None
            log.warning("audit spool fsync works again")
        return True

    async def before_answer(self, seq: int) -> bool:
        """May the answer whose record got number ``seq`` (or lower) be completed?"""
        if self.sync_answers:
            return await self.sync()
        if self.error is not None and not await self.sync():
            return False
        if seq > self.reserved - self.reserve_ahead // 2:
            self._wanted = max(self._wanted, seq)
            task = self._reserve()
            while seq > self.reserved:  # the answer's number is not reserved yet: it waits
                if not await asyncio.shield(task):
                    return False
                task = self._reserve()
        return True

    def _reserve(self) -> asyncio.Task[bool]:
        """The reservation under way, or a new one of ``reserve_ahead`` numbers past the highest
        number an answer waits for."""
        task = self._reserving
        if task is None or task.done():
            task = self._reserving = asyncio.get_running_loop().create_task(self._extend())
        return task

    async def _extend(self) -> bool:
        try:
            self.spool.reserve(self._wanted + self.reserve_ahead)
        except OSError as exc:
            self._failed(exc)
            return False
        target = self.spool.reservation
        if not await self.sync():
            return False
        self.reserved = max(self.reserved, target)
        return True

    def _failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"
        now = time.monotonic()
        if now - self._last_log > 5:
            self._last_log = now
            log.error("audit spool fsync failed (answers withheld, keyed requests refused): %s", self.error)
