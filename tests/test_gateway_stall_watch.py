"""The write timeout of a streamed answer (`forward._StallWatch`): one timer per answer that looks
again every `limit` seconds; only a send that has not returned `limit` seconds after it started
cancels the relaying task."""

from __future__ import annotations

import asyncio

import pytest

from ollama_guard.gateway.stages.forward import _StallWatch


async def test_a_send_that_stalls_after_a_quiet_spell_is_cut_off() -> None:
    stalled_at: list[float] = []

    async def relay() -> _StallWatch:
        watch = _StallWatch(1.0)
        await asyncio.sleep(2.4)  # waiting on the upstream: the timer looks at 1.0 and 2.0 and re-arms
        watch.sending_since = watch.loop.time()
        stalled_at.append(watch.sending_since)
        try:
            await asyncio.get_running_loop().create_future()  # a send the client never takes
        except asyncio.CancelledError:
            assert watch.stalled
            watch.task.uncancel()
            return watch
        finally:
            watch.close()
        raise AssertionError("not cut off")

    await asyncio.wait_for(relay(), 8)
    cut_after = asyncio.get_running_loop().time() - stalled_at[0]
    assert 0.95 < cut_after < 1.4, cut_after  # one limit after the send began, not a limit after a check


async def test_sends_that_return_in_time_are_never_cut_off() -> None:
    async def relay() -> None:
        watch = _StallWatch(1.0)
        try:
            for _ in range(6):
                watch.sending_since = watch.loop.time()
                await asyncio.sleep(0.2)  # a slow but moving client
                watch.sending_since = None
                await asyncio.sleep(0.1)
        finally:
            watch.close()
        assert not watch.stalled

    await asyncio.wait_for(relay(), 5)


async def test_closing_the_watch_stops_its_timer() -> None:
    async def relay() -> None:
        watch = _StallWatch(0.1)
        watch.sending_since = watch.loop.time()
        watch.close()
        await asyncio.sleep(0.3)  # not cancelled

    await relay()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.get_running_loop().create_future(), 0.01)
