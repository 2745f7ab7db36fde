"""The in-flight body budget: request-body bytes the gateway holds at once, shared fairly.

Two lanes, each a total and a share per holder:

* the **small lane** (`SMALL_LANE_BYTES`) holds bodies of at most `SMALL_BODY` bytes (a model name, a
  prompt, a short chat: almost every request); large bodies never take from it, so no number of them
  — declared, dribbled or parked — makes a small request wait;
* the **large lane** (`max_inflight_body_bytes`, default 3 × `max_body_bytes`) holds the others.

A holder is a key (`key:<id>`) and a client address (`addr:<address or IPv6 /64>`): a request is
charged to both, and neither may hold more than its lane's share (large lane: the larger of a third
of the lane and one body of the largest size, so one client can always send one; small lane: an
eighth). So neither one key from many addresses nor many keys from one address can take a lane
whole: starving it takes several keys *and* several addresses, each at its share.

A declared `Content-Length` is taken whole before its first byte is read (and read into one buffer
of that size: the bytes are truly held). That is all or nothing — two bodies that each hold half of
what they need and wait for the rest would wait for each other — and the shares above are what keep
a declaration without bytes from starving anyone. A chunked body is charged as it arrives (small lane
up to `SMALL_BODY`, then moved to the large lane) and refused at once when it does not fit.
A declared body waits up to `BUDGET_WAIT` seconds for room, then 503 with Retry-After.
"""

from __future__ import annotations

import asyncio

from ollama_guard.gateway.refusal import Refusal

SMALL_BODY = 64 * 1024  # bodies of at most this many bytes use the small lane
SMALL_LANE_BYTES = 16 * 1024 * 1024  # the small lane: 256 small bodies of the largest size at once
SMALL_SHARE_PARTS = 8  # a key or address holds at most 1/8 of the small lane
LARGE_SHARE_PARTS = 3  # … and at most 1/3 of the large lane (or one body of the largest size)
BUDGET_WAIT = 5.0  # seconds a declared body may wait for room


def busy() -> Refusal:
    return Refusal(503, "gateway busy with other request bodies, try again", "body-budget", retry_after=1)


def too_large(limit: int) -> Refusal:
    return Refusal(413, f"request body larger than {limit} bytes", "body-too-large")


class Lane:
    """A pool of body bytes: a total, and a share no single holder may exceed."""

    def __init__(self, limit: int, share: int) -> None:
        self.limit = limit
        self.share = min(share, limit)
        self.held = 0
        self.by_holder: dict[str, int] = {}
        self._freed: asyncio.Event | None = None

    def try_take(self, size: int, holders: tuple[str, ...]) -> bool:
        if self.held + size > self.limit:
            return False
        by_holder = self.by_holder
        for holder in holders:
            if by_holder.get(holder, 0) + size > self.share:
                return False
        self.held += size
        for holder in holders:
            by_holder[holder] = by_holder.get(holder, 0) + size
        return True

    async def take(self, size: int, holders: tuple[str, ...], wait: float) -> None:
        """Hold `size` bytes, waiting up to `wait` seconds for room; Refusal 503 when none came."""
        if size > self.share:
            raise too_large(self.share)
        if self.try_take(size, holders):
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not self.try_take(size, holders):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise busy()
            if self._freed is None:
                self._freed = asyncio.Event()
            try:
                async with asyncio.timeout(remaining):
                    await self._freed.wait()
            except TimeoutError:
                raise busy() from None

    def give(self, size: int, holders: tuple[str, ...]) -> None:
        self.held -= size
        by_holder = self.by_holder
        for holder in holders:
            left = by_holder.get(holder, 0) - size
            if left > 0:
                by_holder[holder] = left
            else:
                by_holder.pop(holder, None)
        freed, self._freed = self._freed, None
        if freed is not None:
            freed.set()  # every waiter looks again


class BodyBudget:
    """Both lanes of one process. `limit`: the large lane; `largest`: the largest body any route
    takes (the large lane's share is never below it)."""

    def __init__(
        self, limit: int, *, largest: int | None = None, small_limit: int = SMALL_LANE_BYTES,
        small_body: int = SMALL_BODY,
    ) -> None:
        self.small_body = small_body
        self.large = Lane(limit, max(limit // LARGE_SHARE_PARTS, largest or 0))
        self.small = Lane(small_limit, max(small_limit // SMALL_SHARE_PARTS, small_body))

    @property
    def held(self) -> int:
        return self.large.held + self.small.held

    def lane_for(self, size: int) -> Lane:
        return self.small if size <= self.small_body else self.large


def holders_of(key_id: str | None, client_group: str) -> tuple[str, ...]:
    """Who a request's body bytes are charged to: its key and its client address (or /64)."""
    return (f"key:{key_id}", f"addr:{client_group}") if key_id else (f"addr:{client_group}",)


class BodyLease:
    """The part of the budget one request holds (in one lane at a time); `release` is idempotent."""

    __slots__ = ("budget", "holders", "lane", "size")

    def __init__(self, budget: BodyBudget, holders: tuple[str, ...] = ()) -> None:
        self.budget = budget
        self.holders = holders
        self.lane: Lane | None = None
        self.size = 0

    async def take(self, size: int) -> None:
        """A declared body: its whole size, at once (waiting for room)."""
        assert self.lane is None
        lane = self.budget.lane_for(size)
        if size > lane.share or not lane.try_take(size, self.holders):  # (no coroutine when it fits)
            await lane.take(size, self.holders, BUDGET_WAIT)
        self.lane, self.size = lane, size

    def grow(self, size: int) -> None:
        """A chunked body's next `size` bytes (Refusal 503 at once when they do not fit)."""
        total = self.size + size
        lane = self.budget.lane_for(total)
        if lane is self.lane or self.lane is None:
            if not lane.try_take(size, self.holders):
                raise busy()
        else:  # past the small lane: the whole body moves to the large one
            if not lane.try_take(total, self.holders):
                raise busy()
            self.lane.give(self.size, self.holders)
        self.lane, self.size = lane, total

    def release(self) -> None:
        if self.size and self.lane is not None:
            self.lane.give(self.size, self.holders)
            self.size = 0
        self.lane = None
