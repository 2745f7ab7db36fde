"""The command line's outside, as PRODUCT.md states it: bad input is one line on stderr and exit 2 (never a
traceback), --help everywhere, JSON shapes and exit codes of scan/keys/advisories/logs.

Regression tests for bugs found by the QA sweep are marked `# regression:`.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from support.cli import run_cli
from support.servers import DecoyProcess, start_decoy

GUARD = [sys.executable, "-m", "ollama_guard"]
SEVERITIES = {"critical", "high", "medium", "low", "info"}
FINDING_FIELDS = {"rule", "severity", "target", "title", "detail", "evidence", "remediation", "references"}
HOST_FIELDS = {"target", "url", "service", "version", "auth", "reachable_endpoints", "models", "findings"}
SARIF_SCHEMA = Path("/work/shared/data/sarif-schema-2.1.0.json")


run = run_cli  # `ollama-guard ARGV` in-process through the real entry point


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("ollama-guard: error: ")


# ------------------------------------------------------------------------------------ help and version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("ollama-guard ") and out.strip().split()[1].count(".") == 2


@pytest.mark.parametrize(
    "command",
    [
        ("scan",), ("decoy",), ("audit",), ("harden",), ("advisories",), ("keys",), ("keys", "create"),
        ("keys", "list"), ("keys", "revoke"), ("keys", "rotate"), ("logs",), ("logs", "verify"),
        ("logs", "tail"),
    ],
)  # fmt: skip
def test_every_command_has_help(capsys: pytest.CaptureFixture[str], command: tuple[str, ...]) -> None:
    code, out, err = run(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"Usage: ollama-guard {' '.join(command)}")


# ------------------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "argv",
    [
        ("scan", "127.0.0.1", "--format", "xml"),
        ("scan", "127.0.0.1", "--fail-on", "garbage"),
        ("scan", "127.0.0.1", "--concurrency", "0"),
        ("scan", "127.0.0.1", "--nosuchflag"),
        ("decoy", "--port", "70000"),
        ("decoy", "--seed-models", "-1"),
        ("keys", "create", "k", "--role", "superuser"),
        ("keys", "create", "k"),
        ("keys", "create", "k", "--role", "read", "--rpm", "-5"),
        ("advisories", "--format", "sarif"),
        ("logs", "tail", "-n", "-1"),
        ("harden",),
        ("nosuchcommand",),
    ],
)
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    # regression: click's usage errors printed a 4-line "Usage/Try/Error" block
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert out == ""
    assert "--help" in err  # still points to the help


def test_usage_error_with_file_path_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for argv in (
        ("scan", "127.0.0.1", "-o", str(tmp_path)),
        ("audit", "--root", str(a_file)),
        ("decoy", "--models-dir", str(a_file)),
        ("keys", "list", "--config", str(tmp_path)),
    ):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err)


def test_bare_group_still_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keys")
    assert code == 2 and "create" in out + err and "rotate" in out + err


@pytest.mark.parametrize(
    "argv",
    [
        ("scan", "127.0.0.1", "--timeout", "nan"),
        ("scan", "127.0.0.1", "--rate", "nan"),
        ("scan", "127.0.0.1", "--rate", "inf"),
        ("decoy", "--port", "0", "--stream-delay", "nan"),
    ],
)
def test_non_finite_numbers_are_refused(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    # regression: click's FloatRange let nan (and inf without an upper bound) through; the scan then ran
    # with a nan timeout/rate and the decoy started with a nan stream delay
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("scan", "127.0.0.1", "--ports", "70000"),
        ("scan", "127.0.0.1", "--ports", "100-50"),
        ("scan", "127.0.0.1", "--ports", "abc"),
        ("scan", "10.0.0.0/33"),
        ("scan", "10.0.0.5-10.0.0.1"),
        ("scan", "0.0.0.0/0"),
        ("scan", "ftp://127.0.0.1"),
        ("scan", "127.0.0.1:0"),
        ("scan", "-iL", "/nonexistent/targets.txt"),
        ("scan",),
        ("advisories", "--version", "garbage"),
        ("audit", "--root", "/nonexistent/root"),
        ("keys", "create", "k", "--role", "read", "--db", "mysql://x/y"),
    ],
)
def test_bad_values_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err)
    assert out == ""


def test_scan_input_list_directory_and_binary(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "scan", "-iL", str(tmp_path))
    assert_one_line_error(code, err)
    assert "directory" in err  # regression: a directory was reported as "no such file"
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "scan", "-iL", str(garbage))
    assert_one_line_error(code, err)


def test_scan_input_list_from_a_pipe(tmp_path: Path) -> None:
    # regression: `-iL /dev/stdin` and `-iL <(masscan …)` (pipes) were refused with "no such file"
    proc = subprocess.run(
        [*GUARD, "scan", "-iL", "/dev/stdin", "--format", "json", "--timeout", "0.5"],
        input="# closed loopback port\n127.0.0.1:1\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["hosts"] == [] and report["summary"]["attempted"] == 1
    assert proc.stderr == ""


# ---------------------------------------------------------------------------------- scan JSON contract


@pytest.fixture(scope="module")
def old_decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), version="0.1.33", seed_models=2) as decoy:
        yield decoy


def test_scan_json_shape_and_exit_codes(
    capsys: pytest.CaptureFixture[str], old_decoy: DecoyProcess, scan_as_remote: None
) -> None:
    target = f"127.0.0.1:{old_decoy.port}"
    code, out, err = run(capsys, "scan", target, "--format", "json", "--timeout", "3")
    assert code == 1 and err == ""  # default --fail-on high; no progress noise on stderr
    report: dict[str, Any] = json.loads(out)
    assert {"tool", "hosts", "summary"} <= set(report)
    [host] = report["hosts"]
    assert HOST_FIELDS <= set(host)
    assert host["target"] == target and host["service"] == "ollama" and host["version"] == "0.1.33"
    assert host["auth"] == "none" and host["url"].startswith("http://127.0.0.1:")
    assert "/api/tags" in host["reachable_endpoints"] and len(host["models"]) == 2
    for finding in host["findings"]:
        assert set(finding) == FINDING_FIELDS
        assert finding["severity"] in SEVERITIES and finding["target"] == target
        assert isinstance(finding["evidence"], dict) and isinstance(finding["references"], list)
    found = {f["rule"] for f in host["findings"]}
    assert {"unauthenticated-api", "unauthenticated-admin", "model-enumeration", "plaintext-http"} <= found
    assert "CVE-2024-37032" in found and "CVE-2024-28224" not in found
    assert "cors-any-origin" not in found  # 0.1.33 with default origins refuses a foreign preflight

    assert run(capsys, "scan", target, "--format", "json", "--fail-on", "never")[0] == 0
    assert run(capsys, "scan", target, "--format", "json", "--fail-on", "critical")[0] == 1
    # nothing listening: exit 0 and an empty host list
    code, out, _ = run(capsys, "scan", "127.0.0.1:1", "--format", "json", "--timeout", "0.5")
    assert code == 0 and json.loads(out)["hosts"] == []
    # the scan never asked for anything that changes state
    for request in old_decoy.requests():
        assert request["method"] in ("GET", "HEAD", "OPTIONS") or request["path"] == "/api/show", request


def test_scan_sarif_is_valid(
    capsys: pytest.CaptureFixture[str], old_decoy: DecoyProcess, tmp_path: Path
) -> None:
    out_file = tmp_path / "scan.sarif"
    code, out, err = run(capsys, "scan", f"127.0.0.1:{old_decoy.port}", "-o", str(out_file), "--timeout", "3")
    assert code == 1 and out == ""
    assert err.startswith(f"ollama-guard: wrote {out_file}: ") and len(err.splitlines()) == 1  # what, where
    sarif = json.loads(out_file.read_text())
    jsonschema.validate(sarif, json.loads(SARIF_SCHEMA.read_text()))
    assert "CVE-2024-37032" in {r["ruleId"] for r in sarif["runs"][0]["results"]}


def test_scan_output_into_missing_directory(
    capsys: pytest.CaptureFixture[str], old_decoy: DecoyProcess
) -> None:
    code, _, err = run(capsys, "scan", f"127.0.0.1:{old_decoy.port}", "-o", "/nonexistent/dir/x.json")
    assert_one_line_error(code, err)


# ----------------------------------------------------------------------------------------- advisories


def _advisory_ids(capsys: pytest.CaptureFixture[str], version: str) -> set[str]:
    code, out, err = run(capsys, "advisories", "--version", version, "--format", "json")
    assert code == 0 and err == ""
    data = json.loads(out)
    items = data["advisories"] if isinstance(data, dict) else data
    return {item["id"] for item in items}


def test_advisories_by_version(capsys: pytest.CaptureFixture[str]) -> None:
    old = _advisory_ids(capsys, "0.1.33")
    assert "CVE-2024-37032" in old and "CVE-2024-28224" not in old
    assert "CVE-2026-7482" in _advisory_ids(capsys, "0.17.0")
    assert "CVE-2026-7482" not in _advisory_ids(capsys, "0.17.1")


# ----------------------------------------------------------------------------------------- keys, logs


def test_keys_secret_is_last_line_and_never_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    code, out, err = run(capsys, "keys", "create", "ci", "--role", "inference", "--rpm", "5", "--db", db)
    assert code == 0, err
    secret = out.splitlines()[-1]
    assert out == secret + "\n" and len(secret) >= 32 and secret not in err
    code, out, err = run(capsys, "keys", "create", "ci", "--role", "read", "--db", db)
    assert_one_line_error(code, err)  # duplicate name
    code, out, _ = run(capsys, "keys", "list", "--format", "json", "--db", db)
    assert code == 0
    [listed] = json.loads(out)["keys"]
    assert listed["name"] == "ci" and listed["rpm"] == 5
    assert secret not in out and secret.split("_", 2)[2] not in out and "hash" not in out.lower()
    code, _, err = run(capsys, "keys", "revoke", "nosuchkey", "--db", db)
    assert_one_line_error(code, err)
    code, out, err = run(capsys, "logs", "verify", "--db", db)
    assert code == 0 and out.startswith("intact")


@pytest.mark.parametrize("sub", [("list",), ("revoke", "ci"), ("rotate", "ci")])
def test_keys_never_create_a_database_by_mistake(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sub: tuple[str, ...]
) -> None:
    # regression: `keys list --db <typo>` created an empty database (and a secret) and said "no keys"
    missing = tmp_path / "typo.db"
    code, out, err = run(capsys, "keys", *sub, "--db", f"sqlite:///{missing}")
    assert_one_line_error(code, err)
    assert "no gateway database" in err and out == ""
    assert not missing.exists() and not (tmp_path / "secret.key").exists()


def test_keys_list_does_not_write_to_a_foreign_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # regression: `keys list` on some other SQLite file created the gateway tables in it
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    code, _, err = run(capsys, "keys", "list", "--db", f"sqlite:///{foreign}")
    assert_one_line_error(code, err)
    with sqlite3.connect(foreign) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"notes"}


def test_logs_on_missing_or_foreign_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x TEXT)")
    for argv in (
        ("logs", "verify", "--db", f"sqlite:///{tmp_path / 'missing.db'}"),
        ("logs", "tail", "--db", f"sqlite:///{tmp_path / 'missing.db'}"),
        ("logs", "verify", "--db", f"sqlite:///{foreign}"),
        ("logs", "tail", "--db", f"sqlite:///{foreign}"),
        ("logs", "verify", "--db", "garbage"),
    ):
        code, out, err = run(capsys, *argv)
        assert_one_line_error(code, err)
        assert out == ""
    assert not (tmp_path / "missing.db").exists()


def test_malformed_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\ndb = ")
    for argv in (
        ("keys", "list", "--config", str(bad)),
        ("keys", "create", "k", "--role", "read", "--config", str(bad)),
        ("logs", "verify", "--config", str(tmp_path / "missing.toml")),
    ):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err)


# ---------------------------------------------------------------------------------------------- decoy


def _status_with_host(url: str, host_header: str) -> int:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
    try:
        conn.request("GET", "/api/tags", headers={"Host": host_header})
        return conn.getresponse().status
    finally:
        conn.close()


def test_decoy_host_guard_follows_the_emulated_version(tmp_path: Path) -> None:
    # regression: a decoy emulating Ollama < 0.1.29 refused foreign Host headers, but the guard (the
    # CVE-2024-28224 DNS-rebinding fix) only arrived in 0.1.29 — the old versions must stay rebindable
    with start_decoy(tmp_path / "old", version="0.1.28", seed_models=0) as old:
        assert _status_with_host(old.url, "attacker.example") == 200
    with start_decoy(tmp_path / "new", version="0.1.29", seed_models=0) as new:
        assert _status_with_host(new.url, "attacker.example") == 403
        assert _status_with_host(new.url, "localhost") == 200


def test_decoy_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, out, err = run(capsys, "decoy", "--port", str(busy.getsockname()[1]))
    assert_one_line_error(code, err)
    assert out == ""


@pytest.mark.parametrize("argv", [("keys", "list"), ("logs", "tail")])
def test_unreachable_database_is_named_and_password_hidden(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: tuple[str, ...],
) -> None:
    # regression: a refused PostgreSQL connection surfaced as a bare "ConnectionRefusedError: …"
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path))
    code, _, err = run(capsys, *argv, "--db", "postgresql://guard:pa55w0rd@127.0.0.1:1/guard")
    assert_one_line_error(code, err)
    assert "cannot reach database" in err and "pa55w0rd" not in err
