"""The console's session, CSRF and login throttle, without a browser."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

from ollama_guard.gateway.console.app import ConsoleApp, ConsoleDeps, Ctx, LoginThrottle
from ollama_guard.gateway.console.session import SESSION_COOKIE, SessionSigner
from ollama_guard.gateway.console.web import Request, Response
from ollama_guard.gateway.keys import ApiKey

SECRET = b"s" * 32
HASH = b"h" * 32


def test_session_is_bound_to_the_key_secret_and_expires() -> None:
    signer = SessionSigner(SECRET, lifetime=60)
    session = signer.issue("abc", HASH, now=1000)
    assert signer.check(session.cookie, HASH, now=1059) is not None
    assert signer.check(session.cookie, HASH, now=1060) is None  # expired
    assert signer.check(session.cookie, b"x" * 32, now=1001) is None  # the key was rotated
    assert SessionSigner(b"t" * 32).check(session.cookie, HASH, now=1001) is None  # another server secret
    key_id, expires, nonce, mac = session.cookie.split(".")
    assert signer.check(f"{key_id}.{int(expires) + 3600}.{nonce}.{mac}", HASH, now=1001) is None
    assert signer.check(f"other.{expires}.{nonce}.{mac}", HASH, now=1001) is None
    for junk in ("", "a.b.c", "a.b.c.d.e", "abc.soon.n.m"):
        assert signer.check(junk, HASH, now=1001) is None


def test_csrf_token_is_bound_and_never_empty() -> None:
    signer = SessionSigner(SECRET)
    token = signer.csrf_token("cookie-1")
    assert signer.csrf_ok("cookie-1", token)
    assert not signer.csrf_ok("cookie-2", token)
    assert not signer.csrf_ok("", signer.csrf_token(""))
    assert not signer.csrf_ok("cookie-1", "")


def test_login_throttle_window_and_memory_bound() -> None:
    throttle = LoginThrottle(limit=3, window=10, max_clients=2)
    for t in (0, 1, 2):
        assert throttle.retry_after("a", now=t) == 0
        throttle.fail("a", now=t)
    assert throttle.retry_after("a", now=3) == 8
    assert throttle.retry_after("a", now=10.5) == 0  # the first failure left the window
    throttle.fail("b", now=11)
    throttle.fail("c", now=11)
    assert len(throttle._failures) == 2


def _key(role: str, key_id: str = "k1") -> ApiKey:
    return ApiKey(key_id, f"name-{role}", role, (), None, None, None, datetime.now(UTC), None, False)


class _Authenticator:
    def __init__(self, key: ApiKey | None) -> None:
        self.key = key

    def usable_entry(self, key_id: str) -> tuple[ApiKey, bytes] | None:
        return (self.key, HASH) if self.key is not None and self.key.id == key_id else None


def _app(key: ApiKey | None) -> ConsoleApp:
    async def nothing() -> dict[str, tuple[bool, str]]:
        return {}

    from sqlalchemy.ext.asyncio import create_async_engine

    return ConsoleApp(
        ConsoleDeps(
            engine=create_async_engine("sqlite+aiosqlite://"),
            secret=SECRET,
            authenticator=_Authenticator(key),
            health=nothing,
            verify=nothing,
        )
    )


def _ctx(cookie: str) -> Ctx:
    request = Request(
        "GET", "keys", {}, {b"cookie": f"{SESSION_COOKIE}={cookie}".encode()}, "127.0.0.1", False
    )
    return Ctx(request, facts=SimpleNamespace(key_id=None, key_name=None, decision="", reason=""))


def test_a_session_of_a_key_that_is_not_admin_opens_nothing() -> None:
    for role, enters in (("admin", True), ("inference", False), ("read", False)):
        app = _app(_key(role))
        ctx = _ctx(app.signer.issue("k1", HASH).cookie)
        app._authenticate(ctx)
        assert (ctx.key is not None) is enters, role
        assert (ctx.csrf != "") is enters
    app = _app(None)  # revoked: no usable entry
    ctx = _ctx(app.signer.issue("k1", HASH).cookie)
    app._authenticate(ctx)
    assert ctx.key is None


def test_cookie_attributes_follow_the_scheme() -> None:
    for secure in (False, True):
        response = Response()
        response.set_cookie("og_console", "v", secure=secure, max_age=60, path="/-/console")
        header = response.headers[0][1].decode()
        assert "HttpOnly" in header and "SameSite=Strict" in header
        assert ("Secure" in header) is secure


def test_login_needs_the_pre_session_token() -> None:
    app = _app(_key("admin"))
    request = Request("POST", "login", {}, {}, "127.0.0.9", False, form={"key": "og_x_y", "csrf": "0" * 64})
    response = asyncio.run(app.try_login(Ctx(request, facts=None)))
    assert response.status == 403 and b"expired" in response.body


def test_failed_and_throttled_logins_count_towards_bans() -> None:
    app = _app(_key("admin"))
    counted: list[str] = []
    app.deps.on_login_failure = counted.append

    class _Nobody:
        async def authenticate(self, presented: str) -> None:
            return None

        def usable_entry(self, key_id: str) -> None:
            return None

    app.deps.authenticator = _Nobody()
    pre = "p" * 32
    for _ in range(7):
        request = Request(
            "POST",
            "login",
            {},
            {b"cookie": f"og_console_pre={pre}".encode()},
            "192.0.2.5",
            False,
            form={"key": "og_0123456789abcdef_x", "csrf": app.signer.csrf_token(pre)},
        )
        asyncio.run(app.try_login(Ctx(request, facts=None)))
    assert counted == ["192.0.2.5"] * 7
