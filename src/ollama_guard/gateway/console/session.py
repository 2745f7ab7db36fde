"""Console sessions and CSRF tokens: stateless, signed with a key derived from the server secret.

A session cookie names the admin key it was opened with and is bound to that key's stored secret hash,
so revoking *or rotating* the key ends every session opened with it. Nothing in the cookie is secret:
it is ``key_id.expires.nonce.mac`` with ``mac = HMAC(session key, key_id.expires.nonce.secret_hash)``.

CSRF: every state-changing form carries ``HMAC(csrf key, cookie)``; the login form, made before there is
a session, carries ``HMAC(csrf key, pre-session cookie)`` (double submit, signed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from ollama_guard.gateway.secrets import derive_key

PURPOSE_SESSION = b"ollama-guard console session v1"
PURPOSE_CSRF = b"ollama-guard console csrf v1"
SESSION_COOKIE = "og_console"
PRELOGIN_COOKIE = "og_console_pre"
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    expires: int
    cookie: str


class SessionSigner:
    def __init__(self, secret: bytes, *, lifetime: int = SESSION_SECONDS) -> None:
        self._session_key = derive_key(secret, PURPOSE_SESSION)
        self._csrf_key = derive_key(secret, PURPOSE_CSRF)
        self.lifetime = lifetime

    def _mac(self, payload: str, secret_hash: bytes) -> str:
        return hmac.new(self._session_key, payload.encode() + b"." + secret_hash, hashlib.sha256).hexdigest()

    def issue(self, key_id: str, secret_hash: bytes, now: float | None = None) -> Session:
        expires = int(now if now is not None else time.time()) + self.lifetime
        payload = f"{key_id}.{expires}.{secrets.token_hex(8)}"
        cookie = f"{payload}.{self._mac(payload, secret_hash)}"
        return Session(key_id, expires, cookie)

    @staticmethod
    def key_id_of(cookie: str) -> str | None:
        parts = cookie.split(".")
        return parts[0] if len(parts) == 4 and parts[0] else None

    def check(self, cookie: str, secret_hash: bytes, now: float | None = None) -> Session | None:
        """The session if ``cookie`` is well-formed, unexpired and signed for this key's secret hash."""
        parts = cookie.split(".")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        payload = ".".join(parts[:3])
        if not hmac.compare_digest(parts[3], self._mac(payload, secret_hash)):
            return None
        expires = int(parts[1])
        if expires <= (now if now is not None else time.time()):
            return None
        return Session(parts[0], expires, cookie)

    def csrf_token(self, bound_to: str) -> str:
        return hmac.new(self._csrf_key, bound_to.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, bound_to: str, presented: str) -> bool:
        return bool(bound_to) and hmac.compare_digest(self.csrf_token(bound_to), presented)
