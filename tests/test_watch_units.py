"""Pieces of watch in isolation: RFC 5424 framing and its size bound, chat payload escaping, the
destination parser's redaction, --once over the journal and docker children."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.watch import payloads
from ollama_guard.watch.destinations import parse_destination, redacted
from ollama_guard.watch.syslog import BOM, UDP_MAX, format_message
from support.cli import run_cli
from support.watch import RECON


def alert(**extra: Any) -> dict[str, Any]:
    base = {"rule": "recon-burst", "severity": "medium", "target": "203.0.113.9", "title": "Recon",
            "detail": "d", "evidence": {"samples": ["x" * 100]}, "remediation": "r", "references": [],
            "source": "server.log", "first_seen": "2024-08-19T14:13:01Z",
            "last_seen": "2024-08-19T14:13:03Z", "count": 3, "alert": "new"}
    return {**base, **extra}


def test_rfc5424_header_structured_data_and_body() -> None:
    now = datetime(2024, 8, 19, 14, 13, 5, 123456, tzinfo=UTC)
    msg = format_message(alert(target='a"b]c\\d'), 4, hostname="gw 1", now=now)
    head, body = msg.split(BOM, 1)
    assert head.startswith(b"<36>1 2024-08-19T14:13:05.123456Z gw1 ollama-guard ")
    assert b' recon-burst [ollama-guard@32473 rule="recon-burst" severity="medium" ' in head
    assert b'target="a\\"b\\]c\\\\d"' in head
    assert json.loads(body)["count"] == 3


def test_udp_messages_stay_under_the_bound_and_stay_json() -> None:
    big = alert(evidence={"samples": ["y" * 4000] * 5})
    msg = format_message(big, 4, limit=UDP_MAX)
    assert len(msg) <= UDP_MAX
    body = json.loads(msg.split(BOM, 1)[1])
    assert body["truncated"] is True and "evidence" not in body and body["rule"] == "recon-burst"
    assert len(format_message(big, 4)) > UDP_MAX  # TCP sends it whole


def test_chat_payloads_escape_text_from_the_log() -> None:
    hostile = alert(detail="GET /<!channel> <https://evil.example|click> & [x](https://evil.example) *bold*")
    slack = json.dumps(payloads.slack(hostile))
    assert "<!channel>" not in slack and "<https://evil.example|" not in slack and "&amp;" in slack
    teams = json.dumps(payloads.teams(hostile))
    assert "[x](https://evil.example)" not in teams and "\\\\[x\\\\]" in teams
    assert payloads.headline(alert(alert="escalated", severity="high")).startswith("ESCALATED [HIGH] ")
    long = payloads.slack(alert(title="t" * 400))
    assert len(long["blocks"][0]["text"]["text"]) <= payloads.SLACK_HEADER_MAX


@pytest.mark.parametrize(("url", "shown"), [
    ("https://hooks.slack.com/services/T0/B0/SECRET", "https://hooks.slack.com/…"),
    ("http://user:pw@127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
    ("https://[::1]:9000", "https://[::1]:9000"),
])
def test_destinations_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert parse_destination(url, "json").label == shown


def _fake(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def test_once_reads_journal_and_docker_and_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    records = tmp_path / "journal.json"
    records.write_text("".join(
        json.dumps({"__CURSOR": f"c{i}", "__REALTIME_TIMESTAMP": str(1724076781000000 + i), "MESSAGE": line})
        + "\n" for i, line in enumerate(RECON)))
    calls = tmp_path / "calls"
    _fake(bindir, "journalctl", f'echo "$@" >> {calls}\ncat {records}\n')
    _fake(bindir, "docker", f'echo "$@" >> {calls}\necho "Error: No such container: $4" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    code, out, err = run_cli(capsys, "watch", "--journal", "--once", "--tz", "UTC", "--fail-on", "medium")
    assert code == 1, err
    (only,) = [json.loads(line) for line in out.splitlines()]
    assert only["rule"] == "recon-burst" and only["source"] == "journal:ollama"
    assert calls.read_text().splitlines()[0] == "-u ollama -o json --no-pager"  # no -f, no -n 0
    code, out, err = run_cli(capsys, "watch", "--docker", "nope", "--once")
    assert code == 2 and "No such container" in err and err.strip().count("\n") == 0


def test_rotation_between_polls_reads_the_old_files_last_lines_first(tmp_path: Path) -> None:
    from ollama_guard.watch.follow import DATA, RESET, FileFollower

    log = tmp_path / "a.log"
    log.write_bytes(b"")
    follower = FileFollower(log)
    assert follower.poll() == ([], False)
    with open(log, "ab") as fh:
        fh.write(b"last words of the old file\n")
    log.rename(tmp_path / "a.log.1")  # rotated before the next poll looked…
    log.write_bytes(b"first of the new\n")  # …and the new file is already there
    items, _ = follower.poll()
    assert items == [(DATA, b"last words of the old file\n"), (RESET, b""), (DATA, b"first of the new\n")]
    follower.close()


def test_banner_never_bans_the_owner_or_allowlisted_or_below_high(tmp_path: Path) -> None:
    import asyncio

    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.watch.respond import Banner

    said: list[str] = []
    banner = Banner(f"sqlite:///{tmp_path / 'g.db'}", 5, ClientClassifier(["10.0.0.0/8"]), ["192.0.2.0/24"],
                    said.append)

    async def run() -> None:
        for client, severity in [("127.0.0.1", "critical"), ("::1", "high"), ("10.1.2.3", "high"),
                                 ("192.0.2.7", "critical"), ("203.0.113.5", "medium"), ("not-an-ip", "high")]:
            await banner({"rule": "x", "severity": severity, "evidence": {"client": client}})
        await banner({"rule": "x", "severity": "high", "evidence": {}})  # a config/crash finding: no client
        await banner.close()

    asyncio.run(run())
    assert banner.banned == [] and said == []
    assert not (tmp_path / "g.db").exists()  # not even opened


def test_a_write_racing_the_rotation_check_is_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer appends to the old file between our read and our look at the path: the old file is
    read to its end once more before the new one is opened."""
    import ollama_guard.watch.follow as follow

    log = tmp_path / "a.log"
    log.write_bytes(b"")
    follower = follow.FileFollower(log)
    follower.poll()
    log.rename(tmp_path / "a.log.1")
    log.write_bytes(b"new\n")
    real_stat = os.stat

    def racing_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path) == log and not (tmp_path / "raced").exists():
            (tmp_path / "raced").write_text("")
            with open(tmp_path / "a.log.1", "ab") as fh:
                fh.write(b"raced\n")
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(follow.os, "stat", racing_stat)
    items, _ = follower.poll()
    assert b"".join(d for k, d in items if k == follow.DATA) == b"raced\nnew\n"
    follower.close()
