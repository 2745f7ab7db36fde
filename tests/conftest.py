"""Shared test set-up: makes `tests/support` importable as `support`, and loads the shared fixtures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# `browser` and `page`: headless Chromium through Playwright (tests/support/browser.py).
pytest_plugins = ["support.browser"]
