"""`audit_sync = "interval"` (the default): an answer does not wait for an fsync of its record, but its
sequence number is reserved durably ahead of use. A power loss that cuts records off the spool after
they were answered then leaves a gap `logs verify` names; a process that was merely killed leaves none."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

import ollama_guard.gateway.audit.writer as writer_module
from ollama_guard.gateway.audit import Recorder, RecordFields, verify_chain
from ollama_guard.gateway.audit.spool import SpoolReader, SpoolWriter, segment_path
from ollama_guard.gateway.audit.writer import WriterProcess
from ollama_guard.gateway.db import create_engine_for, init_schema
from ollama_guard.gateway.secrets import secret_fingerprint

SECRET = b"reserve-test-secret-" * 2


def fields(i: int) -> RecordFields:
    return RecordFields(1_790_000_000.0 + i, "0123456789abcdef", "k", "10.0.0.1", "GET", "/api/tags", None,
                        200, "allow", "ok", 0, 10, 0, 1.0, f"r{i}")


async def answer(rec: Recorder, i: int) -> bool:
    rec.record(fields(i))
    return await asyncio.wait_for(rec.durable(), 2)


async def test_an_answer_waits_only_when_its_number_is_not_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   reserve_ahead=8)
    await rec.start()  # numbers 1-8 reserved, on disk
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real = os.fsync

    def held(fd: int) -> None:
        if threading.current_thread().name.startswith("og-audit-fsync"):
            calls.append(fd)
            entered.set()
            release.wait(5)
        real(fd)

    monkeypatch.setattr(os, "fsync", held)
    try:
        for i in range(1, 5):
            assert await answer(rec, i)
        assert calls == []  # within the reservation, below its half: no fsync at all
        assert await answer(rec, 5)  # past half: the next reservation starts in the background ...
        assert await asyncio.to_thread(entered.wait, 5)
        for i in range(6, 9):
            assert await answer(rec, i)  # ... and answers within the old one do not wait for it
        rec.record(fields(9))
        waiting = asyncio.ensure_future(rec.durable())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # number 9 is not reserved until that fsync returns
        release.set()
        assert await waiting
        assert len(calls) == 1 and rec.spool.reservation >= 9
    finally:
        release.set()
        monkeypatch.undo()
        await rec.close()


async def test_reservations_cost_one_fsync_per_half_reservation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   reserve_ahead=64)
    await rec.start()
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    try:
        for i in range(1, 321):
            assert await answer(rec, i)
        assert 5 <= len(calls) <= 12, len(calls)  # 320 answers: about one fsync per 32
        assert rec.spool.reservation >= 320
    finally:
        monkeypatch.undo()
        await rec.close()


@pytest.mark.parametrize("restarted", [True, False])
async def test_records_cut_off_by_a_power_loss_are_named_by_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restarted: bool
) -> None:
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    directory = tmp_path / "spool"
    spool = SpoolWriter(directory, "w1", secret_fingerprint(SECRET))
    spool.open()
    spool.reserve(64)
    await spool.sync()
    for i in range(1, 11):
        spool.append(i, 1, fields(i))  # answered, never fsynced
    spool.close()
    spool.release()
    segment = segment_path(directory, "w1", 0)
    lines = segment.read_bytes().split(b"\n")
    segment.write_bytes(b"\n".join(lines[:2 + 6]) + b"\n")  # a power loss: records 7-10 are gone
    if restarted:
        monkeypatch.setattr(writer_module, "boot_id", lambda: "a-later-boot")
    survivor = WriterProcess({"db": url, "secret": SECRET.hex(), "spool": str(directory), "writer": "w2"})
    try:
        await survivor.drain_orphans()
    finally:
        await survivor.store.close()
    result = await verify_chain(engine, SECRET)
    await engine.dispose()
    if restarted:  # numbers 7-64 were reserved, so may have been answered: a gap verify names
        assert not result.intact and result.missing == 58, result.summary()
        assert "58 records missing from writer w1 between" in result.summary()
    else:  # the same boot: nothing written can be lost (a killed process's writes are in the page
        # cache), so nothing may be reported as lost either: no false alarm after every kill -9
        assert result.intact, result.summary()


async def test_a_complete_spool_from_before_a_restart_verifies_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'guard.db'}"
    engine = create_engine_for(url)
    await init_schema(engine)
    directory = tmp_path / "spool"
    spool = SpoolWriter(directory, "w1", secret_fingerprint(SECRET))
    spool.open()
    spool.reserve(8)
    for i in range(1, 9):
        spool.append(i, 1, fields(i))  # every reserved number used and on disk
    await spool.sync()
    spool.close()
    spool.release()
    monkeypatch.setattr(writer_module, "boot_id", lambda: "a-later-boot")
    survivor = WriterProcess({"db": url, "secret": SECRET.hex(), "spool": str(directory), "writer": "w2"})
    try:
        await survivor.drain_orphans()
    finally:
        await survivor.store.close()
    result = await verify_chain(engine, SECRET)
    await engine.dispose()
    assert result.intact and result.count == 8, result.summary()


def test_the_reservation_is_carried_into_each_new_segment(tmp_path: Path) -> None:
    # a segment is deleted once its records are written: the reservation must outlive it
    spool = SpoolWriter(tmp_path, "w1", secret_fingerprint(SECRET), segment_bytes=600)
    spool.open()
    spool.reserve(64)
    for i in range(1, 9):
        spool.append(i, 1, fields(i))
    spool.close()
    assert spool._segment >= 2
    segment_path(tmp_path, "w1", 0).unlink()
    reader = SpoolReader(tmp_path, "w1", secret_fingerprint(SECRET))
    assert reader.read(100, final=True) and reader.reserved == 64


async def test_answers_go_on_after_records_were_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   reserve_ahead=4)
    await rec.start()
    try:
        real_append = rec.spool.append

        def disk_full(*_: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(rec.spool, "append", disk_full)
        for i in range(1, 11):
            rec.record(fields(i))  # lost: numbers 1-10 become a gap verify names
        assert await asyncio.wait_for(rec.durable(), 2)  # reserved past them, not forever short of them
        monkeypatch.setattr(rec.spool, "append", real_append)
        assert await answer(rec, 11)  # number 11 is reserved past the lost ones, not forever short of it
        assert rec.stats()["dropped"] == 10
    finally:
        monkeypatch.undo()
        await rec.close()


async def test_an_answer_is_withheld_when_its_number_cannot_be_reserved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder(f"sqlite:///{tmp_path / 'guard.db'}", SECRET, spool_dir=tmp_path / "spool",
                   reserve_ahead=4)
    await rec.start()  # 1-4 reserved
    try:
        def disk_full(upto: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(rec.spool, "reserve", disk_full)
        for i in range(1, 5):
            assert await answer(rec, i)  # reserved before the disk filled up
        rec.record(fields(5))
        assert await asyncio.wait_for(rec.durable(), 2) is False  # not reserved: not completed
        assert not rec.accepting()  # keyed requests: 503
        assert await asyncio.wait_for(rec.durable(), 2) is False  # the fsync works, the reservation not
        monkeypatch.undo()
        assert await answer(rec, 6) and rec.accepting()
    finally:
        monkeypatch.undo()
        await rec.close()
