"""The web console end to end, in a real browser (Playwright driving Debian's Chromium).

A real `ollama-guard serve` in front of a decoy; the pages are used the way an operator uses them and
the results are checked against the gateway itself (a key created in the console works against the
gateway; one revoked there is refused within a second) and against the audit log.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.browser import CHROMIUM, LAUNCH
from support.gateway import Gateway, KeySpec, audit_rows, create_keys, http_bytes, raw_request, start_gateway
from support.servers import DecoyProcess, start_decoy

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed")
SCREENSHOTS = os.environ.get("OLLAMA_GUARD_SCREENSHOTS")  # a directory: save each page at 1280x800


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), seed_models=2) as d:
        yield d


@pytest.fixture(scope="module")
def gw(decoy: DecoyProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("gw")
    db = f"sqlite:///{work / 'guard.db'}"
    env = {"OLLAMA_GUARD_HOME": str(work / "home")}
    os.environ["OLLAMA_GUARD_HOME"] = env["OLLAMA_GUARD_HOME"]  # create_keys reads the same secret
    keys = create_keys(
        db,
        [KeySpec("boss", "admin"), KeySpec("reader", "read", models=["*"]), KeySpec("second-admin", "admin")],
    )
    with start_gateway(work, decoy.url, db_url=db, env=env) as g:
        g.keys = keys
        yield g


@pytest.fixture(scope="module")
def browser(gw: Gateway) -> Iterator[object]:
    """(Made after the gateway: Playwright's sync API keeps an event loop running in this thread.)"""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(**LAUNCH)
        yield b
        b.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.csp_errors = []
    pg.on("console", lambda m: "Content Security Policy" in m.text and pg.csp_errors.append(m.text))
    yield pg
    context.close()


def _console(gw: Gateway) -> str:
    return f"{gw.url}/-/console"


def _login(page: object, gw: Gateway, name: str = "boss") -> None:
    page.goto(_console(gw))  # type: ignore[attr-defined]
    page.fill("[data-test=login-key]", gw.keys[name])  # type: ignore[attr-defined]
    page.click("[data-test=login-submit]")  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


def _gateway_get(gw: Gateway, path: str, token: str) -> int:
    request = urllib.request.Request(f"{gw.url}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _console_records(gw: Gateway, prefix: str, timeout: float = 5.0) -> list[dict[str, object]]:
    """Audit records whose reason starts with ``prefix`` (waiting for the writer's next batch)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in audit_rows(gw.db_url) if str(r["reason"]).startswith(prefix)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _shot(page: object, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"console-{name}.png"), full_page=False)  # type: ignore


def test_read_key_and_wrong_key_cannot_enter(page: object, gw: Gateway) -> None:
    _login(page, gw, "reader")
    assert page.url.endswith("/-/console/login")  # type: ignore[attr-defined]
    assert "Only admin keys" in page.inner_text("[role=alert]")  # type: ignore[attr-defined]
    page.fill("[data-test=login-key]", "og_0000000000000000_nope")  # type: ignore[attr-defined]
    page.click("[data-test=login-submit]")  # type: ignore[attr-defined]
    assert "not valid" in page.inner_text("[role=alert]")  # type: ignore[attr-defined]
    assert not [c for c in page.context.cookies() if c["name"] == "og_console"]  # type: ignore[attr-defined]
    page.goto(f"{_console(gw)}/keys")  # type: ignore[attr-defined]
    assert page.url.endswith("/-/console/login")  # type: ignore[attr-defined]
    _shot(page, "login")


def test_admin_sees_every_key_and_the_usage_chart(page: object, gw: Gateway) -> None:
    assert _gateway_get(gw, "/api/tags", gw.keys["reader"]) == 200
    _login(page, gw)
    assert page.url.rstrip("/").endswith("/-/console")  # type: ignore[attr-defined]
    chart = page.locator("[data-test=usage-chart] svg")  # type: ignore[attr-defined]
    assert chart.count() == 1 and chart.locator("rect.bar-ok").count() >= 24
    heights = [
        float(h)
        for h in chart.locator("rect.bar-ok").evaluate_all("els => els.map(e => e.getAttribute('height'))")
    ]
    assert max(heights) > 0  # the requests just made are drawn
    tiles = page.locator(".tile").all_inner_texts()  # type: ignore[attr-defined]
    assert any("Upstream" in t and "Ollama" in t for t in tiles)
    _shot(page, "overview")
    page.goto(f"{_console(gw)}/keys")  # type: ignore[attr-defined]
    rows = page.locator("[data-test=key-row]").all_inner_texts()  # type: ignore[attr-defined]
    for name in ("boss", "reader", "second-admin"):
        assert any(name in r for r in rows), rows
    html = page.content()  # type: ignore[attr-defined]
    for token in gw.keys.values():  # no secret of an existing key is ever rendered
        assert token.split("_", 2)[2] not in html
    assert page.csp_errors == []  # type: ignore[attr-defined]
    _shot(page, "keys")


def test_create_use_reload_revoke(page: object, gw: Gateway) -> None:
    _login(page, gw)
    page.goto(f"{_console(gw)}/keys")  # type: ignore[attr-defined]
    page.fill("[data-test=create-key-name]", "ci-bot")  # type: ignore[attr-defined]
    page.select_option("[data-test=create-key-role]", "inference")  # type: ignore[attr-defined]
    page.fill("[data-test=create-key-models]", "*")  # type: ignore[attr-defined]
    page.click("[data-test=create-key-submit]")  # type: ignore[attr-defined]
    secret = page.inner_text("[data-test=new-secret]").strip()  # type: ignore[attr-defined]
    assert re.fullmatch(r"og_[0-9a-f]{16}_\S+", secret), secret
    _shot(page, "key-created")
    assert _gateway_get(gw, "/api/tags", secret) == 200
    page.goto(f"{_console(gw)}/keys")  # type: ignore[attr-defined]
    assert page.locator("[data-test=new-secret]").count() == 0  # type: ignore[attr-defined]
    assert secret not in page.content()  # type: ignore[attr-defined]
    row = page.locator("[data-test=key-row]", has_text="ci-bot")  # type: ignore[attr-defined]
    page.once("dialog", lambda d: d.accept())  # type: ignore[attr-defined]
    row.locator("[data-test=revoke]").click()
    page.wait_for_load_state()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 1.5
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = _gateway_get(gw, "/api/tags", secret)
        time.sleep(0.05)
    assert status == 401
    assert [r["key_name"] for r in _console_records(gw, "console:create-key ci-bot")] == ["boss"]
    assert [r["key_name"] for r in _console_records(gw, "console:revoke-key ci-bot")] == ["boss"]
    assert not any(secret in str(r) for r in audit_rows(gw.db_url))


def test_dismissed_confirmation_revokes_nothing(page: object, gw: Gateway) -> None:
    _login(page, gw)
    page.goto(f"{_console(gw)}/keys")  # type: ignore[attr-defined]
    row = page.locator("[data-test=key-row]", has_text="reader")  # type: ignore[attr-defined]
    page.once("dialog", lambda d: d.dismiss())  # type: ignore[attr-defined]
    row.locator("[data-test=revoke]").click()
    time.sleep(0.3)
    assert _gateway_get(gw, "/api/tags", gw.keys["reader"]) == 200


def test_audit_rows_and_live_tail(page: object, gw: Gateway) -> None:
    assert _gateway_get(gw, "/api/version", gw.keys["reader"]) == 200
    _login(page, gw)
    page.goto(f"{_console(gw)}/audit")  # type: ignore[attr-defined]
    rows = page.locator("[data-test=audit-row]")  # type: ignore[attr-defined]
    assert any("/api/version" in t for t in rows.all_inner_texts())
    before = rows.count()
    assert _gateway_get(gw, "/api/ps", gw.keys["reader"]) == 200  # made while the page is open
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('[data-test=audit-row]')]"
        ".some(r => r.innerText.includes('/api/ps'))",
        timeout=5000,
    )
    assert rows.count() > before
    page.click("[data-test=verify-chain]")  # type: ignore[attr-defined]
    assert "intact" in page.inner_text("[data-test=verify-result]")  # type: ignore[attr-defined]
    _shot(page, "audit")
    page.goto(f"{_console(gw)}/audit?decision=deny&path=/api/")  # type: ignore[attr-defined]
    for text in page.locator("[data-test=audit-row]").all_inner_texts():  # type: ignore[attr-defined]
        assert "deny" in text and "/api/" in text


def test_security_headers_and_cookie(gw: Gateway) -> None:
    response = raw_request(gw.host, gw.port, http_bytes("GET", "/-/console/login"))
    assert response.status == 200
    h = response.headers
    assert "default-src 'self'" in h["content-security-policy"]
    assert "unsafe-inline" not in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY" and h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "no-store"
    body = response.body.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", body)  # no inline script
    assert not re.search(r"\son[a-z]+=", body) and " style=" not in body


def _session(gw: Gateway, name: str = "boss") -> tuple[str, str]:
    """Log in with raw requests; (session cookie, csrf token of the keys page)."""
    page = raw_request(gw.host, gw.port, http_bytes("GET", "/-/console/login"))
    pre = re.search(r"og_console_pre=([0-9a-f]+)", page.headers["set-cookie"]).group(1)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.body.decode()).group(1)
    form = f"csrf={csrf}&key={gw.keys[name]}"
    conn = http.client.HTTPConnection(gw.host, gw.port, timeout=10)
    conn.request(
        "POST",
        "/-/console/login",
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"og_console_pre={pre}"},
    )
    done = conn.getresponse()
    done.read()
    conn.close()
    assert done.status == 303, done.status
    cookies = [v for k, v in done.getheaders() if k.lower() == "set-cookie"]
    session_cookie = next(c for c in cookies if c.startswith("og_console="))
    for attribute in ("HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/-/console"):
        assert attribute in session_cookie
    assert "Secure" not in session_cookie  # plain HTTP here; under TLS the cookie is Secure
    session = session_cookie.split(";")[0].split("=", 1)[1]
    keys = raw_request(
        gw.host, gw.port, http_bytes("GET", "/-/console/keys", headers={"Cookie": f"og_console={session}"})
    )
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', keys.body.decode()).group(1)
    return session, token


def _post(gw: Gateway, path: str, body: str, session: str) -> object:
    return raw_request(
        gw.host,
        gw.port,
        http_bytes(
            "POST",
            path,
            body=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"og_console={session}"},
        ),
    )


def test_forged_posts_are_refused(gw: Gateway) -> None:
    session, csrf = _session(gw)
    for body in (
        "name=forged&role=admin&models=*",
        "csrf=&name=forged&role=admin&models=*",
        f"csrf={csrf[:-1]}{'1' if csrf[-1] == '0' else '0'}&name=forged&role=admin&models=*",
    ):
        assert _post(gw, "/-/console/keys/create", body, session).status == 403
    other_session, _ = _session(gw, "second-admin")  # a token is bound to its own session
    assert (
        _post(
            gw, "/-/console/keys/create", f"csrf={csrf}&name=forged&role=admin&models=*", other_session
        ).status
        == 403
    )
    assert "forged" not in _post(gw, "/-/console/keys/create", "", session).body.decode()
    ok = _post(gw, "/-/console/keys/create", f"csrf={csrf}&name=real&role=read&models=llama3*", session)
    assert ok.status == 200 and b'data-test="new-secret"' in ok.body
    empty = _post(gw, "/-/console/keys/create", f"csrf={csrf}&name=wide&role=read&models=", session)
    assert empty.status == 400  # an empty model list never means "all models"


def test_rotating_the_admin_key_ends_its_sessions(gw: Gateway) -> None:
    session, csrf = _session(gw, "second-admin")
    page = raw_request(
        gw.host, gw.port, http_bytes("GET", "/-/console/keys", headers={"Cookie": f"og_console={session}"})
    )
    key_id = re.search(
        r'data-key-id="([0-9a-f]+)"[^>]*>\s*<td><strong>second-admin', page.body.decode()
    ).group(1)
    version = re.search(
        rf'keys/{key_id}/rotate".*?name="version" value="([0-9a-f]+)"', page.body.decode(), re.S
    ).group(1)
    rotated = _post(gw, f"/-/console/keys/{key_id}/rotate", f"csrf={csrf}&version={version}", session)
    assert rotated.status == 200 and b'data-test="new-secret"' in rotated.body
    again = _post(gw, f"/-/console/keys/{key_id}/rotate", f"csrf={csrf}&version={version}", session)
    assert b'data-test="new-secret"' not in again.body  # the same form sent twice rotates once
    time.sleep(0.6)  # the key snapshot refreshes within about a second
    after = raw_request(
        gw.host, gw.port, http_bytes("GET", "/-/console/keys", headers={"Cookie": f"og_console={session}"})
    )
    assert after.status == 303 and after.headers["location"].endswith("/login")


def test_failed_logins_are_throttled(gw: Gateway) -> None:
    statuses = []
    for _ in range(7):
        page = raw_request(
            gw.host, gw.port, http_bytes("GET", "/-/console/login", headers={"X-Forwarded-For": "1"})
        )
        pre = re.search(r"og_console_pre=([0-9a-f]+)", page.headers["set-cookie"]).group(1)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.body.decode()).group(1)
        done = raw_request(
            gw.host,
            gw.port,
            http_bytes(
                "POST",
                "/-/console/login",
                body=f"csrf={csrf}&key=og_0123456789abcdef_wrong".encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": f"og_console_pre={pre}",
                },
            ),
            source="127.0.0.77",
        )
        statuses.append(done.status)
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
    assert all(r["key_id"] is None for r in audit_rows(gw.db_url) if r["client"] == "127.0.0.77")


def test_a_damaged_key_is_repaired_from_the_keys_page(gw: Gateway) -> None:
    import sqlite3

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # (Playwright's loop runs in this thread)
        token = pool.submit(create_keys, gw.db_url, [KeySpec("legacy", "read", models=["*"])]).result()[
            "legacy"
        ]
    path = gw.db_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:  # what keys made before empty model lists were refused look like
        conn.execute("UPDATE og_api_keys SET models = '[]' WHERE name = 'legacy'")
        conn.execute("UPDATE og_state SET key_generation = key_generation + 1")
    time.sleep(0.6)
    assert _gateway_get(gw, "/api/tags", token) == 401
    session, csrf = _session(gw)
    page = raw_request(
        gw.host, gw.port, http_bytes("GET", "/-/console/keys", headers={"Cookie": f"og_console={session}"})
    )
    key_id = re.search(r'data-key-id="([0-9a-f]+)"[^>]*>\s*<td><strong>legacy', page.body.decode()).group(1)
    assert "Repair" in page.body.decode()
    repaired = _post(gw, f"/-/console/keys/{key_id}/edit", f"csrf={csrf}&models=llama3*", session)
    assert repaired.status == 200
    deadline = time.monotonic() + 2
    while _gateway_get(gw, "/api/tags", token) != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_ban_added_and_lifted_in_the_console_reaches_the_gateway(page: object, gw: Gateway) -> None:
    def tags_from(source: str) -> int:
        return raw_request(
            gw.host, gw.port, http_bytes("GET", "/api/tags", headers=gw.auth("reader")), source=source
        ).status

    assert tags_from("127.0.0.66") == 200
    _login(page, gw)
    page.goto(f"{_console(gw)}/bans")  # type: ignore[attr-defined]
    page.fill("[data-test=ban-address]", "127.0.0.66")  # type: ignore[attr-defined]
    page.fill("[data-test=ban-minutes]", "30")  # type: ignore[attr-defined]
    page.fill("[data-test=ban-reason]", "probing <script>alert(1)</script>")  # type: ignore[attr-defined]
    page.click("[data-test=ban-submit]")  # type: ignore[attr-defined]
    row = page.locator("[data-test=ban-row]", has_text="127.0.0.66")  # type: ignore[attr-defined]
    assert row.count() == 1 and "<script>" in row.inner_text()  # shown as text, never run
    deadline = time.monotonic() + 1.5
    while tags_from("127.0.0.66") != 403:
        assert time.monotonic() < deadline, "the ban did not reach the gateway within a second"
        time.sleep(0.05)
    assert tags_from("127.0.0.67") == 200
    _shot(page, "bans")
    page.once("dialog", lambda d: d.accept())  # type: ignore[attr-defined]
    row.locator("[data-test=lift-ban]").click()
    page.wait_for_load_state()  # type: ignore[attr-defined]
    deadline = time.monotonic() + 1.5
    while tags_from("127.0.0.66") != 200:
        assert time.monotonic() < deadline, "the lifted ban still holds after a second"
        time.sleep(0.05)
    assert [r["key_name"] for r in _console_records(gw, "console:ban-add 127.0.0.66")] == ["boss"]
    assert [r["key_name"] for r in _console_records(gw, "console:ban-lift 127.0.0.66")] == ["boss"]


def test_latest_alerts_recorded_by_watch_are_on_the_overview(page: object, gw: Gateway) -> None:
    import asyncio

    from ollama_guard.gateway.alerts import AlertStore
    from ollama_guard.gateway.db import create_engine_for

    alert = {
        "rule": "admin-from-remote",
        "severity": "high",
        "target": "ollama.log",
        "count": 3,
        "title": "<img src=x onerror=alert(1)>",
        "source": "ollama.log",
        "alert": "escalation",
        "first_seen": "2026-12-07T10:00:00Z",
        "last_seen": "2026-12-07T10:05:00Z",
        "evidence": {"client": "203.0.113.9"},
    }

    async def record() -> None:
        engine = create_engine_for(gw.db_url)
        try:
            await AlertStore(engine).record(alert)
        finally:
            await engine.dispose()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # (Playwright's loop runs in this thread)
        pool.submit(asyncio.run, record()).result()
    _login(page, gw)
    rows = page.locator("[data-test=alert-row]")  # type: ignore[attr-defined]
    assert rows.count() == 1
    text = rows.first.inner_text()
    assert "admin-from-remote" in text and "203.0.113.9" in text and "escalation" in text
    assert page.locator("img").count() == 0  # type: ignore[attr-defined]  (hostile title stays text)


def test_aggregated_refusals_count_as_every_request_they_stand_for(gw: Gateway) -> None:
    for _ in range(30):  # keyless: refusals of one client for one reason are aggregated into few rows
        assert (
            raw_request(gw.host, gw.port, http_bytes("GET", "/api/tags"), source="127.0.0.55").status == 401
        )
    session, _ = _session(gw)
    deadline = time.monotonic() + 8
    while True:
        page = raw_request(
            gw.host, gw.port, http_bytes("GET", "/-/console", headers={"Cookie": f"og_console={session}"})
        )
        row = re.search(r"127\.0\.0\.55</a></td><td class=\"num\">([0-9,]+)</td>", page.body.decode())
        if row and row.group(1) == "30":
            break
        assert time.monotonic() < deadline, row.group(1) if row else "client not listed"
        time.sleep(0.25)
    audit = raw_request(
        gw.host,
        gw.port,
        http_bytes("GET", "/-/console/audit?client=127.0.0.55", headers={"Cookie": f"og_console={session}"}),
    ).body.decode()
    shown = [int(n) for n in re.findall(r"×(\d+)", audit)]
    rows = audit.count('data-test="audit-row"')
    assert sum(shown) + (rows - len(shown)) == 30 and rows < 30  # fewer rows than requests, none lost
