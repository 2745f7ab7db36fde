"""The in-flight gauge: a plain count kept by the forward stage (no lock per request), exported when
scraped — it says how many requests are being proxied, and nothing is left counted after them."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

from support.gateway import KeySpec, create_keys, start_gateway
from support.servers import running_process

CANNED = Path(__file__).parent / "support" / "canned_upstream.py"


def _in_flight(url: str, token: str) -> float:
    request = urllib.request.Request(f"{url}/-/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:  # loopback
        text = resp.read().decode()
    line = next(x for x in text.splitlines() if x.startswith("ollama_guard_requests_in_flight "))
    return float(line.split()[1])


def test_the_in_flight_gauge_counts_requests_being_proxied(tmp_path: Path) -> None:
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"GET /api/version": {
        "content_type": "application/json", "interval": 1.5, "chunks": ['{"version":', '"0.6.5"}']}}))
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("admin", "admin")])
    with running_process([sys.executable, str(CANNED), str(answers)]) as (_proc, url), \
            start_gateway(tmp_path / "gw", url, db_url=db) as gw:
        assert _in_flight(gw.url, keys["admin"]) == 0

        def slow() -> None:
            request = urllib.request.Request(f"{gw.url}/api/version",
                                             headers={"Authorization": f"Bearer {keys['admin']}"})
            with urllib.request.urlopen(request, timeout=20) as resp:  # loopback
                resp.read()

        threads = [threading.Thread(target=slow) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while _in_flight(gw.url, keys["admin"]) != 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for thread in threads:
            thread.join(20)
        assert _in_flight(gw.url, keys["admin"]) == 0


def test_the_gauge_reads_the_count_when_scraped() -> None:
    from ollama_guard.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    metrics.proxying = 3
    assert b"ollama_guard_requests_in_flight 3.0" in metrics.render()
