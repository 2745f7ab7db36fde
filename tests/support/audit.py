"""Audit-log helpers for tests: write records straight into a writer's chain (what the writer process
does, in-process), and an in-memory stand-in for the request path's `Recorder` interface."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.audit.chain import append_checkpoint, append_records, register_writer
from ollama_guard.gateway.db import immediate
from ollama_guard.gateway.secrets import PURPOSE_AUDIT_MAC, derive_key


async def store_records(
    engine: AsyncEngine, secret: bytes, records: Iterable[Any], *, writer: str = "test-writer",
    close: bool = True, checkpoint: bool = True,
) -> tuple[int, str]:
    """Chain ``records`` (AuditRecords or RecordFields tuples) onto ``writer``'s chain in one
    transaction, checkpoint the new head (unless told not to); returns it."""
    key = derive_key(secret, PURPOSE_AUDIT_MAC)
    async with immediate(engine).begin() as conn:
        head = await register_writer(conn, key, writer)
        items = [(head[0] + i, 1, r) for i, r in enumerate(records, 1)]
        seq, mac, _ = await append_records(conn, key, writer, head, items, close=close)
        if checkpoint:
            await append_checkpoint(conn, key, writer, seq, mac)
    return seq, mac


class MemoryAudit:
    """The `Recorder` interface the `record` stage uses, keeping records in a list (unit tests of the
    request path that do not start a writer process)."""

    def __init__(self) -> None:
        self.records: list[Any] = []
        self.intents: list[Any] = []

    def record(self, fields: Any) -> None:
        self.records.append(fields)

    async def spool_before_forward(self, fields: Any) -> None:
        self.intents.append(fields)

    async def durable(self) -> bool:
        return True

    def accepting(self) -> bool:
        return True

    def backlog(self) -> int:
        return 0

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None
