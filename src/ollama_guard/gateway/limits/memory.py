"""Limits kept in this process (one gateway process; `build_limiter` refuses several without Redis)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ollama_guard.gateway.limits.base import (
    WINDOW_SECONDS,
    Limited,
    Reservation,
    seconds_until_utc_midnight,
    seed_from_audit,
    utc_day,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ollama_guard.gateway.keys import ApiKey


@dataclass
class _KeyState:
    admitted: deque[float] = field(default_factory=deque)  # monotonic times within the window
    active: int = 0
    token_day: str = ""
    tokens: int = 0  # used and reserved today


class MemoryLimiter:
    """Limits kept in this process. ``clock`` (monotonic seconds) and ``now`` are injectable for tests."""

    def __init__(
        self,
        engine: AsyncEngine | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._now = now
        self._states: dict[str, _KeyState] = {}

    def _state(self, key_id: str) -> _KeyState:
        state = self._states.get(key_id)
        if state is None:
            state = self._states[key_id] = _KeyState()
        return state

    async def start(self) -> None:
        if self._engine is not None:
            now = self._now()
            seed = await seed_from_audit(self._engine, now)
            day = utc_day(now)
            for key_id, total in seed.tokens.items():
                state = self._state(key_id)
                state.token_day, state.tokens = day, total

    async def close(self) -> None:
        return None

    def _today(self, state: _KeyState) -> str:
        day = utc_day(self._now())
        if state.token_day != day:
            state.token_day, state.tokens = day, 0
        return day

    def _check_and_admit(self, key: ApiKey, reserve: int) -> Reservation | None:
        """All checks first, then all updates (a denial consumes nothing). No await: atomic in asyncio."""
        state = self._state(key.id)
        day = ""
        if key.tokens_per_day is not None:
            day = self._today(state)
            if state.tokens >= key.tokens_per_day:
                raise Limited(
                    f"token budget of {key.tokens_per_day} per day used up",
                    seconds_until_utc_midnight(self._now()),
                )
        if key.concurrency is not None and state.active >= key.concurrency:
            raise Limited(f"more than {key.concurrency} concurrent requests", 1)
        t = self._clock()
        if key.rpm is not None:
            window = state.admitted
            while window and window[0] <= t - WINDOW_SECONDS:
                window.popleft()
            if len(window) >= key.rpm:
                raise Limited(f"more than {key.rpm} requests per minute", window[0] + WINDOW_SECONDS - t)
            window.append(t)
        state.active += 1
        if key.tokens_per_day is None:
            return None
        state.tokens += reserve
        return Reservation(uuid.uuid4().hex, day, reserve)

    @contextlib.asynccontextmanager
    async def acquire(self, key: ApiKey, reserve: int = 0) -> AsyncIterator[Reservation | None]:
        reservation = self._check_and_admit(key, reserve)
        try:
            yield reservation
        finally:
            self._states[key.id].active -= 1

    async def settle(self, key: ApiKey, reservation: Reservation, tokens: int) -> None:
        """Replace the reservation by what the request really used."""
        state = self._state(key.id)
        if state.token_day == reservation.day:
            state.tokens = max(0, state.tokens + tokens - reservation.tokens)
        elif utc_day(self._now()) != reservation.day:
            await self.add_tokens(key, tokens)  # admitted yesterday, answered today

    async def add_tokens(self, key: ApiKey, n: int) -> None:
        if n <= 0:
            return
        state = self._state(key.id)
        self._today(state)
        state.tokens += n

    async def tokens_today(self, key_id: str) -> int:
        state = self._states.get(key_id)
        return state.tokens if state and state.token_day == utc_day(self._now()) else 0
