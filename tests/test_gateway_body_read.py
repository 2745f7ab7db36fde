"""Reading a JSON request body (`body.read_body`): a body the server already holds is taken without a
deadline timer; everything that has to be waited for is read under the deadline, and nothing is lost
by looking first."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ollama_guard.gateway.body import read_body
from ollama_guard.gateway.refusal import Refusal


async def test_a_body_already_received_is_taken_at_once() -> None:
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b'{"model":"m"}', "more_body": False}

    assert await read_body(receive, 100, 5) == b'{"model":"m"}'
    assert calls == 1


async def test_a_body_that_never_comes_is_refused_at_the_deadline() -> None:
    async def receive() -> dict[str, Any]:
        await asyncio.get_running_loop().create_future()  # never resolved
        return {}

    with pytest.raises(Refusal) as refused:
        await asyncio.wait_for(read_body(receive, 100, 0.2), 5)
    assert refused.value.status == 408


async def test_the_rest_of_a_body_that_stops_coming_is_refused_at_the_deadline() -> None:
    parts = [{"type": "http.request", "body": b'{"model":', "more_body": True}]

    async def receive() -> dict[str, Any]:
        if parts:
            return parts.pop(0)
        await asyncio.get_running_loop().create_future()
        return {}

    with pytest.raises(Refusal) as refused:
        await asyncio.wait_for(read_body(receive, 100, 0.2), 5)
    assert refused.value.status == 408


async def test_looking_for_a_body_that_is_not_there_yet_loses_nothing() -> None:
    # a queue-fed receive (as ASGI servers and test clients build them): the look abandons a `get`
    # that waits; the message put a moment later is the one read
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, queue.put_nowait, {"type": "http.request", "body": b"abc", "more_body": True})
    loop.call_later(0.1, queue.put_nowait, {"type": "http.request", "body": b"def", "more_body": False})
    assert await asyncio.wait_for(read_body(queue.get, 100, 2), 5) == b"abcdef"


async def test_a_disconnect_already_received_ends_the_read() -> None:
    from ollama_guard.gateway.body import ClientGone

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientGone):
        await read_body(receive, 100, 5)


async def test_a_receive_that_returns_a_future_is_awaited_once_per_message() -> None:
    loop = asyncio.get_running_loop()
    messages = [{"type": "http.request", "body": b"ab", "more_body": True},
                {"type": "http.request", "body": b"cd", "more_body": False}]

    def receive() -> asyncio.Future[dict[str, Any]]:
        future = loop.create_future()
        loop.call_later(0.01, future.set_result, messages.pop(0))
        return future

    assert await asyncio.wait_for(read_body(receive, 100, 2), 5) == b"abcd"
