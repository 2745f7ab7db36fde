"""The request-path check (``KeyAuthenticator``): is this presented key a usable key, and whose?

A presented key is hashed as stored (``keys.tokens``) and compared with ``hmac.compare_digest`` against
the in-memory snapshot that ``KeySnapshotPoller`` keeps fresh, so the common case never touches the
database. An unknown key id or a wrong secret triggers at most one coalesced extra poll (rate-limited,
so random keys cannot flood the database), and the result is remembered in a bounded negative cache.
A snapshot too old to trust makes ``authenticate`` raise ``StoreUnavailable`` (fail closed).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from ollama_guard.gateway.keys.model import ApiKey
from ollama_guard.gateway.keys.poller import KeySnapshotPoller
from ollama_guard.gateway.keys.tokens import parse_token, secret_hasher
from ollama_guard.gateway.secrets import PURPOSE_KEY_HASH, derive_key, secret_fingerprint


class NegativeCache:
    """Digests of presented keys known to be bad at a key generation, for ``ttl`` seconds (bounded, LRU)."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        self._entries: OrderedDict[bytes, tuple[int | None, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def known_bad(self, digest: bytes, generation: int | None) -> bool:
        hit = self._entries.get(digest)
        if hit is None:
            return False
        remembered_at, expires = hit
        if remembered_at != generation or time.monotonic() > expires:
            del self._entries[digest]
            return False
        return True

    def remember(self, digest: bytes, generation: int | None) -> None:
        self._entries[digest] = (generation, time.monotonic() + self._ttl)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class KeyAuthenticator:
    """Checks presented keys against an in-memory snapshot kept fresh by a background poller."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: bytes,
        *,
        poll_interval: float = 0.25,
        stale_after: float = 5.0,
        query_timeout: float = 2.0,
        miss_refresh_interval: float = 0.1,
        negative_cache_size: int = 10_000,
        negative_cache_ttl: float = 5.0,
    ) -> None:
        self._hash_key = derive_key(secret, PURPOSE_KEY_HASH)
        self._hash_secret = secret_hasher(self._hash_key)
        self.poller = KeySnapshotPoller(
            engine,
            secret_fingerprint(secret),
            poll_interval=poll_interval,
            stale_after=stale_after,
            query_timeout=query_timeout,
            miss_refresh_interval=miss_refresh_interval,
        )
        self._negative = NegativeCache(negative_cache_size, negative_cache_ttl)

    async def start(self) -> None:
        """Load the keys (GuardError if that fails) and start polling for changes."""
        await self.poller.start()

    async def close(self) -> None:
        await self.poller.close()

    @property
    def fresh(self) -> bool:
        """Whether the key snapshot may be trusted (the store answered within ``stale_after``)."""
        return self.poller.fresh

    def _match(self, key_id: str, digest: bytes) -> ApiKey | None:
        entry = self.poller.snapshot.get(key_id)
        if entry is None or not hmac.compare_digest(entry.secret_hash, digest):
            return None
        return entry.key

    async def authenticate(self, presented: str) -> ApiKey | None:
        """The key's record if ``presented`` is a valid, unexpired, unrevoked key; else None.

        Raises ``StoreUnavailable`` when the key store has been unreadable for too long.
        """
        parsed = parse_token(presented)
        if parsed is None:
            return None
        self.poller.check_fresh()
        key_id, secret = parsed
        digest = self._hash_secret(key_id, secret)
        key = self._match(key_id, digest)
        if key is None:
            if self._negative.known_bad(digest, self.poller.generation):
                return None
            await self.poller.refresh_after_miss()  # a key created or rotated a moment ago elsewhere
            self.poller.check_fresh()
            key = self._match(key_id, digest)
            if key is None:
                self._negative.remember(digest, self.poller.generation)
                return None
        if not key.is_usable():
            return None
        return key

    def usable_entry(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        """The usable key with this id and its stored secret hash, from the snapshot (no I/O)."""
        entry = self.poller.snapshot.get(key_id)
        if entry is None or not entry.key.is_usable():
            return None
        return entry.key, entry.secret_hash

    # introspection (metrics, health) ----------------------------------------------------------------
    @property
    def snapshot_age(self) -> float:
        return self.poller.age

    @property
    def key_count(self) -> int:
        return len(self.poller.snapshot)
