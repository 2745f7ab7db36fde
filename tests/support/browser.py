"""Headless Chromium for tests that look at a page the way a person does (reports, the console).

One pytest plugin, loaded by tests/conftest.py, so every test module can ask for:

* ``browser`` — a Playwright ``Browser`` (Debian's /usr/bin/chromium, no browser download), one per test
  module (Playwright's sync API runs its own event loop: it is started and stopped around each module, so
  async tests elsewhere are never run inside it);
* ``page`` — a fresh page in its own context (1280×900, no shared cookies), closed after the test; any
  JavaScript dialog it opens fails the test, and console errors are collected in ``page.errors``.

Tests are skipped (with the reason) only when /usr/bin/chromium is missing. Async tests can launch the same
browser with ``async_playwright().start()`` and ``**LAUNCH``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = os.environ.get("OLLAMA_GUARD_TEST_CHROMIUM", "/usr/bin/chromium")
LAUNCH: dict[str, Any] = {"executable_path": CHROMIUM, "args": ["--no-sandbox"]}
VIEWPORT = {"width": 1280, "height": 900}


def _require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (Debian package 'chromium'; .ci/run installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**LAUNCH)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    tab.errors = errors
    try:
        yield tab
    finally:
        context.close()
    assert not dialogs, f"the page opened a JavaScript dialog (a script ran): {dialogs}"
