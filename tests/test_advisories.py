"""The shipped advisory table and the `advisories` command."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ollama_guard.cli import cli
from ollama_guard.findings import Severity
from ollama_guard.ollama.advisories import (
    Advisory,
    AffectedRange,
    advisories_for,
    get_advisory,
    latest_fixed_version,
    load_advisories,
)
from ollama_guard.ollama.versions import InvalidVersion, OllamaVersion, parse_version

REQUIRED_IDS = {
    "CVE-2024-28224", "CVE-2024-37032", "CVE-2024-39719", "CVE-2024-39720", "CVE-2024-39721",
    "CVE-2024-39722", "CVE-2024-45436", "CVE-2024-8063", "CVE-2024-12055", "CVE-2024-12886",
    "CVE-2025-0312", "CVE-2025-0315", "CVE-2025-0317", "CVE-2025-1975", "CVE-2025-44779",
    "CVE-2025-51471", "CVE-2025-63389", "CVE-2026-7482", "CVE-2026-7020", "CNVD-2025-04094",
    "OLLAMA-ISSUE-13223", "OLLAMA-OLIGO-PULL-PUSH",
}  # fmt: skip


def ids(advisories: list[Advisory]) -> set[str]:
    return {a.id for a in advisories}


def test_table_has_every_researched_advisory_and_is_well_formed():
    table = load_advisories()
    assert ids(table) == REQUIRED_IDS
    for a in table:
        assert a.title and a.mechanism and a.references and a.affected
        assert all(r.startswith("https://") for r in a.references)
        assert isinstance(a.severity, Severity)
        if a.fixed is not None:
            parse_version(a.fixed)
            # the fixed version itself is never affected
            assert not a.affects(a.fixed), a.id
    # worst first
    ranks = [a.severity.rank for a in table]
    assert ranks == sorted(ranks, reverse=True)


def test_contract_examples():
    assert "CVE-2024-37032" in ids(advisories_for("0.1.33"))
    assert "CVE-2024-28224" not in ids(advisories_for("0.1.33"))
    assert "CVE-2024-28224" in ids(advisories_for("0.1.28"))
    assert "CVE-2026-7482" in ids(advisories_for("0.17.0"))
    assert "CVE-2026-7482" not in ids(advisories_for("0.17.1"))
    assert "CVE-2024-37032" not in ids(advisories_for("v0.1.34"))


def test_cve_2025_44779_uses_the_wider_vulndb_range():
    a = get_advisory("CVE-2025-44779")
    assert a.affects("0.1.33")
    assert not a.affects("0.1.34")
    assert a.affects("0.1.32")  # Go vulndb: every version before 0.1.34 (CVE record: only 0.1.33)
    assert "conflict" in a.notes.lower()


def test_last_affected_and_introduced_ranges():
    a = get_advisory("CVE-2024-39719")
    assert a.affects("0.3.14") and not a.affects("0.3.15") and not a.affects("0.4.0")
    issue = get_advisory("OLLAMA-ISSUE-13223")
    assert not issue.affects("0.5.4") and issue.affects("0.5.5") and issue.affects("0.17.5")
    assert not issue.affects("0.17.6")


def test_prereleases_of_the_fix_and_dev_builds():
    probllama = get_advisory("CVE-2024-37032")
    assert probllama.affects("0.1.34-rc1")  # a pre-release of the fixed version counts as affected
    assert probllama.affects("0.1.33-5-gabc1234")
    assert not probllama.affects("0.0.0")  # dev build: newest
    dev = ids(advisories_for("0.0.0"))
    assert "CVE-2025-63389" in dev  # no fix exists: still listed
    assert all(a.fixed is None for a in advisories_for("0.0.0"))


def test_lookup_by_alias_and_bad_versions():
    assert get_advisory("GHSA-8hqg-whrw-pv92").id == "CVE-2024-37032"
    assert get_advisory("probllama").id == "CVE-2024-37032"
    assert get_advisory("go-2026-5748").id == "CVE-2026-7482"
    with pytest.raises(KeyError):
        get_advisory("CVE-1999-0001")
    with pytest.raises(InvalidVersion):
        advisories_for("latest")
    assert latest_fixed_version() >= parse_version("0.17.6")


def _boundaries():
    """(advisory id, version, expected) for every bound in the shipped data."""
    out = []
    for a in load_advisories():
        for r in a.ranges:
            if r.introduced != "0":
                low = parse_version(r.introduced)
                out.append((a.id, r.introduced, True))
                if low.patch > 0:
                    out.append((a.id, f"{low.major}.{low.minor}.{low.patch - 1}", False))
            else:
                out.append((a.id, "0.0.1", True))
            if r.fixed is not None:
                fixed = parse_version(r.fixed)
                out.append((a.id, r.fixed, False))
                out.append((a.id, f"{fixed.major}.{fixed.minor}.{fixed.patch + 1}", False))
                out.append((a.id, f"{r.fixed}-rc0", True))
                if fixed.patch > 0:
                    out.append((a.id, f"{fixed.major}.{fixed.minor}.{fixed.patch - 1}", True))
            elif r.last_affected is not None:
                last = parse_version(r.last_affected)
                out.append((a.id, r.last_affected, True))
                out.append((a.id, f"{last.major}.{last.minor}.{last.patch + 1}", False))
            else:
                out.append((a.id, "99.0.0", True))
                out.append((a.id, "0.0.0", True))
    return out


@pytest.mark.parametrize(("advisory_id", "version", "expected"), _boundaries())
def test_every_boundary_in_the_data(advisory_id, version, expected):
    a = get_advisory(advisory_id)
    assert a.affects(version) is expected
    assert (advisory_id in ids(advisories_for(version))) is expected


def test_range_validation():
    with pytest.raises(ValueError):
        AffectedRange(introduced="0.2.0", fixed="0.1.0")
    with pytest.raises(ValueError):
        AffectedRange(fixed="0.1.0", last_affected="0.1.0")
    with pytest.raises(ValueError):
        AffectedRange(fixed="soon")
    r = AffectedRange(introduced="0.5.5", fixed="0.17.6")
    assert r.describe() == ">= 0.5.5, < 0.17.6"
    assert r.contains(OllamaVersion(0, 10, 0))


# --- CLI ---------------------------------------------------------------------------------------------------


def test_cli_json_lists_everything():
    result = CliRunner().invoke(cli, ["advisories", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {item["id"] for item in data} == REQUIRED_IDS
    first = data[0]
    for key in ("id", "aliases", "severity", "affected", "fixed", "title", "references", "ranges", "notes"):
        assert key in first


def test_cli_version_filter_json():
    result = CliRunner().invoke(cli, ["advisories", "--version", "0.1.33", "--format", "json"])
    assert result.exit_code == 0
    listed = {item["id"] for item in json.loads(result.output)}
    assert "CVE-2024-37032" in listed and "CVE-2024-28224" not in listed
    result = CliRunner().invoke(cli, ["advisories", "--version", "v0.17.1", "--format", "json"])
    assert "CVE-2026-7482" not in {item["id"] for item in json.loads(result.output)}


def test_cli_table_shows_ids_and_caption():
    result = CliRunner().invoke(cli, ["advisories", "--version", "0.17.0", "--format", "table"])
    assert result.exit_code == 0
    assert "CVE-2026-7482" in result.output and "0.17.1" in result.output
    assert "CVE-2024-37032" not in result.output
    assert "affect Ollama 0.17.0" in result.output


def test_cli_default_format_off_terminal_is_json():
    result = CliRunner().invoke(cli, ["advisories", "--version", "0.17.0"])
    assert json.loads(result.output)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ollama_guard", "advisories", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_version_is_a_one_line_usage_error():
    proc = _run("--version", "not-a-version")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not-a-version" in lines[0]
    assert "Traceback" not in proc.stderr


def test_cli_subprocess_json():
    proc = _run("--version", "0.17.0", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "CVE-2026-7482" in {item["id"] for item in json.loads(proc.stdout)}


# --- confirmed vs possibly affected -------------------------------------------------------------


def test_unfixed_advisory_is_confirmed_up_to_the_reported_version_and_low_after() -> None:
    from ollama_guard.ollama.advisories import get_advisory

    adv = get_advisory("CVE-2024-12055")  # sources report <= 0.3.14; no fix published
    assert adv.affects("0.3.14") and adv.affects("0.33.0")  # the conservative range stays open
    assert adv.confirmed_for("0.3.14") and adv.severity_for("0.3.14") is Severity.HIGH
    assert not adv.confirmed_for("0.3.15") and adv.severity_for("0.3.15") is Severity.LOW
    assert "0.3.14" in adv.confidence_note("0.4.0")
    assert adv.confidence_note("0.3.14") == ""


def test_code_evidence_of_a_fix_lowers_the_severity_from_that_version() -> None:
    from ollama_guard.ollama.advisories import get_advisory

    adv = get_advisory("CVE-2025-51471")  # likely fixed in 0.14.3 (commit history)
    assert adv.severity_for("0.6.7") is adv.severity
    assert adv.severity_for("0.14.3") is Severity.LOW
    assert "0.14.3" in adv.confidence_note("0.20.0")


def test_missing_auth_advisories_are_marked_as_requiring_an_open_api() -> None:
    from ollama_guard.ollama.advisories import load_advisories

    open_api = {a.id for a in load_advisories() if a.requires_open_api}
    assert {"CVE-2025-63389", "CNVD-2025-04094"} <= open_api
    assert "CVE-2024-37032" not in open_api
