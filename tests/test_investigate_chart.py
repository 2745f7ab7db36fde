"""The incident timeline chart (SVG drawn by investigate/chart.py): well-formed whatever the log holds,
counts that add up, and — in headless Chromium — drawn in the HTML report and as a standalone file, with
each attack window on its client's row at its time.

Set OLLAMA_GUARD_SCREENSHOTS=1 to (re)write docs/img/report-investigate-timeline.png.
"""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.investigate.chart import ROW, TOP, Marker, Row, Window, timeline_svg
from support.cli import run_cli
from test_investigate_gen import config_line, gin

SVG = "{http://www.w3.org/2000/svg}"
DOCS_IMG = Path(__file__).parent.parent / "docs" / "img"
T = datetime(2025, 3, 2, 13, 0, 0)
SCANNER, THIEF, LAN = "203.0.113.7", "198.51.100.23", "192.168.1.30"
HOSTILE = "<script>alert(1)</script>\x00\"'&"


def _minute(t: datetime) -> int:
    return int(t.replace(tzinfo=UTC).timestamp()) // 60


def test_hostile_client_strings_stay_text_in_well_formed_svg() -> None:
    t = T.replace(tzinfo=UTC)
    rows = [Row(HOSTILE, "unknown", {_minute(T): 3},
                [Window("recon-burst", "medium", t, t + timedelta(minutes=2))])]
    svg = timeline_svg(rows, [Marker("server-crash", "high", t, f"panic {HOSTILE}")], standalone=True)
    root = ET.fromstring(svg.encode())  # XML parsers refuse control characters: none may be left
    assert root.tag == f"{SVG}svg"
    assert not root.findall(f".//{SVG}script") and "<script>" not in svg
    (row,) = root.findall(f".//{SVG}g[@class='client-row']")
    assert row.get("data-client") == "<script>alert(1)</script>\\x00\"'&"
    label = "".join(row.find(f"{SVG}text[@class='client-label']").itertext())
    assert label.startswith("<script>alert(1)</scrip")  # shown as text (cut to the label width)


def test_nothing_to_draw() -> None:
    assert timeline_svg([], []) == ""
    assert timeline_svg([Row("10.0.0.1", "private", {})], []) == ""


def test_bars_add_up_to_the_requests_and_bins_fit() -> None:
    base = _minute(T)
    hist = {base + i: (i % 7) + 1 for i in range(0, 3 * 24 * 60, 13)}  # three days, every 13 minutes
    svg = timeline_svg([Row("127.0.0.1", "loopback", hist)], [])
    root = ET.fromstring(svg.encode())
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    counts = [int(re.search(r": (\d+) request", b.find(f"{SVG}title").text).group(1)) for b in bars]
    assert sum(counts) == sum(hist.values())
    assert len(bars) <= 120  # bins widen with the time span
    for bar in bars:  # inside its row, tallest for the busiest bin
        y, h = float(bar.get("y")), float(bar.get("height"))
        assert TOP <= y and y + h <= TOP + ROW and h > 0
    assert max(float(b.get("height")) for b in bars) == pytest.approx(ROW - 6)
    assert "per 1 h" in root.get("aria-label")


def _scenario(tmp_path: Path) -> Path:
    lines = [config_line(T, "0.0.0.0:11434")]
    t = T
    for i in range(3 * 60):  # the owner, every minute for three hours; a LAN user now and then
        lines.append(gin(t + timedelta(minutes=i), "127.0.0.1", "POST", "/api/chat", 200, "2.1s"))
        if i % 9 == 0:
            lines.append(gin(t + timedelta(minutes=i, seconds=5), LAN, "GET", "/api/tags"))
    scan = T + timedelta(minutes=20)
    lines += [gin(scan + timedelta(seconds=s), SCANNER, "GET", p)
              for s, p in enumerate(["/", "/api/version", "/api/tags", "/api/ps"])]
    steal = T + timedelta(minutes=95)
    lines += [gin(steal, THIEF, "POST", "/api/blobs/sha256:" + "ab" * 32),
              gin(steal + timedelta(minutes=1), THIEF, "POST", "/api/create"),
              gin(steal + timedelta(minutes=9), THIEF, "POST", "/api/push")]
    lines.append(gin(T + timedelta(minutes=150), "127.0.0.1", "GET", "/api/ps"))
    lines.sort(key=lambda line: line[6:27] if line.startswith("[GIN]") else "")
    lines += ["panic: runtime error: index out of range [3] with length 3", "", "goroutine 7 [running]:",
              gin(T + timedelta(minutes=160), "127.0.0.1", "GET", "/api/ps")]
    path = tmp_path / "server.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def incident(tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    log = _scenario(tmp_path)
    html, svg = tmp_path / "incident.html", tmp_path / "timeline.svg"
    monkeypatch.setattr(sys, "orig_argv", ["/usr/local/bin/ollama-guard", "investigate", str(log), "-o",
                                           str(html), "--timeline-svg", str(svg)])  # as a user types it
    code, _, err = run_cli(capsys, "investigate", str(log), "--fail-on", "never", "-o", str(html),
                           "--timeline-svg", str(svg))
    assert code == 0, err
    return {"html": html, "svg": svg}


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box


def test_timeline_chart_in_the_html_report(page: Any, incident: dict[str, Path]) -> None:
    page.goto(incident["html"].as_uri())
    chart = page.locator("section:has(h2:text('Timeline per client')) svg.timeline-chart")
    assert chart.count() == 1 and chart.is_visible()
    frame = chart.bounding_box()
    assert frame is not None and frame["width"] > 600
    rows = page.locator("svg.timeline-chart g.client-row")
    clients = [rows.nth(i).get_attribute("data-client") for i in range(rows.count())]
    assert clients[:2] == [SCANNER, THIEF]  # attacked first, by the time of their first attack
    assert set(clients) == {SCANNER, THIEF, "127.0.0.1", LAN}
    # every request finding has its window, on its client's row, at its time
    windows = {}
    for client in (SCANNER, THIEF):
        row = f"svg.timeline-chart g.client-row[data-client='{client}']"
        label = _box(page, f"{row} text.client-label")
        for rule_box in page.locator(f"{row} rect.attack-window").all():
            box = rule_box.bounding_box()
            assert box is not None and box["width"] >= 2
            assert box["y"] - 4 <= label["y"] <= box["y"] + box["height"]  # the row of its client
            windows[(client, rule_box.get_attribute("data-rule"))] = box
    expected = {(SCANNER, "recon-burst"), (THIEF, "exfiltration-chain"), (THIEF, "admin-from-remote")}
    assert expected <= set(windows)
    scan, chain = windows[(SCANNER, "recon-burst")], windows[(THIEF, "exfiltration-chain")]
    assert scan["x"] < chain["x"]
    # x follows time: the chain began 75 minutes after the scan and lasted 9
    owner = page.locator("svg.timeline-chart g.client-row[data-client='127.0.0.1'] rect.bar")
    first_bar = owner.first.bounding_box()  # 13:00
    later_bar = page.locator("svg.timeline-chart g.client-row[data-client='127.0.0.1'] "
                             "rect.bar:has(title:text('from 03-02 15:30'))").bounding_box()
    per_minute = (later_bar["x"] - first_bar["x"]) / 150
    assert abs((chain["x"] - scan["x"]) - 75 * per_minute) <= 2.5 * per_minute + 3
    assert abs(chain["width"] - 10 * per_minute) <= 2.5 * per_minute + 3
    assert owner.count() > 20  # the owner's traffic (counted in bulk by the fast scanner) is drawn too
    for client in (SCANNER, THIEF):  # and the attackers' requests (parsed one by one)
        assert page.locator(f"svg.timeline-chart g.client-row[data-client='{client}'] rect.bar").count() >= 1
    crash = page.locator("svg.timeline-chart line.event-marker[data-rule='server-crash']")
    assert crash.count() == 1
    assert page.locator("svg.timeline-chart line.event-marker[data-rule='exposed-bind']").count() == 1
    assert not page.errors
    custody = page.locator("section:has(h2:text('Chain of custody')) td").all_inner_texts()
    assert custody[0] == "server.log" and re.fullmatch(r"[0-9a-f]{64}", custody[3])
    from ollama_guard import __version__

    provenance = page.locator("section:has(h2:text('Provenance')) td").all_inner_texts()
    assert f"ollama-guard {__version__}" in provenance
    if os.environ.get("OLLAMA_GUARD_SCREENSHOTS"):
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        first = page.locator("section:has(h2:text('Chain of custody'))").bounding_box()
        last = page.locator("section:has(h2:text('Provenance'))").bounding_box()
        page.screenshot(path=str(DOCS_IMG / "report-investigate-custody.png"), full_page=True, timeout=90_000,
                        clip={"x": 0, "y": first["y"] - 10, "width": 1280,
                              "height": last["y"] + last["height"] - first["y"] + 20})
        top = page.locator("section:has(h2:text('Timeline per client'))").bounding_box()
        page.set_viewport_size({"width": 1200, "height": int(top["y"] + top["height"] + 40)})
        page.screenshot(path=str(DOCS_IMG / "report-investigate-timeline.png"), timeout=90_000)


def test_standalone_svg_renders(page: Any, incident: dict[str, Path]) -> None:
    text = incident["svg"].read_text(encoding="utf-8")
    assert text.startswith("<?xml") and (incident["svg"].stat().st_mode & 0o777) == 0o600
    page.goto(incident["svg"].as_uri())
    assert page.evaluate("() => document.documentElement.tagName") == "svg"
    assert page.locator("g.client-row").count() == 4
    assert page.locator("rect.attack-window").count() >= 3
    box = page.locator("rect.attack-window").first.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0


def _histograms(path: Path, *, fast: bool) -> dict[str, dict[int, int]]:
    from ollama_guard.investigate.analyze import analyze
    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.investigate.rules import load_rules
    from ollama_guard.investigate.sources import file_source

    analysis = analyze([file_source(str(path))], None, rules=load_rules(), classifier=ClientClassifier(),
                       tz=UTC, since=None, fast=fast)
    return {c: dict(sorted(t.per_minute.items())) for c, t in analysis.engine.tallies.items()
            if t.per_minute}


def _quarters(hists: dict[str, dict[int, int]]) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for client, hist in hists.items():
        for minute, n in hist.items():
            out.setdefault(client, {}).setdefault(minute - minute % 15, 0)
            out[client][minute - minute % 15] += n
    return out


@pytest.mark.parametrize("how", ["runs", "sorted", "quarter hours"])
def test_fast_scanner_counts_per_minute_like_the_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        how: str) -> None:
    """The chart's counts for the owner's bulk traffic (counted by the fast scanner without events) are
    the parser's, per minute: in time-ordered runs, by sorting (times out of order), and per quarter
    hour for blocks that span long."""
    from ollama_guard.investigate.fastscan import owners
    from test_investigate_gen import mixed_log

    path = tmp_path / "mixed.log"
    lines = mixed_log(6000)
    if how == "sorted":  # times jumping back and forth, hour after hour
        monkeypatch.setattr(owners, "MAX_MINUTE_RUNS", 3)
        lines = lines[:2] + sorted(lines[2:], key=lambda line: line[-12:])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    slow = _histograms(path, fast=False)
    assert sum(sum(h.values()) for h in slow.values()) > 4000 and len(slow["127.0.0.1"]) > 100
    if how == "quarter hours":
        monkeypatch.setattr(owners, "COARSE_SPAN", 3600)
        fast = _histograms(path, fast=True)
        assert len(fast["127.0.0.1"]) < len(slow["127.0.0.1"])  # bulk counts went per quarter hour
        assert _quarters(fast) == _quarters(slow)
    else:
        assert _histograms(path, fast=True) == slow


def test_a_client_counts_per_minute_then_per_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    from ollama_guard.investigate import tally as tally_module
    from ollama_guard.investigate.tally import ClientTally

    tally = ClientTally("203.0.113.9", "public")
    assert tally.per_minute == {}
    tally.count_at(600, 2)
    tally.count_at(600)
    assert tally.per_minute == {600: 3} and tally.histogram is None  # one minute: no dict
    tally.count_at(601)
    assert tally.per_minute == {600: 3, 601: 1}
    monkeypatch.setattr(tally_module, "MAX_HISTOGRAM_KEYS", 3)
    tally.count_at(662)
    tally.count_at(725, 5)  # a fourth minute: the client goes per hour, nothing lost
    assert tally.hourly and tally.per_minute == {600: 4, 660: 1, 720: 5}
    tally.count_at(779)
    assert tally.per_minute[720] == 6
