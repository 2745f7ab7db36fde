"""Ban list and automatic bans in isolation: windows, expiry, exemptions, address forms, the store's
incremental refresh, configuration."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.errors import GuardError, InputError
from ollama_guard.gateway.autoban import AutoBan
from ollama_guard.gateway.bans import Ban, BanList, BanStore, canonical, ensure_schema
from ollama_guard.gateway.config import load_config
from ollama_guard.gateway.db import create_engine_for
from ollama_guard.gateway.refusal import Refusal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeBans:
    def __init__(self) -> None:
        self.local: list[str] = []
        self.stored: list[tuple[str, float, str]] = []

    def ban_locally(self, address: str, minutes: float) -> None:
        self.local.append(address)

    @property
    def store(self) -> Any:
        outer = self

        class Store:
            async def add(self, address: str, minutes: float, reason: str, source: str) -> None:
                outer.stored.append((address, minutes, source))

        return Store()

    def submit(self, coro: Any) -> Any:
        import concurrent.futures

        asyncio.run(coro)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future


class Facts:
    def __init__(self, client: str) -> None:
        self.client = client


class Req:
    def __init__(self, client: str) -> None:
        self.facts = Facts(client)
        self.headers = None


def autoban(**settings: Any) -> tuple[AutoBan, FakeBans, Clock]:
    config = load_config(None, {"db": "sqlite:///x.db", "trusted_proxies": ("10.0.0.0/8",), **settings}, {})
    bans, clock = FakeBans(), Clock()
    return AutoBan(config, bans, None, clock=clock), bans, clock  # type: ignore[arg-type]


def test_twenty_failures_within_a_minute_ban_for_fifteen_minutes() -> None:
    ab, bans, clock = autoban()
    for _ in range(19):
        ab.refused(Req("203.0.113.1"), Refusal(401, "x", "no-key"))  # type: ignore[arg-type]
        clock.now += 3
    assert bans.local == []
    ab.refused(Req("203.0.113.1"), Refusal(401, "x", "bad-key"))  # type: ignore[arg-type]
    assert bans.local == ["203.0.113.1"]
    assert bans.stored == [("203.0.113.1", 15.0, "auto")]


def test_failures_spread_beyond_the_window_do_not_ban() -> None:
    ab, bans, clock = autoban()
    for _ in range(60):
        ab.failure("203.0.113.2")
        clock.now += 3.2  # 20 failures take 60.8 s
    assert bans.local == []


@pytest.mark.parametrize("reason", ["role", "model-not-allowed", "rate-limited", "body-too-large",
                                    "client-not-allowed", "upstream-unavailable", "cors-origin"])
def test_other_refusals_never_count(reason: str) -> None:
    ab, bans, _ = autoban(ban_after=1)
    ab.refused(Req("203.0.113.3"), Refusal(403, "x", reason))  # type: ignore[arg-type]
    assert bans.local == []


@pytest.mark.parametrize("reason", ["no-key", "bad-key", "bad-auth-scheme", "conflicting-keys", "revoked-key",
                                    "expired-key", "route-not-allowed"])
def test_auth_failures_count(reason: str) -> None:
    ab, bans, _ = autoban(ban_after=1)
    ab.refused(Req("203.0.113.4"), Refusal(401, "x", reason))  # type: ignore[arg-type]
    assert bans.local == ["203.0.113.4"]


@pytest.mark.parametrize("client", ["127.0.0.1", "::1", "10.1.2.3", "192.0.2.9", "not-an-address", ""])
def test_exempt_addresses_are_never_banned(client: str) -> None:
    ab, bans, _ = autoban(ban_after=1, ban_allowlist=("127.0.0.0/8", "::1/128", "192.0.2.0/24"))
    ab.failure(client)
    assert bans.local == []


def test_disabled_and_tracking_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    ab, bans, _ = autoban(ban_after=0)
    ab.refused(Req("203.0.113.5"), Refusal(401, "x", "no-key"))  # type: ignore[arg-type]
    assert bans.local == [] and not ab._failures
    import ollama_guard.gateway.autoban as module

    monkeypatch.setattr(module, "MAX_TRACKED", 100)
    ab, _, _ = autoban()
    for i in range(500):
        ab.failure(f"198.51.100.{i % 250}" if i < 250 else f"203.0.113.{i % 250}")
    assert len(ab._failures) <= 100


def test_config_validation() -> None:
    with pytest.raises(GuardError, match="ban_after"):
        load_config(None, {"db": "sqlite:///x.db", "ban_after": -1}, {})
    with pytest.raises(GuardError, match="ban_allowlist"):
        load_config(None, {"db": "sqlite:///x.db", "ban_allowlist": ("nonsense",)}, {})
    env = {"OLLAMA_GUARD_BAN_ALLOWLIST": "10.0.0.0/8, ::1/128"}
    config = load_config(None, {"db": "sqlite:///x.db"}, env)
    assert config.ban_allowlist == ("10.0.0.0/8", "::1/128")


@pytest.mark.parametrize(("given", "expected"), [
    ("203.0.113.9", "203.0.113.9"), (" ::ffff:203.0.113.9 ", "203.0.113.9"),
    ("2001:DB8::1", "2001:db8::1"), ("[2001:db8::1]", "2001:db8::1"), ("203.0.113.9/32", "203.0.113.9"),
    ("203.0.113.77/24", "203.0.113.0/24"),
])
def test_canonical_addresses(given: str, expected: str) -> None:
    assert canonical(given) == expected


@pytest.mark.parametrize("bad", ["", "example.com", "203.0.113.300", "::/0", "1.2.3.4:80"])
def test_canonical_refuses(bad: str) -> None:
    with pytest.raises(InputError):
        canonical(bad)


def test_ban_list_lookup_and_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    bans = BanList(None)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    bans._apply([Ban("203.0.113.9", now + timedelta(minutes=1), "", "manual", now),
                 Ban("2001:db8::1", None, "", "manual", now),
                 Ban("198.51.100.0/24", now + timedelta(minutes=1), "", "manual", now),
                 Ban("203.0.113.10", now - timedelta(seconds=1), "", "manual", now)])
    assert bans.is_banned("203.0.113.9")
    assert bans.is_banned("::ffff:203.0.113.9")
    assert bans.is_banned("2001:DB8:0::1")
    assert bans.is_banned("198.51.100.77")
    assert not bans.is_banned("203.0.113.10")  # ended
    assert not bans.is_banned("203.0.113.11") and not bans.is_banned("garbage")
    import ollama_guard.gateway.bans as module

    later = now.timestamp() + 120
    monkeypatch.setattr(module.time, "time", lambda: later)
    assert not bans.is_banned("203.0.113.9") and not bans.is_banned("198.51.100.77")
    assert bans.is_banned("2001:db8::1")  # until removed


def test_store_changes_reach_a_poller_incrementally(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"

    async def scenario() -> None:
        engine = create_engine_for(url)
        try:
            await ensure_schema(engine)
            await ensure_schema(engine)  # idempotent
            store = BanStore(engine)
            listing = BanList(engine, poll_interval=0.05)
            await listing.start()
            try:
                await store.add("203.0.113.1", 10, "a")
                await store.add("203.0.113.2", None, "b")
                await asyncio.sleep(0.3)
                assert listing.is_banned("203.0.113.1") and listing.is_banned("203.0.113.2")
                assert await store.remove("203.0.113.1")
                assert not await store.remove("203.0.113.1")
                await asyncio.sleep(0.3)
                assert not listing.is_banned("203.0.113.1") and listing.is_banned("203.0.113.2")
                await store.add("203.0.113.1", 10, "again")  # re-ban after removal
                await asyncio.sleep(0.3)
                assert listing.is_banned("203.0.113.1")
                assert [b.address for b in await store.list()] == ["203.0.113.2", "203.0.113.1"]
                assert listing.healthy
            finally:
                await listing.close()
        finally:
            await engine.dispose()

    asyncio.run(scenario())
