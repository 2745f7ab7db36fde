"""The shared report options as a user meets them: repeatable -o (one report, several files, each in
the format of its extension, written 0600), unknown extensions, the closing line on stderr, --severity,
the ignore file of accepted findings, -q."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from ollama_guard.cli import cli, main
from ollama_guard.cli_common import emit_report, report_options
from ollama_guard.findings import Finding, Report

RAN: list[str] = []


def _findings() -> list[Finding]:
    return [
        Finding(rule="unauthenticated-admin", severity="critical", target="10.0.0.7:11434",
                title="admin open", evidence={"banner": "Ollama is running"}),
        Finding(rule="cors-any-origin", severity="high", target="10.0.0.7:11434", title="any origin"),
        Finding(rule="cors-any-origin", severity="high", target="[::1]:11434", title="any origin"),
        Finding(rule="model-enumeration", severity="medium", target="10.0.0.8:11434", title="models listed"),
        Finding(rule="plaintext-http", severity="low", target="10.0.0.8:11434", title="plain http"),
    ]


@click.command("many-findings")
@report_options
@click.pass_context
def many_findings(ctx: click.Context, fmt: str | None, output: tuple[Path, ...], fail_on: str) -> None:
    RAN.append("ran")
    report = Report(command="many-findings", findings=_findings(), summary={"hosts": 2})
    ctx.exit(emit_report(report, fmt, output, fail_on))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path):
    monkeypatch.setitem(cli.commands, "many-findings", many_findings)
    monkeypatch.chdir(tmp_path)
    RAN.clear()

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["many-findings", *args])
        out, err = capsys.readouterr()
        return exc.value.code, out, err

    return invoke


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- -o: repeatable, format per extension, 0600 -------------------------------------------------------------


def test_each_output_gets_the_format_of_its_extension(run, tmp_path: Path) -> None:
    code, out, err = run("-o", "r.sarif", "-o", "r.html", "-o", "r.json", "-o", "r.md", "-o", "r.txt")
    assert code == 1 and out == ""
    assert json.loads((tmp_path / "r.sarif").read_text())["version"] == "2.1.0"
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert json.loads((tmp_path / "r.json").read_text())["tool"]["command"] == "many-findings"
    assert (tmp_path / "r.md").read_text().startswith("# ollama-guard many-findings report")
    table = (tmp_path / "r.txt").read_text()
    assert "admin open" in table and "\x1b[" not in table
    # one closing line: what was written where, with the count by severity
    assert err.strip().splitlines() == [
        "ollama-guard: wrote r.sarif, r.html, r.json, r.md, r.txt: 1 critical, 2 high, 1 medium, 1 low"
    ]


def test_reports_are_written_owner_only_even_over_a_readable_file(run, tmp_path: Path) -> None:
    old = tmp_path / "r.json"
    old.write_text("old")
    old.chmod(0o644)
    run("-o", "r.json", "-o", "new.html")
    assert _mode(old) == 0o600 and _mode(tmp_path / "new.html") == 0o600
    assert json.loads(old.read_text())["findings"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


def test_a_symlink_at_the_output_path_is_replaced_not_followed(run, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "r.json").symlink_to(victim)
    run("-o", "r.json")
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "r.json").is_symlink() and _mode(tmp_path / "r.json") == 0o600


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_pipe_or_device_is_written_through(run, tmp_path: Path) -> None:
    code, _, err = run("-o", "/dev/null", "--format", "json")
    assert code == 1 and "wrote /dev/null" in err
    assert Path("/dev/null").is_char_device()


@pytest.mark.parametrize("name", ["report.pdf", "report", "report.xml"])
def test_unknown_extension_is_a_usage_error_before_any_work(run, tmp_path: Path, name: str) -> None:
    code, out, err = run("-o", "fine.json", "-o", name)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "--format" in lines[0] and "Traceback" not in err
    assert RAN == [] and not (tmp_path / "fine.json").exists()


def test_format_option_makes_any_extension_acceptable(run, tmp_path: Path) -> None:
    code, _, _ = run("-o", "report.pdf", "--format", "json")
    assert code == 1 and json.loads((tmp_path / "report.pdf").read_text())["findings"]


def test_quiet_drops_the_closing_line(run, tmp_path: Path) -> None:
    code, _, err = run("-o", "r.json", "-q")
    assert code == 1 and err == "" and (tmp_path / "r.json").exists()


def test_no_closing_line_when_the_report_goes_to_stdout(run) -> None:
    _, out, err = run("--format", "json")
    assert json.loads(out)["summary"]["total"] == 5 and err == ""


# --- --severity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rules", "code"),
    [
        ("critical,high", {"unauthenticated-admin", "cors-any-origin"}, 1),
        ("medium+", {"unauthenticated-admin", "cors-any-origin", "model-enumeration"}, 1),
        ("low", {"plaintext-http"}, 0),  # the exit code follows the findings reported
        ("HIGH", {"cors-any-origin"}, 1),
    ],
)
def test_severity_filter(run, value: str, rules: set[str], code: int) -> None:
    got, out, _ = run("--format", "json", "--severity", value)
    doc = json.loads(out)
    assert {f["rule"] for f in doc["findings"]} == rules and got == code
    assert doc["summary"]["not_shown"] == 5 - len(doc["findings"])
    assert doc["summary"]["total"] == len(doc["findings"])


@pytest.mark.parametrize("value", ["severe", "high,", "", "+", "high+,low", "urgent+"])
def test_bad_severity_filter_is_a_usage_error(run, value: str) -> None:
    code, out, err = run("--format", "json", "--severity", value)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and RAN == []


# --- the ignore file ---------------------------------------------------------------------------------------


def _future(days: int = 30) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def test_default_ignore_file_in_the_working_directory(run, tmp_path: Path) -> None:
    (tmp_path / ".ollama-guard-ignore").write_text(
        "# accepted findings\n"
        f"unauthenticated-admin  10.0.0.7:*   {_future()}  lab box behind the edge firewall (CHG-1)\n"
        "cors-any-origin  [::1]:11434  never  loopback only, reviewed\n"
    )
    code, out, _ = run("--format", "json")
    doc = json.loads(out)
    left = {(f["rule"], f["target"]) for f in doc["findings"]}
    assert ("unauthenticated-admin", "10.0.0.7:11434") not in left
    assert ("cors-any-origin", "[::1]:11434") not in left  # brackets are literal, not a glob class
    assert ("cors-any-origin", "10.0.0.7:11434") in left
    assert doc["summary"]["ignored"] == 2 and doc["summary"]["critical"] == 0
    assert {i["ignored"]["reason"] for i in doc["ignored"]} == {"lab box behind the edge firewall (CHG-1)",
                                                     "loopback only, reviewed"}
    assert code == 1  # the high one that is left still fails


def test_ignored_findings_leave_the_exit_code_and_are_counted_in_the_closing_line(
    run, tmp_path: Path
) -> None:
    (tmp_path / "accepted").write_text(
        f'*  "10.0.0.*"  {_future()}  whole lab subnet accepted\n'
        f"cors-any-origin  [::1]:*  {_future()}  loopback only\n"
    )
    code, _, err = run("--ignore-file", "accepted", "-o", "r.json", "--fail-on", "info")
    assert code == 0  # everything found is accepted: nothing fails the run
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["findings"] == [] and doc["summary"]["ignored"] == 5
    assert err.strip() == "ollama-guard: wrote r.json: no findings (5 ignored)"
    (tmp_path / "accepted").write_text(f'*  "10.0.0.*"  {_future()}  whole lab subnet accepted\n')
    code, _, err = run("--ignore-file", "accepted", "-o", "r.json")
    assert code == 1 and err.strip() == "ollama-guard: wrote r.json: 1 high (4 ignored)"


def test_expired_entries_stop_applying_and_are_warned_about(run, tmp_path: Path) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    today = datetime.now(UTC).date().isoformat()
    (tmp_path / ".ollama-guard-ignore").write_text(
        f"unauthenticated-admin  *  {yesterday}  was accepted until the upgrade\n"
        f"plaintext-http  *  {today}  last day of the acceptance\n"
    )
    _, out, err = run("--format", "json")
    doc = json.loads(out)
    rules = {f["rule"] for f in doc["findings"]}
    assert "unauthenticated-admin" in rules and "plaintext-http" not in rules
    assert doc["summary"]["ignored"] == 1
    warning = [line for line in err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and ".ollama-guard-ignore:1" in warning[0] and yesterday in warning[0]
    _, _, quiet_err = run("--format", "json", "-q")
    assert quiet_err.strip() == warning[0]  # -q silences notes, never this warning


@pytest.mark.parametrize(
    "line",
    [
        "unauthenticated-admin 10.0.0.7:11434 2027-01-01",  # no reason
        "unauthenticated-admin 10.0.0.7:11434 tomorrow accepted",  # bad date
        "unauthenticated-admin",
    ],
)
def test_malformed_ignore_entries_are_a_one_line_error(run, tmp_path: Path, line: str) -> None:
    (tmp_path / ".ollama-guard-ignore").write_text(f"# header\n{line}\n")
    code, out, err = run("--format", "json")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and ".ollama-guard-ignore:2" in err


def test_missing_explicit_ignore_file_is_a_usage_error(run) -> None:
    code, _, err = run("--ignore-file", "nope", "--format", "json")
    assert code == 2 and "nope" in err and RAN == []


def test_scan_hosts_lists_agree_with_the_filtered_findings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    @click.command("host-report")
    @report_options
    @click.pass_context
    def host_report(ctx: click.Context, fmt: str | None, output: tuple[Path, ...], fail_on: str) -> None:
        findings = _findings()
        data = {"hosts": [{"target": "10.0.0.7:11434", "findings": [f.to_json() for f in findings[:2]]}]}
        ctx.exit(emit_report(Report(command="scan", findings=findings, data=data), fmt, output, fail_on))

    monkeypatch.setitem(cli.commands, "host-report", host_report)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".ollama-guard-ignore").write_text(f"unauthenticated-admin 10.0.0.7:* {_future()} accepted\n")
    with pytest.raises(SystemExit):
        main(["host-report", "--format", "json", "--severity", "critical,high"])
    doc = json.loads(capsys.readouterr().out)
    assert [f["rule"] for f in doc["hosts"][0]["findings"]] == ["cors-any-origin"]
    assert {f["rule"] for f in doc["findings"]} == {"cors-any-origin"}


@pytest.mark.parametrize(
    ("entry_target", "finding_target", "applies"),
    [
        ("10.0.0.7:11434", "10.0.0.7:11434", True),
        ("10.0.0.7", "10.0.0.7:11434", False),  # the whole target must match, not a prefix
        ("10.0.0.7:11434", "10.0.0.77:11434", False),
        ("10.0.0.7:11434", "10a0.0.7:11434", False),  # a dot is a dot, not "any character"
        ("*.7:11434", "10.0.0.7:11434", True),
        ("10.0.0.?:11434", "10.0.0.7:11434", True),
        ("10.0.0.?:11434", "10.0.0.17:11434", False),
        ("[::1]:11434", "[::1]:11434", True),
        ("[::1]:11434", ":11434", False),
    ],
)
def test_ignore_targets_match_whole_and_literally(
    entry_target: str, finding_target: str, applies: bool
) -> None:
    from ollama_guard.ignorefile import IgnoreEntry

    entry = IgnoreEntry("cors-any-origin", entry_target, None, "why", "f:1")
    finding = Finding(rule="cors-any-origin", severity="high", target=finding_target, title="t")
    assert entry.matches(finding) is applies
    assert not IgnoreEntry("cors-any", entry_target, None, "why", "f:1").matches(finding)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"# " + b"x" * (1 << 20) + b"\n", "larger than"), (b"cors-any-origin * never \xff\xfe\n", "UTF-8")],
)
def test_oversized_or_binary_ignore_files_are_refused(
    run, tmp_path: Path, content: bytes, message: str
) -> None:
    (tmp_path / ".ollama-guard-ignore").write_bytes(content)
    code, out, err = run("--format", "json")
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_sarif_keeps_accepted_findings_as_suppressed_results(run, tmp_path: Path) -> None:
    import jsonschema

    (tmp_path / ".ollama-guard-ignore").write_text(
        f"unauthenticated-admin 10.0.0.7:* {_future()} lab box behind the edge firewall (CHG-1)\n"
    )
    code, _, err = run("-o", "r.sarif")
    assert code == 1 and "(1 ignored)" in err
    doc = json.loads((tmp_path / "r.sarif").read_text())
    schema = json.loads((Path(__file__).parent / "data" / "sarif-schema-2.1.0.json").read_text())
    jsonschema.validate(doc, schema)
    results = doc["runs"][0]["results"]
    suppressed = [r for r in results if r.get("suppressions")]
    assert [r["ruleId"] for r in suppressed] == ["unauthenticated-admin"]
    assert suppressed[0]["suppressions"][0]["kind"] == "external"
    assert suppressed[0]["suppressions"][0]["justification"] == "lab box behind the edge firewall (CHG-1)"
    assert len(results) == 5 and sum(1 for r in results if not r.get("suppressions")) == 4
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert rules[suppressed[0]["ruleIndex"]]["id"] == "unauthenticated-admin"


@pytest.mark.parametrize(("fmt", "ext"), [("html", "html"), ("markdown", "md"), ("table", "txt")])
def test_human_reports_list_the_accepted_findings_with_their_reason(
    run, tmp_path: Path, fmt: str, ext: str
) -> None:
    (tmp_path / ".ollama-guard-ignore").write_text(
        f"unauthenticated-admin 10.0.0.7:* {_future()} lab box behind the edge firewall\n"
    )
    run("-o", f"r.{ext}")
    text = (tmp_path / f"r.{ext}").read_text()
    assert "Accepted findings (.ollama-guard-ignore)" in text
    assert "lab box behind the edge firewall" in " ".join(text.split())


def test_closing_line_counts_what_severity_left_out(run, tmp_path: Path) -> None:
    code, _, err = run("-o", "r.json", "--severity", "critical")
    assert code == 1 and err.strip() == "ollama-guard: wrote r.json: 1 critical (4 below --severity)"


def test_verify_says_where_it_saved_the_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ollama_guard.decoy.fabricate import fabricate, install
    from ollama_guard.ollama.names import parse_model_name
    from ollama_guard.ollama.store import ModelStore
    from support.cli import run_cli

    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OLLAMA_GUARD_BASELINE_KEY", raising=False)
    store = ModelStore(tmp_path / "models")
    store.ensure()
    install(store, fabricate(parse_model_name("llama3.2:1b")))
    args = ("verify", "--models-dir", str(tmp_path / "models"), "--save-baseline", str(tmp_path / "b.json"))
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0 and json.loads(out)["findings"] == []
    assert err.strip() == f"ollama-guard: wrote baseline {tmp_path / 'b.json'}"
    code, _, err = run_cli(capsys, *args, "--format", "json", "-q")
    assert code == 0 and err == ""


def test_ignoring_is_said_on_stderr_when_the_report_goes_to_stdout(run, tmp_path: Path) -> None:
    (tmp_path / ".ollama-guard-ignore").write_text(f"plaintext-http * {_future()} internal network only\n")
    _, out, err = run("--format", "json")
    assert json.loads(out)["summary"]["ignored"] == 1
    assert err.strip() == "ollama-guard: 1 accepted finding(s) left out by .ollama-guard-ignore"
    _, _, err = run("--format", "json", "-q")
    assert err == ""
