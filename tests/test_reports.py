"""Report renderers: JSON shape, valid SARIF 2.1.0, escaped HTML/Markdown, the terminal table, and the
shared -o/--format/--fail-on handling."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import click
import jsonschema
import pytest

from ollama_guard.cli import cli, main
from ollama_guard.cli_common import emit_report, report_options, resolve_format
from ollama_guard.errors import InputError
from ollama_guard.findings import Finding, Report, ReportSection, Severity
from ollama_guard.reports import FORMATS, render
from ollama_guard.reports.markdown import md_escape
from ollama_guard.reports.sarif import FINGERPRINT_KEY, sarif_document
from ollama_guard.reports.table import render_table

SCHEMA_PATH = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
XSS = "<script>alert('x')</script>"


def _finding(rule: str, severity: str, target: str = "127.0.0.1:11434", **kw) -> Finding:
    return Finding(rule=rule, severity=severity, target=target, title=kw.pop("title", f"{rule} found"), **kw)


def sample_report() -> Report:
    return Report(
        command="audit",
        findings=[
            _finding("model-enumeration", "low", target="10.0.0.7:11434"),
            _finding(
                "exposed-bind",
                "high",
                target="localhost",
                detail="OLLAMA_HOST=0.0.0.0:11434",
                evidence={"path": "/etc/systemd/system/ollama.service.d/override.conf", "line": 3},
                remediation="Set OLLAMA_HOST=127.0.0.1:11434",
                references=["https://docs.ollama.com/faq"],
            ),
            _finding("unauthenticated-admin", "critical", evidence={"status": 200, "endpoint": "/api/pull"}),
            _finding("CVE-2024-37032", "critical", title="Probllama", evidence={"version": "0.1.33"}),
            _finding(
                "store-permissions", "medium", target="localhost", evidence={"path": "models dir/blobs"}
            ),
            _finding(
                "cloud-enabled", "info", target="localhost", evidence={"path": "C:\\Users\\me\\.ollama"}
            ),
            _finding(
                "exposed-bind",
                "medium",
                target="localhost",
                title="compose publishes 11434",
                evidence={
                    "path": "docker-compose.yml",
                    "line": 0,
                    "when": datetime(2026, 1, 1, tzinfo=UTC),
                    "file": Path("/x/y"),
                    "ports": {11434},
                },
            ),
        ],
        summary={"checks": 12, "root": "/"},
        sections=[ReportSection(title="Checks run", columns=["check", "result"], rows=[["bind", "fail"]])],
        data={"host": "myhost", "findings": "must not override", "tool": "nor this"},
        started_at=datetime(2026, 11, 30, 4, 0, 0, tzinfo=UTC),
        finished_at=datetime(2026, 11, 30, 4, 0, 5, tzinfo=UTC),
    )


# --- SARIF -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_schema_copy_matches_the_shared_one_when_present():
    shared = Path(__file__).resolve().parents[2] / "shared/data/sarif-schema-2.1.0.json"
    if not shared.exists():
        pytest.skip("shared/ is not next to this checkout")
    assert json.loads(shared.read_text()) == json.loads(SCHEMA_PATH.read_text())


@pytest.mark.parametrize("report", [sample_report(), Report(command="scan")], ids=["findings", "empty"])
def test_sarif_is_valid_against_the_2_1_0_schema(sarif_validator, report):
    doc = json.loads(render(report, "sarif"))
    errors = sorted(sarif_validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    assert doc["version"] == "2.1.0"
    assert len(doc["runs"]) == 1
    assert doc["runs"][0]["results"] == [] or report.findings


def test_sarif_rules_results_levels_and_fingerprints():
    report = sample_report()
    doc = sarif_document(report)
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert (
        driver["name"] == "ollama-guard"
        and driver["version"]
        and driver["informationUri"].startswith("https://")
    )
    rule_ids = [r["id"] for r in driver["rules"]]
    assert sorted(rule_ids) == sorted({f.rule for f in report.findings})  # one rule per distinct id
    exposed = next(r for r in driver["rules"] if r["id"] == "exposed-bind")
    assert exposed["properties"]["security-severity"] == "8.0"  # worst of its findings (high)
    assert exposed["defaultConfiguration"]["level"] == "error"
    assert exposed["shortDescription"]["text"] and exposed["help"]["text"]
    assert "security" in exposed["properties"]["tags"]
    levels = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
    assert len(run["results"]) == len(report.findings)
    for result in run["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        sev = result["properties"]["severity"]
        assert result["level"] == levels[sev]
        assert result["properties"]["target"] in result["message"]["text"]
    fingerprints = {r["partialFingerprints"][FINGERPRINT_KEY] for r in run["results"]}
    assert fingerprints == {f.fingerprint() for f in report.findings}
    # stable across runs
    again = sarif_document(sample_report())
    assert [r["partialFingerprints"] for r in again["runs"][0]["results"]] == [
        r["partialFingerprints"] for r in run["results"]
    ]


def test_sarif_locations():
    results = sarif_document(sample_report())["runs"][0]["results"]
    by_rule_target = {(r["ruleId"], r["properties"]["severity"]): r["locations"][0] for r in results}
    phys = by_rule_target[("exposed-bind", "high")]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == "file:///etc/systemd/system/ollama.service.d/override.conf"
    assert phys["region"] == {"startLine": 3}
    rel = by_rule_target[("store-permissions", "medium")]["physicalLocation"]["artifactLocation"]["uri"]
    assert rel == "models%20dir/blobs"
    win = by_rule_target[("cloud-enabled", "info")]["physicalLocation"]["artifactLocation"]["uri"]
    assert win == "file:///C:/Users/me/.ollama"
    compose = by_rule_target[("exposed-bind", "medium")]["physicalLocation"]
    assert "region" not in compose  # line 0 is not a valid SARIF line
    logical = by_rule_target[("unauthenticated-admin", "critical")]["logicalLocations"][0]
    assert logical["name"] == "127.0.0.1:11434"


# --- JSON --------------------------------------------------------------------------------------------------


def test_json_shape_and_key_order():
    text = render(sample_report(), "json")
    assert text.endswith("\n") and text.startswith('{\n  "tool"')  # indent 2
    doc = json.loads(text)
    assert list(doc) == ["tool", "host", "findings", "summary", "started_at", "finished_at"]
    assert doc["tool"] == {"name": "ollama-guard", "version": doc["tool"]["version"], "command": "audit"}
    assert isinstance(doc["findings"], list) and len(doc["findings"]) == 7
    severities = [f["severity"] for f in doc["findings"]]
    assert severities == sorted(severities, key=lambda s: -Severity(s).rank)
    assert set(doc["findings"][0]) == {"rule", "severity", "target", "title", "detail", "evidence",
                                       "remediation", "references"}  # fmt: skip
    assert doc["summary"] == {"total": 7, "critical": 2, "high": 1, "medium": 2, "low": 1, "info": 1,
                              "checks": 12, "root": "/"}  # fmt: skip
    assert doc["started_at"] == "2026-11-30T04:00:00.000Z"
    assert doc["finished_at"] == "2026-11-30T04:00:05.000Z"
    assert render(sample_report(), "json") == text  # deterministic


def test_json_handles_non_json_evidence_and_unfinished_reports():
    report = Report(command="scan", findings=[_finding("x", "low", evidence={"p": Path("/a"), "s": {1}})])
    doc = json.loads(render(report, "json"))
    assert doc["findings"][0]["evidence"] == {"p": "/a", "s": [1]}
    assert doc["finished_at"].endswith("Z")


# --- HTML and Markdown -------------------------------------------------------------------------------------


def test_html_escapes_everything_and_orders_summary_findings_sections():
    report = sample_report()
    report.findings.append(
        _finding("xss", "high", title=XSS, detail=f"detail {XSS}", references=["javascript:alert(1)"])
    )
    report.sections.append(ReportSection(title=XSS, columns=[XSS], rows=[[XSS]]))
    html = render(report, "html")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert 'href="javascript:' not in html
    assert "Content-Security-Policy" in html
    assert html.index('id="summary"') < html.index('id="findings"') < html.index("Checks run")
    assert html.lstrip().startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_markdown_escapes_pipes_newlines_html_and_links():
    report = Report(
        command="scan",
        findings=[_finding("r|1", "high", title="a | b\nc [x](javascript:alert(1)) <b>")],
        sections=[ReportSection(title="Hosts", columns=["a|b", "c"], rows=[["1|2", "3"]])],
    )
    md = render(report, "markdown")
    row = next(line for line in md.splitlines() if line.startswith("| high | r"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 5  # 4 cells → 5 unescaped pipes
    assert "a \\| b<br>c \\[x\\](javascript:alert(1)) &lt;b&gt;" in row
    host_row = next(line for line in md.splitlines() if line.startswith("| 1"))
    assert host_row == "| 1\\|2 | 3 |"
    assert md_escape("x\r\ny") == "x<br>y"


def test_markdown_no_findings():
    md = render(Report(command="verify"), "markdown")
    assert "No findings." in md and md.startswith("# ollama-guard verify report")


# --- table -------------------------------------------------------------------------------------------------


def test_table_plain_text_contains_findings_sections_and_literal_markup():
    report = sample_report()
    report.findings.append(_finding("markup", "low", title="[bold red]not markup[/] \x1b[31mred"))
    text = render_table(report, width=120, color=False)
    assert "\x1b[" not in text  # no colour codes off a terminal, and hostile ANSI is stripped
    assert "[bold red]not markup[/]" in text
    for rule in ("exposed-bind", "unauthenticated-admin", "CVE-2024-37032"):
        assert rule in text
    assert "Checks run" in text and "checks" in text
    assert max(len(line) for line in text.splitlines()) <= 120
    assert text.index("CRITICAL") < text.index("HIGH") < text.index("MEDIUM") < text.index("LOW")


def test_table_colour_and_empty_report():
    coloured = render_table(sample_report(), width=100, color=True)
    assert "\x1b[" in coloured
    assert "No findings." in render(Report(command="scan"), "table")


def test_render_rejects_unknown_formats():
    assert set(FORMATS) == {"table", "json", "sarif", "html", "markdown"}
    with pytest.raises(InputError):
        render(Report(command="x"), "pdf")
    assert render(Report(command="x"), " JSON ").startswith("{")


# --- emit_report through a real command --------------------------------------------------------------------


@click.command("tiny-report")
@click.option("--level", "severity", default="critical")
@report_options
@click.pass_context
def tiny_report(
    ctx: click.Context, severity: str, fmt: str | None, output: tuple[Path, ...], fail_on: str
) -> None:
    report = Report(command="tiny-report", findings=[_finding("tiny", severity)])
    ctx.exit(emit_report(report, fmt, output, fail_on))


@pytest.fixture
def run_cli(monkeypatch):
    monkeypatch.setitem(cli.commands, "tiny-report", tiny_report)

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(["tiny-report", *args])
        return exc.value.code

    return run


def test_output_extension_picks_the_format(run_cli, tmp_path, sarif_validator):
    out = tmp_path / "report.sarif"
    assert run_cli("-o", str(out), "--fail-on", "never") == 0
    doc = json.loads(out.read_text())
    assert doc["version"] == "2.1.0" and not list(sarif_validator.iter_errors(doc))
    md = tmp_path / "r.md"
    run_cli("-o", str(md))
    assert md.read_text().startswith("# ollama-guard tiny-report report")
    html = tmp_path / "r.html"
    run_cli("-o", str(html))
    assert "<!DOCTYPE html>" in html.read_text()
    forced = tmp_path / "r.sarif"
    run_cli("-o", str(forced), "--format", "json")
    assert "tool" in json.loads(forced.read_text())
    assert resolve_format(None, Path("x.SARIF")) == "sarif"
    assert resolve_format(None, Path("x.txt")) == "table"  # plain text: the table, without colour
    with pytest.raises(click.UsageError):  # unknown extension: say so (was: silently JSON)
        resolve_format(None, Path("x.out"))
    assert resolve_format(None, Path("x.sarif.json")) == "sarif"
    assert resolve_format("Markdown", Path("x.sarif")) == "markdown"


@pytest.mark.parametrize(
    ("severity", "fail_on", "code"),
    [
        ("critical", None, 1),  # default --fail-on high
        ("high", None, 1),
        ("medium", None, 0),
        ("medium", "medium", 1),
        ("low", "medium", 0),
        ("info", "info", 1),
        ("critical", "never", 0),
        ("high", "critical", 0),
    ],
)
def test_fail_on_exit_codes(run_cli, capsys, severity, fail_on, code):
    args = ["--level", severity, "--format", "json"]
    if fail_on:
        args += ["--fail-on", fail_on]
    assert run_cli(*args) == code
    doc = json.loads(capsys.readouterr().out)
    assert doc["findings"][0]["severity"] == severity


def test_unwritable_output_is_a_one_line_error(run_cli, capsys, tmp_path):
    target = tmp_path / "missing-dir" / "report.json"
    assert run_cli("-o", str(target)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_output_that_is_a_directory_is_a_usage_error(run_cli, capsys, tmp_path):
    assert run_cli("-o", str(tmp_path)) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_schema_check_really_catches_broken_sarif(sarif_validator):
    doc = sarif_document(sample_report())
    doc["runs"][0]["results"][0]["level"] = "fatal"
    del doc["runs"][0]["tool"]["driver"]["name"]
    assert len(list(sarif_validator.iter_errors(doc))) >= 2


def test_render_colour_switch_for_files():
    assert "\x1b[" not in render(sample_report(), "table", color=False)
    assert "\x1b[" in render(sample_report(), "table", color=True)


def test_html_shows_control_characters_from_hostile_text_as_escapes() -> None:
    from ollama_guard.findings import Finding, Report, Severity
    from ollama_guard.reports import render

    hostile = Finding(
        rule="system-prompt-exposed",
        severity=Severity.MEDIUM,
        target="127.0.0.1:11434",
        title="prompt \x1b[2J\x1b]0;pwned\x07 leaked",
        evidence={"answer": "a\x00b\x9bc"},
    )
    page = render(Report(command="scan", findings=[hostile]), "html")
    assert "\x1b" not in page and "\x07" not in page and "\x00" not in page and "\x9b" not in page
    assert "\\x1b[2J" in page  # still visible to the reader, as text


def test_fail_on_choices_follow_the_severities() -> None:
    from ollama_guard.cli_common import FAIL_ON_CHOICES
    from ollama_guard.findings import Severity

    assert FAIL_ON_CHOICES == [s.value for s in Severity] + ["never"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_lead_sections_come_before_the_findings_and_the_rest_after(fmt: str) -> None:
    from ollama_guard.findings import Finding, Report, ReportSection, Severity
    from ollama_guard.reports import render

    report = Report(
        command="investigate",
        findings=[Finding(rule="recon-burst", severity=Severity.MEDIUM, target="203.0.113.7",
                          title="FINDING-TITLE")],
        sections=[
            ReportSection(title="TRAILING-STATS", columns=["a"], rows=[["1"]]),
            ReportSection(title="LEAD-TIMELINE", columns=["client"], rows=[["203.0.113.7"]], lead=True),
        ],
    )
    text = render(report, fmt)
    assert text.index("LEAD-TIMELINE") < text.index("FINDING-TITLE") < text.index("TRAILING-STATS")


# --- human text: summary values and backticks in every human format ----------------------------------------


def _human_report() -> Report:
    return Report(
        command="scan",
        summary={"interrupted": False, "unresolved": [], "services": {"ollama": 2, "vllm": 1},
                 "duration_seconds": 1.5, "note": None},
        findings=[_finding("exposed-bind", "critical", detail="Run `ollama serve` on loopback | only",
                           remediation="Add:\n```ini\n[Service]\nEnvironment=\"OLLAMA_HOST=127.0.0.1\"\n```\n")],
    )


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_summary_values_read_as_words_not_reprs(fmt: str) -> None:
    text = render(_human_report(), fmt, color=False)
    summary = text[text.index('id="summary"') : text.index('id="findings"')] if fmt == "html" else (
        text[: text.index("exposed-bind")]
    )
    for raw in ("False", "[]", "{", "None", '"ollama"', "'ollama'"):
        assert raw not in summary, (fmt, raw)
    assert "ollama 2, vllm 1" in summary and "duration seconds" in summary


def test_markdown_renders_backticks_as_code_spans() -> None:
    text = render(_human_report(), "markdown")
    assert "`ollama serve`" in text and "\\`" not in text
    assert '`[Service] Environment="OLLAMA_HOST=127.0.0.1"`' in text  # a fenced block: one code span
    assert "loopback \\| only" in text  # prose is still escaped


def test_table_shows_backticks_plain() -> None:
    text = render_table(_human_report(), width=120, color=False)
    assert "`" not in text and "ollama serve" in text and "[Service]" in text


@pytest.mark.parametrize(("rows", "width"), [(3, 80), (400, 200)])
def test_sections_too_wide_or_too_long_are_stacked_without_losing_anything(rows: int, width: int) -> None:
    digest = "sha256:" + "ab" * 32
    section = ReportSection(
        title="Timeline", lead=True, columns=["Client", "First seen", "Endpoints"],
        rows=[[f"198.51.100.{i % 250}", "2025-01-11T23:31:25Z", f"POST /api/blobs/{digest} ×{i}"]
              for i in range(rows)],
    )
    text = render_table(Report(command="investigate", sections=[section]), width=width, color=False)
    assert max(len(line) for line in text.splitlines()) <= width
    assert text.count("First seen  2025-01-11T23:31:25Z") == rows  # one block per row, value after name
    joined = "".join(text.split())
    for i in (0, rows - 1):
        assert f"POST/api/blobs/{digest}×{i}" in joined  # the long digest folds, nothing is cropped
