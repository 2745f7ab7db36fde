"""`ollama-guard investigate` end to end: scenarios from real log lines, sources, flags, exit codes."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ollama_guard.cli import cli
from ollama_guard.errors import GuardError
from test_investigate_gen import config_line, desktop, docker_t, gin, journald

LOGS = Path(__file__).parent / "data" / "logs"
SEVERITY_RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
T = datetime(2024, 8, 19, 14, 0, 0)


def investigate(*args: str, stdin: str | bytes | None = None) -> tuple[int, Any]:
    result = CliRunner().invoke(cli, ["investigate", "--format", "json", *args], input=stdin)
    if isinstance(result.exception, GuardError):
        return 2, str(result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip().startswith(
        "{"
    ) else result.stdout


def by_rule(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["rule"], []).append(f)
    return out


def write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_benign_local_use_has_nothing_above_low() -> None:
    code, report = investigate(str(LOGS / "benign_local.log"), "--fail-on", "medium")
    assert code == 0
    assert all(SEVERITY_RANK[f["severity"]] <= 1 for f in report["findings"]), report["findings"]
    assert report["summary"]["requests"] == 12
    (local,) = [t for t in report["timeline"] if t["client"] == "127.0.0.1"]
    assert local["client_class"] == "loopback"
    assert local["endpoints"]["POST /api/chat"] == 3
    assert local["first_seen"] == "2024-08-19T08:01:10Z"
    assert local["last_seen"] == "2024-08-19T08:22:09Z"
    assert report["iocs"] == []


def test_recon_burst_names_client_and_window() -> None:
    code, report = investigate(str(LOGS / "recon.log"), "--fail-on", "never")
    assert code == 0
    rules = by_rule(report)
    (recon,) = rules["recon-burst"]
    assert recon["target"] == "203.0.113.7"
    assert recon["severity"] == "medium"
    ev = recon["evidence"]
    assert ev["first_seen"] == "2024-08-19T14:13:01Z" and ev["last_seen"] == "2024-08-19T14:13:04Z"
    assert ev["windows"][0]["start"] == "2024-08-19T14:13:01Z"
    assert ev["windows"][0]["end"] == "2024-08-19T14:13:04Z"
    assert set(ev["endpoints"]) == {
        "GET /",
        "GET /api/version",
        "GET /api/tags",
        "GET /api/ps",
        "GET /v1/models",
    }
    assert any("recon.log:3:" in s for s in ev["samples"])
    assert "T1595.002" in ev["attack"]
    # a single listing from another address is not a burst
    assert all(f["target"] != "198.51.100.20" for f in rules["recon-burst"])
    assert rules["exposed-bind"][0]["target"] == "recon.log"
    iocs = {i["value"]: i for i in report["iocs"]}
    assert iocs["203.0.113.7"]["rules"] == ["recon-burst"]


def test_compute_abuse_public_private_and_long_streams(tmp_path: Path) -> None:
    lines = [
        gin(T + timedelta(seconds=10 * i), "203.0.113.50", "POST", "/api/generate", 200, "8.5s")
        for i in range(40)
    ]
    lines += [
        gin(T + timedelta(seconds=10 * i), "10.1.2.3", "POST", "/v1/chat/completions", 200, "2.1s")
        for i in range(35)
    ]
    lines += [
        gin(T + timedelta(minutes=17 * i), "198.51.100.77", "POST", "/api/chat", 200, "16m31s")
        for i in range(3)
    ]
    lines += [gin(T + timedelta(seconds=i), "127.0.0.1", "POST", "/api/chat", 200, "3s") for i in range(100)]
    code, report = investigate(write(tmp_path, "abuse.log", lines))
    assert code == 1
    abuse = {f["target"]: f for f in by_rule(report)["compute-abuse"]}
    assert set(abuse) == {"203.0.113.50", "10.1.2.3", "198.51.100.77"}
    assert abuse["203.0.113.50"]["severity"] == "high"
    assert abuse["203.0.113.50"]["evidence"]["matched_requests"] == 40
    assert abuse["10.1.2.3"]["severity"] == "medium"  # a private address: maybe a colleague
    assert abuse["198.51.100.77"]["evidence"]["windows"][0]["trigger"].startswith("total latency")
    timeline = {t["client"]: t for t in report["timeline"]}
    assert timeline["203.0.113.50"]["total_latency_s"] == pytest.approx(40 * 8.5)


def test_compute_abuse_far_above_usual_volume(tmp_path: Path) -> None:
    """A LAN client that usually sends 2 chats per 10 minutes suddenly sends 25 (below the flat
    threshold of 30): a spike against its own history. A client steady at 25 is not flagged."""
    lines = []
    for window in range(13):
        base = T + timedelta(minutes=10 * window)
        n = 25 if window == 12 else 2
        lines += [
            gin(base + timedelta(seconds=20 * i), "10.1.2.3", "POST", "/api/chat", 200, "1.5s")
            for i in range(n)
        ]
        lines += [
            gin(base + timedelta(seconds=20 * i + 1), "10.9.9.9", "POST", "/api/chat", 200, "1.5s")
            for i in range(25)
        ]
    lines.sort(key=lambda line: line[6:27])
    _, report = investigate(write(tmp_path, "spike.log", lines), "--fail-on", "never")
    abuse = {f["target"]: f for f in by_rule(report).get("compute-abuse", [])}
    assert set(abuse) == {"10.1.2.3"}
    (window,) = abuse["10.1.2.3"]["evidence"]["windows"]
    assert "usual volume" in window["trigger"]
    assert window["start"] == "2024-08-19T16:00:00Z"


def test_deletion_is_model_deleted_and_admin_from_remote() -> None:
    code, report = investigate(str(LOGS / "exfil.log"))
    assert code == 1
    rules = by_rule(report)
    assert rules["model-deleted"][0]["target"] == "198.51.100.23"
    assert rules["model-deleted"][0]["severity"] == "high"
    admin = rules["admin-from-remote"][0]
    assert admin["evidence"]["endpoints"]["DELETE /api/delete"] == 1
    assert admin["evidence"]["matched_requests"] == 5


def test_owner_deletion_is_low(tmp_path: Path) -> None:
    code, report = investigate(
        write(tmp_path, "own.log", [gin(T, "127.0.0.1", "DELETE", "/api/delete", 200)])
    )
    assert code == 0
    (finding,) = report["findings"]
    assert (finding["rule"], finding["severity"]) == ("model-deleted", "low")


def test_exfiltration_chain_with_uploaded_bytes() -> None:
    _, report = investigate(str(LOGS / "exfil.log"))
    (chain,) = by_rule(report)["exfiltration-chain"]
    assert chain["severity"] == "critical"
    assert chain["target"] == "198.51.100.23"
    ev = chain["evidence"]
    assert ev["pushed_bytes_approx"] == 8 * 100_000_000 + 485
    assert ev["windows"][0]["start"] == "2025-01-11T23:31:25Z"  # the blob upload starts the chain
    assert ev["windows"][0]["end"] == "2025-01-11T23:33:15Z"
    assert {"T1567", "T1041"} <= set(ev["attack"])
    (row,) = [t for t in report["timeline"] if t["client"] == "198.51.100.23"]
    assert row["pushed_bytes_approx"] == 800_000_485


def test_push_without_staging_is_not_a_chain(tmp_path: Path) -> None:
    lines = [
        gin(T, "198.51.100.23", "POST", "/api/push", 200),
        gin(T + timedelta(hours=2), "198.51.100.23", "POST", "/api/create", 200),
        gin(T + timedelta(hours=3), "198.51.100.23", "POST", "/api/push", 200),
    ]  # > 30 min later
    _, report = investigate(write(tmp_path, "p.log", lines), "--fail-on", "never")
    assert "exfiltration-chain" not in by_rule(report)


def test_crash_after_remote_pull_is_high() -> None:
    code, report = investigate(str(LOGS / "crash_cve_2025_1975.log"))
    assert code == 1
    (crash,) = by_rule(report)["server-crash"]
    assert crash["severity"] == "high"
    (entry,) = crash["evidence"]["crashes"]
    assert entry["message"].startswith("panic: runtime error: slice bounds out of range")
    assert entry["where"] == "crash_cve_2025_1975.log:4"
    assert entry["suspect_client"] == "192.0.2.66"
    assert entry["frames"][0] == "github.com/ollama/ollama/server.downloadBlob (download.go:478)"
    assert any('"/api/pull"' in line for line in entry["preceding_lines"])
    assert entry["time"] == "2025-07-06T22:14:52Z"


def test_crash_after_owner_request_is_medium(tmp_path: Path) -> None:
    lines = [
        gin(T, "127.0.0.1", "POST", "/api/create", 200),
        "fatal error: concurrent map writes",
        "",
        "goroutine 7 [running]:",
    ]
    _, report = investigate(write(tmp_path, "c.log", lines), "--fail-on", "never")
    (crash,) = by_rule(report)["server-crash"]
    assert crash["severity"] == "medium"
    assert crash["evidence"]["count"] == 1


@pytest.mark.parametrize(
    ("host", "origins", "expected"),
    [
        ("http://0.0.0.0:11434", "[* http://localhost]", {"exposed-bind", "cors-any-origin"}),
        ("[::]:11434", "[http://localhost]", {"exposed-bind"}),
        ("http://127.0.0.1:11434", "[*]", {"cors-any-origin"}),
        ("http://127.0.0.1:11434", "[http://localhost app://*]", set()),
    ],
)
def test_startup_config(tmp_path: Path, host: str, origins: str, expected: set[str]) -> None:
    _, report = investigate(write(tmp_path, "cfg.log", [config_line(T, host, origins)]), "--fail-on", "never")
    assert set(by_rule(report)) == expected
    for f in report["findings"]:
        assert f["target"] == "cfg.log"
        assert f["evidence"]["settings"]["OLLAMA_HOST"] == host


def test_debug_request_logging_and_secrets_redacted(tmp_path: Path) -> None:
    line = config_line(T, extra=" OLLAMA_DEBUG_LOG_REQUESTS:true HTTPS_PROXY:http://bob:hunter2@proxy:3128")
    _, report = investigate(write(tmp_path, "cfg.log", [line]), "--fail-on", "never")
    assert set(by_rule(report)) == {"debug-request-logging"}
    assert "hunter2" not in json.dumps(report)


def _variants(lines: list[str]) -> dict[str, list[str]]:
    """The same log as journald (French month names), docker -t, Docker Desktop, and with colours."""
    out: dict[str, list[str]] = {"journald": [], "docker": [], "desktop": [], "color": []}
    for i, line in enumerate(lines):
        t = T + timedelta(seconds=i)
        out["journald"].append(journald(line, t, french=True))
        out["docker"].append(docker_t(line, t))
        out["desktop"].append(desktop(line, t))
        out["color"].append(
            line.replace("| 200 |", "|\x1b[97;42m 200 \x1b[0m|").replace(
                "| GET      ", "|\x1b[97;44m GET     \x1b[0m "
            )
        )
    return out


def _essentials(report: dict) -> list[tuple]:
    return sorted(
        (
            f["rule"],
            f["severity"],
            f["target"].split(".log")[0],
            json.dumps(f["evidence"].get("windows")),
            f["evidence"].get("matched_requests"),
        )
        for f in report["findings"]
    )


def test_prefixed_and_coloured_logs_read_the_same(tmp_path: Path) -> None:
    lines = []
    for name in ("recon.log", "exfil.log", "crash_cve_2025_1975.log"):
        lines += (LOGS / name).read_text(encoding="utf-8").splitlines()
    _, plain = investigate(write(tmp_path, "plain.log", lines), "--fail-on", "never")
    assert len(plain["findings"]) >= 6
    for kind, variant in _variants(lines).items():
        _, report = investigate(write(tmp_path, f"{kind}.log", variant), "--fail-on", "never")
        assert _essentials(report) == [
            (r, s, kind if t == "plain" else t, w, m) for r, s, t, w, m in _essentials(plain)
        ], kind
        assert report["summary"]["requests"] == plain["summary"]["requests"]
        assert report["summary"]["malformed_lines"] == 0


def test_gzip_rotated_file_and_order(tmp_path: Path) -> None:
    old = tmp_path / "server-1.log.gz"
    with gzip.open(old, "wt", encoding="utf-8") as fh:
        fh.write((LOGS / "recon.log").read_text(encoding="utf-8"))
    newer = write(
        tmp_path, "server.log", [gin(datetime(2024, 8, 20), "203.0.113.7", "DELETE", "/api/delete")]
    )
    code, report = investigate(newer, str(old))
    assert code == 1
    assert {"recon-burst", "model-deleted", "admin-from-remote"} <= set(by_rule(report))
    assert list(report["data"]["stats"]["sources"]) if "data" in report else True
    assert list(report["stats"]["sources"]) == ["server-1.log.gz", "server.log"]  # oldest first


def test_stdin_dash_and_pipe() -> None:
    text = (LOGS / "recon.log").read_text(encoding="utf-8")
    _, with_dash = investigate("-", "--fail-on", "never", stdin=text)
    _, piped = investigate("--fail-on", "never", stdin=text)
    assert "recon-burst" in by_rule(with_dash)
    assert _essentials(with_dash) == _essentials(piped)
    assert with_dash["summary"]["sources"] == ["stdin"]


def test_unparseable_lines_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = (LOGS / "recon.log").read_text(encoding="utf-8").splitlines()
    lines[2:2] = ["\x00\xff garbage ☃", "[GIN] 2024/08/19 - 14:13:0 | 2x0 | broken", "", "[GIN] [GIN]"]
    path = tmp_path / "messy.log"
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n\xff\xfe binary tail")
    code, report = investigate(str(path), "--fail-on", "never")
    assert code == 0
    stats = report["stats"]["sources"]["messy.log"]
    assert stats["malformed_lines"] == 2
    assert stats["lines"] == len(lines) + 1
    assert any("2x0" in s for s in stats["malformed_samples"])
    assert "recon-burst" in by_rule(report)


def test_trusted_network_suppresses(tmp_path: Path) -> None:
    _, report = investigate(str(LOGS / "recon.log"), "--trusted", "203.0.113.0/24", "--fail-on", "never")
    assert "recon-burst" not in by_rule(report)
    (row,) = [t for t in report["timeline"] if t["client"] == "203.0.113.7"]
    assert row["client_class"] == "trusted"
    code, text = investigate(str(LOGS / "recon.log"), "--trusted", "not-a-network")
    assert code == 2 and "--trusted" in text


def test_since(tmp_path: Path) -> None:
    _, report = investigate(str(LOGS / "recon.log"), "--since", "2024-08-19T14:00", "--fail-on", "never")
    assert "recon-burst" in by_rule(report)
    _, report = investigate(str(LOGS / "recon.log"), "--since", "2024-08-19T14:14:00Z", "--fail-on", "never")
    rules = by_rule(report)
    assert "recon-burst" not in rules
    assert "exposed-bind" in rules  # the configuration still in force at --since
    assert report["summary"]["clients"] == 2  # 127.0.0.1 at 14:40 and 198.51.100.20 at 15:13
    code, text = investigate(str(LOGS / "recon.log"), "--since", "yesterday-ish")
    assert code == 2 and "--since" in text


def test_exit_codes_follow_fail_on(tmp_path: Path) -> None:
    recon_only = [
        line
        for line in (LOGS / "recon.log").read_text(encoding="utf-8").splitlines()
        if "Listening" not in line
    ]
    path = write(tmp_path, "r.log", recon_only)
    assert investigate(path)[0] == 0  # medium < high (default)
    assert investigate(path, "--fail-on", "medium")[0] == 1
    assert investigate(path, "--fail-on", "never")[0] == 0
    assert investigate(str(LOGS / "exfil.log"), "--fail-on", "critical")[0] == 1
    assert investigate(str(tmp_path / "missing.log"))[0] == 2


def test_json_shape() -> None:
    _, report = investigate(str(LOGS / "exfil.log"))
    for key in ("findings", "summary", "timeline", "iocs", "stats", "recommended_actions", "notes"):
        assert key in report, key
    for f in report["findings"]:
        assert set(f) == {
            "rule",
            "severity",
            "target",
            "title",
            "detail",
            "evidence",
            "remediation",
            "references",
        }
        assert f["severity"] in SEVERITY_RANK
        assert f["evidence"]["samples"]
        assert any(r.startswith("https://attack.mitre.org/techniques/") for r in f["references"])
    assert any("X-Forwarded-For" in n for n in report["notes"])
    assert report["stats"]["timezone"] == "UTC"
    assert report["iocs"][0]["value"] == "198.51.100.23"


def test_other_formats_render(tmp_path: Path) -> None:
    out = tmp_path / "report.sarif"
    result = CliRunner().invoke(cli, ["investigate", str(LOGS / "exfil.log"), "-o", str(out)])
    assert result.exit_code == 1
    sarif = json.loads(out.read_text(encoding="utf-8"))
    rule_ids = {r["ruleId"] for r in sarif["runs"][0]["results"]}
    assert {"exfiltration-chain", "model-deleted"} <= rule_ids
    md = CliRunner().invoke(cli, ["investigate", str(LOGS / "exfil.log"), "--format", "markdown"])
    assert "Timeline per client" in md.stdout and "198.51.100.23" in md.stdout


def test_tz_option_shifts_gin_times(tmp_path: Path) -> None:
    _, report = investigate(str(LOGS / "recon.log"), "--tz", "+02:00", "--fail-on", "never")
    (recon,) = by_rule(report)["recon-burst"]
    assert recon["evidence"]["first_seen"] == "2024-08-19T12:13:01Z"
    assert report["stats"]["timezone"] == "+02:00"


def _run_cli(args: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ollama_guard", "investigate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_usage_error_when_stdin_is_a_terminal() -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = _run_cli([], stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2
    assert "give log files" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fake_journalctl_and_docker(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    recon = (LOGS / "recon.log").read_text(encoding="utf-8").splitlines()
    journal = tmp_path / "journal.json"
    with journal.open("w", encoding="utf-8") as fh:
        for i, line in enumerate(recon):
            fh.write(json.dumps({"MESSAGE": line, "__REALTIME_TIMESTAMP": str(1724076781000000 + i)}) + "\n")
    (bindir / "journalctl").write_text(f"#!/bin/sh\ncat {journal}\n")
    docker_log = tmp_path / "docker.log"
    docker_log.write_text("\n".join(docker_t(line, T) for line in recon[:4]) + "\n")
    (bindir / "docker").write_text(
        f"#!/bin/sh\n[ \"$3\" = ollama ] || {{ echo 'Error: No such container: '$3 >&2; exit 1; }}\n"
        f"head -n 2 {docker_log}\ntail -n +3 {docker_log} >&2\n"
    )
    for exe in bindir.iterdir():
        exe.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = _run_cli(["--journal", "--format", "json", "--fail-on", "never"], env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "recon-burst" in by_rule(report)
    assert report["summary"]["sources"] == ["journal:ollama"]
    proc = _run_cli(["--docker", "ollama", "--format", "json", "--fail-on", "never"], env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["summary"]["requests"] == 3  # stdout and stderr of the container
    proc = _run_cli(["--docker", "nope"], env=env)
    assert proc.returncode == 2 and "No such container" in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_cli(["--journal"], env={"PATH": str(empty)})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "journalctl" in proc.stderr
