"""Shared test set-up: makes `tests/support` importable as `support`, and loads the shared fixtures."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# gateways started by tests stop at once on SIGTERM (no drain window for a load balancer to notice)
os.environ.setdefault("OLLAMA_GUARD_SHUTDOWN_DELAY", "0")

# `browser` and `page`: headless Chromium through Playwright (tests/support/browser.py).
pytest_plugins = ["support.browser"]


@pytest.fixture
def scan_as_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Judge scanned loopback targets as if reached over the network.

    Tests may only scan 127.x, where a loopback-only service is (rightly) reported as reachable from
    this host alone; tests about what a scan of an exposed server reports use this (in-process scans).
    """
    from ollama_guard.scan import findings
    from ollama_guard.scan.locality import Locality

    monkeypatch.setattr(findings, "locality_of", lambda host, port: Locality(loopback_target=False))
