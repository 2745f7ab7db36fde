"""The key format and its hashing: ``og_<key id>_<secret>`` and HMAC-SHA256 of ``"<id>:<secret>"``.

``og_`` says what it is (and lets secret scanners find leaked keys), the key id (16 hex digits) is
public and selects the record, the secret is 256 bits from ``secrets`` in base64url (43 characters).
Only HMAC-SHA256(derived server key, "<id>:<secret>") is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

KEY_PREFIX = "og_"
KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_TOKEN_RE = re.compile(r"og_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def parse_token(presented: str) -> tuple[str, str] | None:
    """``og_<id>_<secret>`` → (id, secret); None if it is not in that shape."""
    if not isinstance(presented, str) or len(presented) > 80:
        return None
    match = _TOKEN_RE.fullmatch(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def looks_like_key(text: str) -> bool:
    return parse_token(text) is not None


def hash_secret(hash_key: bytes, key_id: str, secret: str) -> bytes:
    return hmac.new(hash_key, f"{key_id}:{secret}".encode("ascii"), hashlib.sha256).digest()


def secret_hasher(hash_key: bytes) -> Callable[[str, str], bytes]:
    """``hash_secret`` with the HMAC keyed once: each call copies the keyed state instead of keying a
    new HMAC (under OpenSSL 3 keying costs more than hashing: measured 2.8 vs 6.3 µs per key check)."""
    keyed = hmac.new(hash_key, digestmod=hashlib.sha256)

    def digest(key_id: str, secret: str) -> bytes:
        mac = keyed.copy()
        mac.update(f"{key_id}:{secret}".encode("ascii"))
        return mac.digest()

    return digest


def new_secret(hash_key: bytes, key_id: str) -> tuple[str, str]:
    """(token to hand out, hex hash to store) for a fresh secret of ``key_id``."""
    secret = secrets.token_urlsafe(32)
    token = f"{KEY_PREFIX}{key_id}_{secret}"
    return token, hash_secret(hash_key, key_id, secret).hex()


def key_version(secret_hash_hex: str) -> str:
    """A public label of a key's current secret (changes on rotation; reveals nothing of the hash)."""
    return hashlib.sha256(b"ollama-guard key version v1:" + secret_hash_hex.encode()).hexdigest()[:32]
