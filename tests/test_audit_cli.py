"""`ollama-guard audit` and `ollama-guard harden` from the command line: formats, exit codes, errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from support.cli import run_cli

SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run_cli(capsys, *argv)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def exposed_root(root: Path) -> Path:
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n")
    write(
        root, "etc/systemd/system/ollama.service", "[Service]\nExecStart=/usr/bin/ollama serve\nUser=ollama\n"
    )
    write(
        root,
        "etc/systemd/system/ollama.service.d/override.conf",
        '[Service]\nEnvironment="OLLAMA_HOST=0.0.0.0"\n',
    )
    return root


def loopback_root(root: Path) -> Path:
    write(root, "etc/passwd", "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n")
    write(
        root, "etc/systemd/system/ollama.service", "[Service]\nExecStart=/usr/bin/ollama serve\nUser=ollama\n"
    )
    write(
        root,
        "etc/systemd/system/ollama.service.d/dbg.conf",
        "[Service]\nEnvironment=OLLAMA_DEBUG_LOG_REQUESTS=1\n",
    )
    return root


def test_json_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["audit", "--root", str(exposed_root(tmp_path)), "--format", "json"], capsys)
    assert code == 1
    doc = json.loads(out)
    finding = next(f for f in doc["findings"] if f["rule"] == "exposed-bind")
    assert set(finding) == {
        "rule",
        "severity",
        "target",
        "title",
        "detail",
        "evidence",
        "remediation",
        "references",
    }
    assert finding["severity"] == "high" and finding["target"] == "systemd:ollama.service"
    assert doc["audit"]["posture"] == "exposed" and doc["audit"]["live"] is False
    assert "exposed-bind" in doc["audit"]["checks"]


@pytest.mark.parametrize(("fail_on", "expected"), [("high", 0), ("medium", 1), ("critical", 0), ("never", 0)])
def test_exit_code_follows_fail_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fail_on: str, expected: int
) -> None:
    # worst finding here: debug-request-logging (medium)
    root = loopback_root(tmp_path)
    code, out, _ = run(["audit", "--root", str(root), "--format", "json", "--fail-on", fail_on], capsys)
    assert code == expected
    assert (
        max(
            json.loads(out)["findings"],
            key=lambda f: ["info", "low", "medium", "high", "critical"].index(f["severity"]),
        )["severity"]
        == "medium"
    )


def test_exposed_root_fails_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = run(["audit", "--root", str(exposed_root(tmp_path)), "--format", "json"], capsys)
    assert code == 1


def test_nonexistent_root_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["audit", "--root", str(tmp_path / "nope"), "--format", "json"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "nope" in err and "Traceback" not in err


def test_bad_version_and_missing_compose_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["audit", "--root", str(tmp_path), "--ollama-version", "banana"], capsys)
    assert code == 2 and "banana" in err
    code, _, err = run(["audit", "--root", str(tmp_path), "--compose", str(tmp_path / "x.yml")], capsys)
    assert code == 2 and "x.yml" in err


def test_sarif_output_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "audit.sarif"
    root = exposed_root(tmp_path / "root")
    code, _, _ = run(
        ["audit", "--root", str(root), "--ollama-version", "0.1.30", "-o", str(out_file)], capsys
    )
    assert code == 1
    doc = json.loads(out_file.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    rule_ids = {r["ruleId"] for r in doc["runs"][0]["results"]}
    assert {"exposed-bind", "outdated-version", "CVE-2024-37032"} <= rule_ids


def test_harden_writes_files_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = exposed_root(tmp_path / "root")
    before = {p: (p.read_bytes(), p.stat().st_mode) for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "plan"
    code, stdout, _ = run(["harden", "--root", str(root), "--out", str(out)], capsys)
    assert code == 0
    assert "nothing has been applied" in stdout
    assert {p: (p.read_bytes(), p.stat().st_mode) for p in root.rglob("*") if p.is_file()} == before
    dropin = out / "files/etc/systemd/system/ollama.service.d/zz-ollama-guard.conf"
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in dropin.read_text()
    plan = (out / "plan.md").read_text()
    assert "Impact" in plan and "zz-ollama-guard.conf" in plan
    key_cmd = (out / "gateway/create-admin-key.sh").read_text()
    assert "ollama-guard keys create admin --role admin" in key_cmd
    gateway = tomllib.loads((out / "gateway/config.toml").read_text())["gateway"]
    assert gateway["upstream"] == "http://127.0.0.1:11434" and gateway["push_registries"] == []
    assert "tcp dport { 11434 } drop" in (out / "firewall/nftables.conf").read_text()
    assert json.loads((out / "audit.json").read_text())["findings"]
    # a second run refuses to mix into a non-empty directory
    code, _, err = run(["harden", "--root", str(root), "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err


def test_harden_gateway_config_is_accepted_by_the_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_mod = pytest.importorskip("ollama_guard.gateway.config")
    out = tmp_path / "plan"
    code, _, _ = run(["harden", "--root", str(exposed_root(tmp_path / "root")), "--out", str(out)], capsys)
    assert code == 0
    table = tomllib.loads((out / "gateway/config.toml").read_text())["gateway"]
    cfg = config_mod.GatewayConfig.model_validate(table)
    assert cfg.listen == "0.0.0.0:11435" and not cfg.allow_cloud


def test_harden_refuses_out_inside_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = exposed_root(tmp_path)
    code, _, err = run(["harden", "--root", str(root), "--out", str(root / "plan")], capsys)
    assert code == 2 and "inside --root" in err
    assert not (root / "plan").exists()


def test_audit_fix_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan"
    code, stdout, _ = run(
        ["audit", "--root", str(exposed_root(tmp_path / "r")), "--format", "json", "--fix-plan", str(out)],
        capsys,
    )
    assert code == 1 and json.loads(stdout)["findings"]
    assert (out / "plan.md").is_file()


def test_live_audit_runs_and_emits_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["audit", "--format", "json", "--fail-on", "never"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["audit"]["live"] is True and isinstance(doc["findings"], list)


def test_missing_models_dir_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["audit", "--root", str(tmp_path), "--models-dir", "/srv/models"], capsys)
    assert code == 2 and out == "" and "/srv/models" in err and len(err.strip().splitlines()) == 1


def test_every_check_is_documented() -> None:
    from ollama_guard.audit.registry import all_checks

    doc = (Path(__file__).parent.parent / "docs/audit.md").read_text()
    ids = [c.meta.id for c in all_checks()]
    assert {
        "exposed-bind",
        "cors-any-origin",
        "listening-exposed",
        "outdated-version",
        "store-permissions",
        "cloud-enabled",
    } <= set(ids)
    for check_id in ids:
        if check_id != "advisory":
            assert f"### `{check_id}`" in doc, check_id
