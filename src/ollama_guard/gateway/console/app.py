"""The console: the gateway's web page for the people who run it, served under ``/-/console``.

Only admin keys enter. A login form takes the key once and sets a signed session cookie (HttpOnly,
SameSite=Strict, Secure under TLS, expiring, bound to the key's current secret so revoking or rotating
the key ends it). Every state-changing form carries a CSRF token; logins are rate-limited per client
address and each failure is reported to the gateway (it counts towards bans). Each request is one audit
record naming the admin key (the gateway writes it from the facts this module fills in).

Pages live in ``pages_*.py``; this module routes, authenticates and renders.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import jinja2

from ollama_guard.gateway.console.session import PRELOGIN_COOKIE, SESSION_COOKIE, SessionSigner
from ollama_guard.gateway.console.web import (
    FormError,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    build_request,
    read_form,
    redirect,
    send_response,
)
from ollama_guard.gateway.keys import ApiKey, KeyStore

log = logging.getLogger("ollama_guard.gateway.console")

PREFIX = "/-/console"
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_SECONDS = 300.0
_STATIC = {"console.css": b"text/css; charset=utf-8", "console.js": b"text/javascript; charset=utf-8"}

HealthProbe = Callable[[], Awaitable[dict[str, tuple[bool, str]]]]


@dataclass
class ConsoleDeps:
    """What the console needs from the gateway, handed over once at start."""

    engine: Any
    secret: bytes
    authenticator: Any  # KeyAuthenticator: authenticate(token), usable_entry(key_id)
    health: HealthProbe
    verify: Callable[[], Awaitable[Any]]  # → a result with .intact and .summary()
    bans: Any = None  # gateway.bans store (list/add/remove), when the gateway has one
    on_login_failure: Callable[[str], None] | None = None
    alerts: Callable[[int], Awaitable[list[dict[str, Any]]]] | None = None


@dataclass
class Ctx:
    """One console request: who asked, and how to answer."""

    request: Request
    key: ApiKey | None = None
    csrf: str = ""
    facts: Any = None
    notes: list[str] = field(default_factory=list)

    def audit(self, action: str, decision: str = "allow") -> None:
        """Name what this request did in its audit record."""
        if self.facts is not None:
            self.facts.decision = decision
            self.facts.reason = f"console:{action}"[:200]


class LoginThrottle:
    """At most LOGIN_FAILURES_ALLOWED failed logins per client address per window (bounded memory)."""

    def __init__(
        self,
        limit: int = LOGIN_FAILURES_ALLOWED,
        window: float = LOGIN_WINDOW_SECONDS,
        max_clients: int = 10_000,
    ) -> None:
        self._limit, self._window, self._max = limit, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and now - times[0] > self._window:
            times.popleft()
        return times

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until this client may try again (0: now)."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if len(times) < self._limit:
            return 0
        return max(1, int(self._window - (now - times[0])) + 1)

    def fail(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        times.append(now)
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ollama_guard.gateway.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["prefix"] = PREFIX
    return env


class ConsoleApp:
    def __init__(self, deps: ConsoleDeps) -> None:
        self.deps = deps
        self.signer = SessionSigner(deps.secret)
        self.keys = KeyStore(deps.engine, deps.secret)
        self.throttle = LoginThrottle()
        self.env = _environment()
        self._static = {
            name: files("ollama_guard.gateway.console").joinpath("static", name).read_bytes()
            for name in _STATIC
        }
        self._asset_version = hashlib.sha256(b"".join(self._static.values())).hexdigest()[:12]
        from ollama_guard.gateway.console import pages

        self._routes = pages.routes()

    def render(self, ctx: Ctx, template: str, status: int = 200, **values: Any) -> Response:
        html = self.env.get_template(template).render(
            key=ctx.key,
            csrf=ctx.csrf,
            notes=ctx.notes,
            page=template.split(".")[0],
            asset_version=self._asset_version,
            **values,
        )
        return Response(status, html.encode("utf-8"))

    # --- entry ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send, facts: Any) -> None:
        facts.route = "console"
        request = build_request(scope, PREFIX, facts.client)
        ctx = Ctx(request, facts=facts)
        try:
            response = await self._dispatch(ctx, receive, send)
        except Exception:
            if facts.started_response:
                raise
            log.exception("console request %s failed", facts.request_id)
            ctx.audit("internal-error", "deny")
            response = Response(
                500,
                b"The console could not answer; the gateway log has the details.",
                b"text/plain; charset=utf-8",
            )
        if response is None:  # a streamed answer was sent by the page itself
            return
        facts.status = response.status
        facts.started_response = True
        facts.bytes_out = await send_response(send, response, facts.request_id)

    async def _dispatch(self, ctx: Ctx, receive: Receive, send: Send) -> Response | None:
        request = ctx.request
        if request.path.startswith("static/") and request.method in ("GET", "HEAD"):
            name = request.path.removeprefix("static/")
            if name in self._static:
                ctx.audit("static")
                return Response(
                    200,
                    self._static[name],
                    _STATIC[name],
                    headers=[(b"cache-control", b"private, max-age=86400, immutable")],
                )
            return self._not_found(ctx)
        handler = self._routes.get((request.method, self._route_name(request.path)))
        if handler is None:
            return self._not_found(ctx)
        public = handler.__name__ in ("login_page", "login")
        if not public:
            self._authenticate(ctx)
            if ctx.key is None:
                ctx.audit("no-session", "deny")
                return redirect(f"{PREFIX}/login")
        if request.method == "POST":
            try:
                await read_form(request, receive)
            except FormError as exc:
                ctx.audit("bad-form", "deny")
                return Response(400, str(exc).encode(), b"text/plain; charset=utf-8")
            if not public and not self.signer.csrf_ok(
                request.cookies.get(SESSION_COOKIE, ""), request.form.get("csrf", "")
            ):
                ctx.audit("csrf-refused", "deny")
                return Response(403, b"missing or invalid CSRF token", b"text/plain; charset=utf-8")
        return await handler(self, ctx, send, receive)

    @staticmethod
    def _route_name(path: str) -> str:
        """``keys/<id>/revoke`` → ``keys/*/revoke``: ids never choose the handler."""
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "keys":
            return f"keys/*/{parts[2]}"
        return path

    def _not_found(self, ctx: Ctx) -> Response:
        ctx.audit("not-found", "deny")
        return Response(404, b"not found", b"text/plain; charset=utf-8")

    def _authenticate(self, ctx: Ctx) -> None:
        cookie = ctx.request.cookies.get(SESSION_COOKIE, "")
        key_id = self.signer.key_id_of(cookie)
        if key_id is None:
            return
        entry = self.deps.authenticator.usable_entry(key_id)
        if entry is None:
            return
        key, secret_hash = entry
        if key.role != "admin" or self.signer.check(cookie, secret_hash) is None:
            return
        ctx.key = key
        ctx.csrf = self.signer.csrf_token(cookie)
        if ctx.facts is not None:
            ctx.facts.key_id, ctx.facts.key_name = key.id, key.name

    # --- login --------------------------------------------------------------------------------------
    def _count_failure(self, client: str) -> None:
        """Tell the gateway's automatic bans about a failed login (as about any bad API key)."""
        if self.deps.on_login_failure is not None:
            self.deps.on_login_failure(client)

    def login_form(self, ctx: Ctx, status: int = 200, error: str = "") -> Response:
        import secrets as _secrets

        pre = ctx.request.cookies.get(PRELOGIN_COOKIE) or _secrets.token_hex(16)
        response = self.render(
            ctx, "login.html.j2", status, error=error, login_csrf=self.signer.csrf_token(pre)
        )
        response.set_cookie(PRELOGIN_COOKIE, pre, secure=ctx.request.secure, max_age=3600, path=PREFIX)
        return response

    async def try_login(self, ctx: Ctx) -> Response:
        request = ctx.request
        wait = self.throttle.retry_after(request.client)
        if wait:
            self._count_failure(request.client)  # hammering on after 429 counts towards a ban too
            ctx.audit("login-throttled", "deny")
            response = self.login_form(ctx, 429, f"Too many failed logins. Try again in {wait} s.")
            response.headers.append((b"retry-after", str(wait).encode()))
            return response
        if not self.signer.csrf_ok(request.cookies.get(PRELOGIN_COOKIE, ""), request.form.get("csrf", "")):
            ctx.audit("login-csrf-refused", "deny")
            return self.login_form(ctx, 403, "The login form expired. Please try again.")
        presented = request.form.get("key", "").strip()
        key = await self.deps.authenticator.authenticate(presented) if presented else None
        if key is None or key.role != "admin":
            self.throttle.fail(request.client)
            self._count_failure(request.client)
            if key is not None and ctx.facts is not None:
                ctx.facts.key_id, ctx.facts.key_name = key.id, key.name
            ctx.audit("login-refused" if key is None else "login-not-admin", "deny")
            message = "That key is not valid." if key is None else "Only admin keys may use the console."
            return self.login_form(ctx, 403 if key is not None else 401, message)
        entry = self.deps.authenticator.usable_entry(key.id)
        if entry is None:  # revoked between the two looks
            ctx.audit("login-refused", "deny")
            return self.login_form(ctx, 401, "That key is not valid.")
        session = self.signer.issue(key.id, entry[1])
        if ctx.facts is not None:
            ctx.facts.key_id, ctx.facts.key_name = key.id, key.name
        ctx.audit("login")
        response = redirect(PREFIX)
        response.set_cookie(
            SESSION_COOKIE, session.cookie, secure=request.secure, max_age=self.signer.lifetime, path=PREFIX
        )
        response.clear_cookie(PRELOGIN_COOKIE, path=PREFIX)
        return response
