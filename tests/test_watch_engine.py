"""One engine, two drivers: every investigate rule fires through `watch`; alert de-duplication and
escalation; the file follower's tail -F semantics; bounded live state; clean usage errors."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ollama_guard.findings import Severity
from ollama_guard.investigate.engine import Engine
from ollama_guard.investigate.events import REQUEST, ClientClassifier, Event
from ollama_guard.investigate.rules import load_rules
from ollama_guard.watch.alerts import ESCALATED, NEW, UPDATE, Alerter
from ollama_guard.watch.follow import DATA, RESET, FileFollower, Lines
from support.cli import run_cli
from test_investigate_gen import config_line, gin

T = datetime(2024, 8, 19, 14, 0, 0)
LOGS = Path(__file__).parent / "data" / "logs"


def every_rule_log() -> list[str]:
    """A log in which each shipped rule has something to find."""
    lines = [config_line(T, "http://0.0.0.0:11434", "[* http://localhost]",
                         extra=" OLLAMA_DEBUG_LOG_REQUESTS:true")]
    ms = "1ms"
    at = T + timedelta(seconds=5)
    lines += [gin(at, "203.0.113.7", "GET", p, 200, "1ms") for p in ("/", "/api/version", "/api/tags")]
    lines += [gin(at + timedelta(seconds=i), "203.0.113.8", "POST", f"/api/x{i}", 404, ms) for i in range(14)]
    lines += [gin(at + timedelta(seconds=i), "203.0.113.9", "POST", "/api/chat", 404, ms) for i in range(5)]
    lines += [gin(at + timedelta(seconds=10 * i), "203.0.113.50", "POST", "/api/generate", 200, "8.5s")
              for i in range(30)]
    lines += [gin(at, "198.51.100.3", "POST", "/api/blobs/sha256:" + "a" * 64, 201, "1s"),
              gin(at + timedelta(seconds=5), "198.51.100.3", "POST", "/api/create", 200, "1s"),
              gin(at + timedelta(seconds=9), "198.51.100.3", "POST", "/api/push", 200, "9s"),
              gin(at + timedelta(seconds=20), "198.51.100.4", "DELETE", "/api/delete", 200, "1ms"),
              gin(at + timedelta(seconds=21), "198.51.100.5", "POST", "/api/me", 200, "1ms")]
    lines += [gin(at + timedelta(seconds=i), "198.51.100.6", "GET", "/api/tags", 401, ms) for i in range(10)]
    lines.sort(key=lambda line: line[6:27] if line.startswith("[GIN]") else "")
    # restarted on loopback, and still answering someone from elsewhere (a tunnel)
    lines.append('time=2024-08-19T15:00:00.000Z level=INFO source=routes.go:1 '
                 'msg="Listening on 127.0.0.1:11434 (version 0.3.5)"')
    lines.append(gin(T + timedelta(hours=1, seconds=5), "198.51.100.200", "POST", "/api/chat", 200, "2s"))
    lines += (LOGS / "crash_cve_2025_1975.log").read_text(encoding="utf-8").splitlines()
    return lines


def test_every_rule_fires_through_watch_as_through_investigate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "all.log"
    log.write_text("\n".join(every_rule_log()) + "\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "investigate", str(log), "--format", "json", "--fail-on", "never")
    assert code == 0, err
    expected = {(f["rule"], f["target"], f["severity"]) for f in json.loads(out)["findings"]}
    code, out, err = run_cli(capsys, "watch", str(log), "--once", "--tz", "UTC", "--min-severity", "info")
    assert code == 1, err  # high alerts, --fail-on high
    alerts = [json.loads(line) for line in out.splitlines()]
    assert {(a["rule"], a["target"], a["severity"]) for a in alerts} == expected
    assert {a["rule"] for a in alerts} == {r.id for r in load_rules()}
    assert len(alerts) == len(expected)  # one alert per finding: de-duplicated within the window


def test_once_exit_codes_and_benign_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "watch", str(LOGS / "benign_local.log"), "--once", "--tz", "UTC")
    assert (code, out) == (0, "")
    code, out, _ = run_cli(capsys, "watch", str(LOGS / "recon.log"), "--once", "--fail-on", "never")
    assert code == 0 and out
    code, _, _ = run_cli(capsys, "watch", str(LOGS / "recon.log"), "--once", "--fail-on", "medium")
    assert code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give log files"),
        (["x.log", "--alert", "ftp://h/"], "bad --alert 'ftp'"),
        (["x.log", "--alert", "syslog://h:99999"], "port"),
        (["x.log", "--alert", "syslog://h:514?facility=nope"], "facility"),
        (["x.log", "--dedup", "soon"], "bad --dedup"),
        (["x.log", "--trusted", "10.0.0.0/33"], "bad --trusted"),
        (["x.log", "--tz", "Mars/Base"], "unknown time zone"),
        (["-"], "watch follows files"),
        (["--docker", "-x"], "bad container name"),
    ],
)
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, "watch", *args)
    assert code == 2 and out == ""
    assert message in err and err.strip().count("\n") == 0
    assert "Traceback" not in err


def test_directory_and_missing_tools(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run_cli(capsys, "watch", str(tmp_path))
    assert code == 2 and "is a directory" in err
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "watch", "--journal")
    assert code == 2 and "journalctl" in err
    code, _, err = run_cli(capsys, "watch", "--audit-db", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "does not exist" in err


# --- alerter ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _req(client: str, method: str, path: str, status: int, t: datetime) -> Event:
    return Event(REQUEST, t, "s", 1, "raw", client=client, method=method, path=path, status=status)


def test_alerts_are_deduplicated_escalated_and_updated() -> None:
    rules = {r.id: r for r in load_rules()}
    engine = Engine((rules["admin-from-remote"],), ClientClassifier([]))
    clock = Clock()
    alerter = Alerter(600, Severity.LOW, clock)
    t = datetime(2024, 1, 1, tzinfo=UTC)
    engine.feed(_req("203.0.113.1", "POST", "/api/pull", 404, t))  # refused pull: medium
    (first,) = alerter.collect(engine)
    assert (first["alert"], first["severity"], first["count"]) == (NEW, "medium", 1)
    engine.feed(_req("203.0.113.1", "POST", "/api/pull", 404, t))
    assert alerter.collect(engine) == []  # same severity within the window
    engine.feed(_req("203.0.113.1", "POST", "/api/pull", 200, t))  # a pull that worked: high
    (follow_up,) = alerter.collect(engine)
    assert (follow_up["alert"], follow_up["severity"]) == (ESCALATED, "high")
    assert follow_up["previous_severity"] == "medium"
    engine.feed(_req("203.0.113.1", "POST", "/api/pull", 200, t))
    assert alerter.collect(engine) == []
    clock.now = 599
    assert alerter.collect(engine) == []
    clock.now = 600  # the held change is released when the window ends, without a new event
    (update,) = alerter.collect(engine)
    assert (update["alert"], update["count"]) == (UPDATE, 4)
    engine.feed(_req("203.0.113.2", "POST", "/api/pull", 404, t))  # another client: its own alert
    (other,) = alerter.collect(engine)
    assert other["target"] == "203.0.113.2"
    assert alerter.suppressed == 2


def test_min_severity_filters() -> None:
    rules = {r.id: r for r in load_rules()}
    engine = Engine((rules["model-deleted"],), ClientClassifier([]))
    alerter = Alerter(600, Severity.MEDIUM, Clock())
    # the owner's deletion is low
    engine.feed(_req("127.0.0.1", "DELETE", "/api/delete", 200, datetime(2024, 1, 1, tzinfo=UTC)))
    assert alerter.collect(engine) == []
    engine.feed(_req("203.0.113.1", "DELETE", "/api/delete", 200, datetime(2024, 1, 1, tzinfo=UTC)))
    assert [a["target"] for a in alerter.collect(engine)] == ["203.0.113.1"]


def test_live_state_is_bounded_by_active_clients() -> None:
    """A day of scanners, each seen once: expiring keeps only the last hours' clients, findings and
    correlation state (spike baselines included)."""
    engine = Engine(load_rules(), ClientClassifier([]))
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(24 * 60):
        t = t0 + timedelta(minutes=i)
        client = f"203.0.{i // 250}.{i % 250}"
        for path in ("/", "/api/tags", "/api/version"):
            engine.feed(_req(client, "GET", path, 200, t))
        engine.feed(_req(client, "POST", "/api/chat", 200, t))
        if i % 60 == 59:
            engine.expire(t, 7200)
    assert len(engine.tallies) <= 121
    assert len(engine.accumulators) <= 2 * 121
    assert len(engine._states) <= 3 * 121
    engine.expire(t0 + timedelta(days=2), 7200)
    assert not engine.tallies and not engine.accumulators and not engine._states


# --- follower -----------------------------------------------------------------------------------------


def _data(items: list[tuple[str, bytes]]) -> bytes:
    return b"".join(d for k, d in items if k == DATA)


def test_follower_from_end_rotation_truncation(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"old 1\nold 2\n")
    f = FileFollower(log)
    items, more = f.poll()
    assert items == [] and not more and f.skipped_lines == 2
    with open(log, "ab") as fh:
        fh.write(b"new 1\npart")
    assert _data(f.poll()[0]) == b"new 1\npart"
    os.rename(log, tmp_path / "a.log.1")
    with open(tmp_path / "a.log.1", "ab") as fh:
        fh.write(b"ial\n")  # written to the old file after the rename
    assert _data(f.poll()[0]) == b"ial\n"  # no new file yet: keep reading the old one
    log.write_bytes(b"fresh 1\n")
    items, _ = f.poll()
    assert [k for k, _ in items] == [RESET, DATA] and items[1][1] == b"fresh 1\n"
    log.write_bytes(b"")  # truncated
    with open(log, "ab") as fh:
        fh.write(b"x\n")
    items, _ = f.poll()
    assert [k for k, _ in items] == [RESET, DATA] and items[1][1] == b"x\n"
    f.close()


def test_follower_reads_big_appends_in_bounded_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ollama_guard.watch.follow as follow

    monkeypatch.setattr(follow, "MAX_READ", 10)
    log = tmp_path / "a.log"
    f = FileFollower(log)
    assert f.poll() == ([], False) and f.notices and "does not exist" in f.notices[0]
    log.write_bytes(b"0123456789abcdefghij" + b"klm\n")
    got, more = f.poll()
    assert more and _data(got) == b"0123456789"
    rest = b""
    while more:
        got, more = f.poll()
        rest += _data(got)
    assert rest == b"abcdefghijklm\n"


def test_lines_split_and_bound() -> None:
    lines = Lines(max_line=8)
    assert lines.feed(b"ab") == []
    assert lines.feed(b"c\nde") == ["abc"]
    assert lines.feed(b"\xff\n") == ["de\ufffd"]
    assert lines.feed(b"0123456789") == ["01234567"]  # a line longer than the bound is cut, not kept
    assert lines.partial == b""
    assert lines.feed(b"z") == [] and lines.flush() == ["z"]
