"""`ollama-guard watch` end to end, as a real process following real files: growing, rotated,
truncated, appearing later; the journal and docker through stand-in commands on PATH; the audit DB."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from support.watch import BENIGN, RECON, WatchProcess, append, gin

ALERT_KEYS = {"rule", "severity", "target", "title", "detail", "evidence", "remediation", "references",
              "source", "first_seen", "last_seen", "count"}


def test_growing_file_alerts_within_a_second_and_benign_traffic_does_not(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    append(log, RECON)  # before the start: not alerted (watch follows from the end)
    with WatchProcess([str(log), "--tz", "UTC"]) as watch:
        append(log, BENIGN * 20)
        watch.no_alert(1.0)
        written = append(log, RECON[:3])
        at, alert = watch.next_alert()
        assert alert["rule"] == "recon-burst" and alert["target"] == "203.0.113.9"
        assert at - written < 1.0
        assert ALERT_KEYS <= set(alert)
        assert alert["source"] == "server.log" and alert["count"] == 3 and alert["alert"] == "new"
        assert alert["first_seen"] == "2024-08-19T14:13:01Z"
        assert alert["evidence"]["samples"][0].startswith("server.log:85: ")  # line numbers of the file
        append(log, RECON)  # same rule and client within the de-dup window: no second alert
        watch.no_alert(1.0)
        assert watch.stop() == 0
    assert any("following 1 source" in line for line in watch.stderr)


def test_rotation_by_rename_loses_no_line(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("")
    burst = [gin("198.51.100.7", "POST", f"/api/x{i}", 404) for i in range(14)]  # error-burst needs 14
    with WatchProcess([str(log), "--tz", "UTC"]) as watch:
        append(log, burst[:5])
        time.sleep(0.3)
        log.rename(tmp_path / "server.log.1")
        append(tmp_path / "server.log.1", burst[5:9])  # the writer still has the old file open
        time.sleep(0.3)
        append(log, burst[9:])  # the new file
        _, alert = watch.wait_for("error-burst")
        assert alert["count"] == 14 and alert["target"] == "198.51.100.7"
        assert watch.said("replaced")
        assert watch.stop() == 0


def test_truncation_and_a_file_that_appears_later(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    later = tmp_path / "later" / "ollama.log"
    log.write_text("\n".join(BENIGN * 50) + "\n")
    with WatchProcess([str(log), str(later), "--tz", "UTC"]) as watch:
        log.write_text("")  # copytruncate
        time.sleep(0.3)
        append(log, [gin("203.0.113.50", "DELETE", "/api/delete")])
        _, alert = watch.wait_for("model-deleted")
        assert alert["target"] == "203.0.113.50"
        assert alert["evidence"]["samples"][0].startswith("server.log:1: ")
        later.parent.mkdir()
        append(later, [gin("203.0.113.51", "POST", "/api/pull")])
        _, alert = watch.wait_for("admin-from-remote")
        assert alert["target"] == "203.0.113.51"
        assert watch.said("truncated")
        assert watch.said("appeared")
        assert watch.stop(signal.SIGINT) == 0


def _fake(bindir: Path, name: str, script: str) -> None:
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)


def _journal_record(line: str, i: int) -> str:
    return json.dumps({"__CURSOR": f"s=abc;i={i}", "__REALTIME_TIMESTAMP": str(1724076781000000 + i * 1000),
                       "_SYSTEMD_UNIT": "ollama.service", "MESSAGE": line})


def test_journal_child_is_restarted_from_its_cursor(tmp_path: Path) -> None:
    """A stand-in journalctl prints two records and dies; the watch restarts it after the last cursor
    and the rule still sees all four requests of the burst."""
    bindir = tmp_path / "bin"
    calls = tmp_path / "calls"
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"
    first.write_text("".join(_journal_record(line, i) + "\n" for i, line in enumerate(RECON[:2])))
    second.write_text("".join(_journal_record(line, i + 2) + "\n" for i, line in enumerate(RECON[2:])))
    _fake(bindir, "journalctl", f"""echo "$@" >> {calls}
case "$*" in
  *--after-cursor*) cat {second}; exec sleep 60 ;;
  *) sleep 0.5; cat {first}; exit 1 ;;
esac
""")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    with WatchProcess(["--journal", "--tz", "UTC"], env=env) as watch:
        _, alert = watch.wait_for("recon-burst", timeout=10)
        assert alert["count"] == 4 and alert["source"] == "journal:ollama"
        assert watch.stop() == 0
    argv = calls.read_text().splitlines()
    assert argv[0].split()[:6] == ["-u", "ollama", "-o", "json", "--no-pager", "-f"]
    assert "-n 0" in argv[0]
    assert argv[1].endswith("--after-cursor s=abc;i=1")
    assert any("journal:ollama stopped" in line for line in watch.stderr)


def test_docker_child_restart_does_not_repeat_lines(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    calls = tmp_path / "calls"
    stamps = [f"2024-08-19T14:13:0{i}.{i}00000000Z" for i in range(4)]
    lines = [f"{stamps[i]} {gin('203.0.113.9', 'DELETE', '/api/delete')}" for i in range(4)]
    log = tmp_path / "docker.log"
    log.write_text("\n".join(lines[:2]) + "\n")
    rest = tmp_path / "rest.log"
    rest.write_text("\n".join(lines[1:]) + "\n")  # --since repeats the last line seen
    _fake(bindir, "docker", f"""echo "$@" >> {calls}
case "$*" in
  *--since*) cat {rest} >&2; exec sleep 60 ;;
  *) sleep 0.5; cat {log} >&2; exit 1 ;;
esac
""")
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    with WatchProcess(["--docker", "ollama", "--tz", "UTC", "--dedup", "1s"], env=env) as watch:
        _, alert = watch.wait_for("model-deleted", timeout=10)
        deadline = time.monotonic() + 6
        while alert["count"] < 4 and time.monotonic() < deadline:
            _, alert = watch.wait_for("model-deleted", timeout=6)
        assert alert["count"] == 4  # not 5: the repeated line is skipped
        watch.no_alert(1.5)
        assert watch.stop() == 0
    argv = calls.read_text().splitlines()
    assert argv[0] == "logs -t -f --tail 0 ollama"
    assert argv[1] == f"logs -t -f --since {stamps[1]} ollama"


def test_audit_db_is_followed_by_sequence(tmp_path: Path) -> None:
    from ollama_guard.gateway.audit import AuditRecord
    from ollama_guard.gateway.db import create_engine_for, init_schema
    from support.audit import store_records

    url = f"sqlite:///{tmp_path / 'guard.db'}"
    base = datetime.now(UTC)

    def refusals(client: str, n: int) -> list[AuditRecord]:
        return [AuditRecord(time=base + timedelta(seconds=i), client=client, method="GET", path="/api/tags",
                            status=401, decision="deny", reason="no key") for i in range(n)]

    async def write(records: list[AuditRecord]) -> None:
        engine = create_engine_for(url)
        await init_schema(engine)
        await store_records(engine, b"s" * 48, records)
        await engine.dispose()

    asyncio.run(write(refusals("198.51.100.1", 12)))  # before the start: history, not alerted
    with WatchProcess(["--audit-db", url]) as watch:
        watch.no_alert(0.8)
        written = time.monotonic()
        asyncio.run(write(refusals("198.51.100.2", 10)))
        at, alert = watch.wait_for("auth-failure-burst")
        assert alert["target"] == "198.51.100.2" and alert["source"] == "audit-db"
        assert at - written < 3.0
        assert watch.stop() == 0
