"""`audit --root`: fake filesystems with known problems; the findings, their fixes, and re-audits."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
from pathlib import Path

import pytest

from ollama_guard.audit.collect import AuditOptions
from ollama_guard.audit.fixes import ComposeFix, DropInFix, LineEditFix, render_compose_override
from ollama_guard.audit.harden import write_plan
from ollama_guard.audit.runner import AuditResult, run_audit
from ollama_guard.findings import Finding, Severity

INSTALLER_UNIT = """[Unit]
Description=Ollama Service
After=network-online.target

[Service]
ExecStart=/usr/local/bin/ollama serve
User=ollama
Group=ollama
Restart=always
RestartSec=3
Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"

[Install]
WantedBy=default.target
"""
PASSWD = "root:x:0:0:root:/root:/bin/bash\nollama:x:998:998::/usr/share/ollama:/bin/false\n"
UNIT = "etc/systemd/system/ollama.service"
DROPIN_DIR = "etc/systemd/system/ollama.service.d"
HOME = "usr/share/ollama/.ollama"


def write(root: Path, rel: str, text: str | bytes, mode: int | None = None) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def clean_root(root: Path) -> Path:
    """What the Linux installer leaves behind, with a model pulled."""
    write(root, UNIT, INSTALLER_UNIT)
    write(root, "etc/passwd", PASSWD)
    write(root, "etc/environment", 'PATH="/usr/local/bin:/usr/bin:/bin"\n')
    models = root / HOME / "models"
    for d in (root / "usr/share/ollama", root / HOME, models, models / "blobs", models / "manifests"):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)
    manifest = models / "manifests/registry.ollama.ai/library/llama3/latest"
    write(root, str(manifest.relative_to(root)), "{}", 0o644)
    write(root, f"{HOME}/models/blobs/sha256-" + "a" * 64, "weights", 0o644)
    write(root, f"{HOME}/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\n", 0o600)
    write(root, f"{HOME}/id_ed25519.pub", "ssh-ed25519 AAAA\n", 0o644)
    return root


def audit(root: Path, **kwargs: object) -> AuditResult:
    return run_audit(AuditOptions(root=root, **kwargs))  # type: ignore[arg-type]


def by_rule(result: AuditResult, rule: str) -> list[Finding]:
    return [f for f in result.report.findings if f.rule == rule]


def apply_fixes(root: Path, result: AuditResult, rules: set[str]) -> None:
    """Apply the remediation of every finding of `rules` exactly as the finding states it."""
    compose: dict[str, list[ComposeFix]] = {}
    for outcome in result.outcomes:
        if outcome.finding.rule not in rules:
            continue
        assert outcome.fixes, f"{outcome.finding.rule} has no fix"
        for fix in outcome.fixes:
            if isinstance(fix, DropInFix):
                assert fix.content() in outcome.finding.remediation
                write(root, fix.path.lstrip("/"), fix.content())
            elif isinstance(fix, LineEditFix):
                assert fix.old.strip() in outcome.finding.remediation
                path = root / fix.path.lstrip("/")
                lines = path.read_text().splitlines()
                assert lines[fix.line - 1] == fix.old
                lines[fix.line - 1 : fix.line] = [] if fix.new is None else [fix.new]
                path.write_text("\n".join(lines) + "\n")
            elif isinstance(fix, ComposeFix):
                compose.setdefault(fix.override_file, []).append(fix)
    for override, fixes in compose.items():
        write(root, override.lstrip("/"), render_compose_override(fixes))


# ---------------------------------------------------------------------------------------------
# (1) an exposed host


def exposed_root(root: Path) -> Path:
    clean_root(root)
    write(root, f"{DROPIN_DIR}/override.conf", '[Service]\nEnvironment="OLLAMA_HOST=0.0.0.0:11434"\n')
    write(root, "etc/environment", 'PATH="/usr/bin"\nOLLAMA_ORIGINS=*\n')
    write(
        root,
        "srv/llm/docker-compose.yml",
        'services:\n  ollama:\n    image: ollama/ollama:latest\n    ports:\n      - "11434:11434"\n'
        "    volumes:\n      - ollama:/root/.ollama\nvolumes:\n  ollama: {}\n",
    )
    return root


def test_exposed_root_reports_each_problem_with_evidence_and_fix(tmp_path: Path) -> None:
    result = audit(exposed_root(tmp_path))
    exposed = {f.target: f for f in by_rule(result, "exposed-bind")}
    assert set(exposed) == {"systemd:ollama.service", "compose:/srv/llm/docker-compose.yml#ollama"}

    unit = exposed["systemd:ollama.service"]
    assert unit.severity is Severity.HIGH
    assert unit.evidence["set_at"] == {
        "kind": "systemd",
        "path": "/etc/systemd/system/ollama.service.d/override.conf",
        "line": 2,
        "text": 'Environment="OLLAMA_HOST=0.0.0.0:11434"',
    }
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in unit.remediation
    assert "systemctl daemon-reload" in unit.remediation
    assert "Impact:" in unit.remediation

    svc = exposed["compose:/srv/llm/docker-compose.yml#ollama"]
    assert svc.evidence["published_on"] == "all interfaces"
    assert svc.evidence["publish_at"]["line"] == 5
    assert '"127.0.0.1:11434:11434"' in svc.remediation
    assert "/srv/llm/docker-compose.override.yml" in svc.remediation

    (cors,) = by_rule(result, "cors-any-origin")
    assert cors.target == "file:/etc/environment"
    assert cors.evidence["set_at"]["line"] == 2
    assert "delete that line" in cors.remediation
    assert result.report.summary["posture"] == "exposed"
    gateway = by_rule(result, "gateway-missing")
    assert gateway and gateway[0].severity is Severity.MEDIUM


def test_applying_the_remediations_removes_the_findings(tmp_path: Path) -> None:
    root = exposed_root(tmp_path)
    first = audit(root)
    fixed_rules = {"exposed-bind", "cors-any-origin", "cloud-enabled"}
    apply_fixes(root, first, fixed_rules)
    second = audit(root)
    remaining = {f.rule for f in second.report.findings}
    assert not remaining & fixed_rules, [f.target for f in second.report.findings if f.rule in fixed_rules]
    assert second.report.summary["posture"] == "loopback"
    # the original exposing drop-in is still there: the new one wins because it sorts later
    assert (root / DROPIN_DIR / "override.conf").exists()


def test_harden_files_installed_into_the_root_fix_the_host(tmp_path: Path) -> None:
    root = exposed_root(tmp_path / "root")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "plan"
    out.mkdir()
    plan = write_plan(audit(root), out)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before  # nothing touched
    assert (out / "plan.md").is_file() and (out / "audit.json").is_file()
    files = out / "files"
    dropin = files / DROPIN_DIR / "zz-ollama-guard.conf"
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in dropin.read_text()
    assert 'Environment="OLLAMA_NO_CLOUD=1"' in dropin.read_text()
    assert (files / "etc/environment.diff").read_text().count("-OLLAMA_ORIGINS=*") == 1
    # install every proposed file, as the plan says
    for src in files.rglob("*"):
        if src.is_file() and src.suffix != ".diff":
            dest = root / src.relative_to(files)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    after = audit(root)
    rules = {f.rule for f in after.report.findings}
    assert not rules & {"exposed-bind", "cors-any-origin", "cloud-enabled"}
    assert all(p.is_relative_to(out) for p in plan.written)


# ---------------------------------------------------------------------------------------------
# (2) a clean installer host


def test_clean_installer_root_has_nothing_above_low(tmp_path: Path) -> None:
    result = audit(clean_root(tmp_path))
    worst = result.report.worst()
    assert worst is None or worst.rank <= Severity.LOW.rank, [
        (f.rule, f.severity.value, f.target) for f in result.report.findings
    ]
    assert not by_rule(result, "exposed-bind")
    (instance,) = result.report.data["audit"]["instances"]
    assert instance["listen"] == "127.0.0.1:11434" and instance["user"] == "ollama"
    assert result.report.summary["posture"] == "loopback"
    # cloud is on by default: reported, but low
    assert [f.severity for f in by_rule(result, "cloud-enabled")] == [Severity.LOW]


def test_empty_root_runs_with_no_findings(tmp_path: Path) -> None:
    result = audit(tmp_path)
    assert result.report.findings == []
    assert result.report.summary["posture"] == "unknown"


# ---------------------------------------------------------------------------------------------
# (3) store and key permissions


def store_findings(result: AuditResult) -> dict[str, Finding]:
    return {f"{f.target}|{f.title}": f for f in by_rule(result, "store-permissions")}


def test_world_readable_key_is_high_and_chmod_fixes_it(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    key = root / HOME / "id_ed25519"
    key.chmod(0o644)
    found = [f for f in by_rule(audit(root), "store-permissions") if f.target.endswith("id_ed25519")]
    assert [f.severity for f in found] == [Severity.HIGH]
    assert found[0].evidence["mode"] == "0644"
    assert "chmod 0600 /usr/share/ollama/.ollama/id_ed25519" in found[0].remediation
    key.chmod(0o600)
    assert not [f for f in by_rule(audit(root), "store-permissions") if f.target.endswith("id_ed25519")]


def test_group_readable_key_is_reported(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    (root / HOME / "id_ed25519").chmod(0o640)
    found = [f for f in by_rule(audit(root), "store-permissions") if f.target.endswith("id_ed25519")]
    assert found and found[0].severity is Severity.HIGH and "group" in found[0].title


def test_writable_model_store_entries(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    blob = root / HOME / "models/blobs" / ("sha256-" + "a" * 64)
    blob.chmod(0o666)
    (root / HOME / "models/manifests").chmod(0o775)
    findings = by_rule(audit(root), "store-permissions")
    high = [f for f in findings if f.severity is Severity.HIGH]
    assert high and high[0].evidence["count"] == 1
    assert high[0].evidence["examples"] == ["/usr/share/ollama/.ollama/models/blobs/sha256-" + "a" * 64]
    assert any(f.severity is Severity.MEDIUM and f.target.endswith("/models/manifests") for f in findings)
    blob.chmod(0o644)
    (root / HOME / "models/manifests").chmod(0o755)
    assert all(f.severity is Severity.LOW for f in by_rule(audit(root), "store-permissions"))


def test_models_dir_option_and_world_writable_custom_store(tmp_path: Path) -> None:
    store = tmp_path / "data/models"
    (store / "blobs").mkdir(parents=True)
    store.chmod(0o777)
    findings = by_rule(audit(tmp_path, models_dirs=["/data/models"]), "store-permissions")
    assert any(f.target == "/data/models" and f.severity is Severity.HIGH for f in findings)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_owned_by_another_user(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    os.chown(root / HOME / "id_ed25519", 4242, 4242)
    found = [f for f in by_rule(audit(root), "store-permissions") if "belongs to" in f.title]
    assert found and found[0].severity is Severity.MEDIUM
    assert "chown ollama: /usr/share/ollama/.ollama/id_ed25519" in found[0].remediation


# ---------------------------------------------------------------------------------------------
# cloud settings


@pytest.mark.parametrize(
    ("dropin", "server_json", "enabled"),
    [
        (None, None, True),
        ('Environment="OLLAMA_NO_CLOUD=1"', None, False),
        ("Environment=OLLAMA_NO_CLOUD=yes", None, False),  # Ollama: unparsable non-empty → true
        ("Environment=OLLAMA_NO_CLOUD=0", None, True),
        (None, '{"disable_ollama_cloud": true}', False),
        (None, '{"disable_ollama_cloud": "true"}', True),  # Go's json wants a real boolean
        (None, "{not json", True),
    ],
)
def test_cloud_settings(tmp_path: Path, dropin: str | None, server_json: str | None, enabled: bool) -> None:
    root = clean_root(tmp_path)
    if dropin:
        write(root, f"{DROPIN_DIR}/cloud.conf", f"[Service]\n{dropin}\n")
    if server_json:
        write(root, f"{HOME}/server.json", server_json)
    assert bool(by_rule(audit(root), "cloud-enabled")) is enabled


def test_cloud_check_skips_versions_that_predate_cloud_features(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    assert not by_rule(audit(root, ollama_version="0.11.4"), "cloud-enabled")  # no cloud before 0.12.0
    assert by_rule(audit(root, ollama_version="0.12.0"), "cloud-enabled")
    assert by_rule(audit(root), "cloud-enabled")  # version unknown: still reported


def test_debug_request_logging(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(
        root,
        f"{DROPIN_DIR}/debug.conf",
        "[Service]\nEnvironment=OLLAMA_DEBUG=1 OLLAMA_DEBUG_LOG_REQUESTS=true\n",
    )
    result = audit(root)
    (finding,) = by_rule(result, "debug-request-logging")
    assert finding.severity is Severity.MEDIUM
    apply_fixes(root, result, {"debug-request-logging"})
    assert not by_rule(audit(root), "debug-request-logging")


# ---------------------------------------------------------------------------------------------
# versions and advisories


def test_recorded_version_gives_outdated_and_advisories(tmp_path: Path) -> None:
    root = exposed_root(tmp_path)
    result = audit(root, ollama_version="0.1.30")
    (outdated,) = by_rule(result, "outdated-version")
    assert outdated.target == "ollama 0.1.30" and outdated.severity is Severity.HIGH
    (probllama,) = by_rule(result, "CVE-2024-37032")
    assert probllama.severity is Severity.CRITICAL  # exposed: the advisory's own severity
    assert probllama.evidence["fixed"] == "0.1.34" and "--ollama-version" in probllama.evidence["sources"]


def test_advisory_severity_drops_on_loopback_and_behind_gateway(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    loopback = by_rule(audit(root, ollama_version="0.1.30"), "CVE-2024-37032")
    assert [f.severity for f in loopback] == [Severity.HIGH]
    write(root, "etc/ollama-guard/config.toml", '[gateway]\nlisten = "0.0.0.0:11435"\n')
    gated = audit(root, ollama_version="0.1.30")
    assert gated.report.summary["posture"] == "loopback-behind-gateway"
    assert [f.severity for f in by_rule(gated, "CVE-2024-37032")] == [Severity.MEDIUM]
    assert not by_rule(gated, "gateway-missing")


def test_version_from_compose_image_tag(tmp_path: Path) -> None:
    write(tmp_path, "opt/ai/compose.yaml", 'services:\n  llm:\n    image: "ollama/ollama:0.1.45"\n')
    result = audit(tmp_path)
    assert by_rule(result, "CVE-2024-39720")  # fixed in 0.1.46
    assert not by_rule(result, "CVE-2024-37032")  # fixed in 0.1.34
    assert result.report.data["audit"]["versions"][0]["version"] == "0.1.45"


# ---------------------------------------------------------------------------------------------
# systemd quoting and precedence


def unit_listen(result: AuditResult) -> str:
    (inst,) = [i for i in result.report.data["audit"]["instances"] if i["kind"] == "systemd"]
    return inst["listen"]


def test_systemd_multiple_vars_per_line(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(root, f"{DROPIN_DIR}/a.conf", '[Service]\nEnvironment=OLLAMA_HOST=0.0.0.0 OLLAMA_ORIGINS="*"\n')
    result = audit(root)
    assert unit_listen(result) == "0.0.0.0:11434"
    (cors,) = by_rule(result, "cors-any-origin")
    assert cors.severity is Severity.HIGH and cors.evidence["OLLAMA_ORIGINS"] == "*"


def test_systemd_quoted_assignments_with_spaces(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(
        root,
        f"{DROPIN_DIR}/a.conf",
        '[Service]\nEnvironment="OLLAMA_KEEP_ALIVE=5m" "OLLAMA_HOST=[::]:8080"\n',
    )
    result = audit(root)
    assert unit_listen(result) == "[::]:8080"
    (finding,) = by_rule(result, "exposed-bind")
    assert 'Environment="OLLAMA_HOST=127.0.0.1:8080"' in finding.remediation  # keeps the port


def test_later_dropin_wins_and_reset_clears(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(root, f"{DROPIN_DIR}/10-open.conf", '[Service]\nEnvironment="OLLAMA_HOST=0.0.0.0"\n')
    write(root, f"{DROPIN_DIR}/20-close.conf", '[Service]\nEnvironment="OLLAMA_HOST=127.0.0.1"\n')
    assert not by_rule(audit(root), "exposed-bind")
    write(root, f"{DROPIN_DIR}/30-reset.conf", "[Service]\nEnvironment=\nEnvironment=OLLAMA_ORIGINS=*\n")
    result = audit(root)
    assert unit_listen(result) == "127.0.0.1:11434"
    assert by_rule(result, "cors-any-origin")


def test_etc_dropin_masks_same_name_in_usr_lib(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(
        root,
        "usr/lib/systemd/system/ollama.service.d/50-net.conf",
        "[Service]\nEnvironment=OLLAMA_HOST=0.0.0.0\n",
    )
    assert by_rule(audit(root), "exposed-bind")
    write(root, f"{DROPIN_DIR}/50-net.conf", "[Service]\n# nothing\n")
    assert not by_rule(audit(root), "exposed-bind")


def test_environment_file_overrides_environment_and_gets_a_line_fix(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(
        root,
        f"{DROPIN_DIR}/env.conf",
        "[Service]\nEnvironmentFile=-/etc/default/ollama\nEnvironmentFile=-/etc/default/missing\n"
        'Environment="OLLAMA_HOST=127.0.0.1"\n',
    )
    write(root, "etc/default/ollama", "# settings\nOLLAMA_HOST='0.0.0.0:11434'\n")
    result = audit(root)
    (finding,) = by_rule(result, "exposed-bind")
    assert finding.evidence["set_at"]["path"] == "/etc/default/ollama"
    assert "In /etc/default/ollama, line 2:" in finding.remediation
    assert "OLLAMA_HOST=127.0.0.1:11434" in finding.remediation
    apply_fixes(root, result, {"exposed-bind"})
    assert not by_rule(audit(root), "exposed-bind")


def test_unreferenced_defaults_file_is_reported_lower(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(root, "etc/default/ollama", "OLLAMA_HOST=0.0.0.0\n")
    result = audit(root)
    (finding,) = by_rule(result, "exposed-bind")
    assert finding.target == "file:/etc/default/ollama" and finding.severity is Severity.MEDIUM
    assert result.report.summary["posture"] == "loopback"


def test_execstart_env_and_custom_unit_name(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", PASSWD)
    write(
        tmp_path,
        "etc/systemd/system/llm.service",
        "[Service]\nExecStart=/usr/bin/env OLLAMA_HOST=0.0.0.0:9000 /opt/ollama/bin/ollama serve\n",
    )
    write(
        tmp_path,
        "etc/systemd/system/ollama-guard.service",
        "[Service]\nExecStart=/usr/bin/ollama-guard serve\n",
    )
    result = audit(tmp_path)
    (finding,) = by_rule(result, "exposed-bind")
    assert finding.target == "systemd:llm.service" and finding.evidence["listen"] == "0.0.0.0:9000"
    assert result.report.data["audit"]["gateway"]["present"]


def test_symlinked_unit_resolves_inside_root(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", PASSWD)
    write(
        tmp_path,
        "usr/lib/systemd/system/ollama.service",
        INSTALLER_UNIT + "\n[Service]\nEnvironment=OLLAMA_HOST=::\n",
    )
    link = tmp_path / UNIT
    link.parent.mkdir(parents=True)
    link.symlink_to("/usr/lib/systemd/system/ollama.service")  # absolute: must not escape the root
    assert by_rule(audit(tmp_path), "exposed-bind")


# ---------------------------------------------------------------------------------------------
# Compose


@pytest.mark.parametrize(
    ("ports", "exposed"),
    [
        ('      - "11434:11434"\n', True),
        ('      - "0.0.0.0:11434:11434"\n', True),
        ('      - "127.0.0.1:11434:11434"\n', False),
        ('      - "[::1]:11434:11434"\n', False),
        ("      - 11434\n", True),
        ("      - target: 11434\n        published: 11434\n        host_ip: 127.0.0.1\n", False),
        ('      - target: 11434\n        published: "8000"\n        protocol: tcp\n', True),
        ('      - "8080:80"\n', False),
    ],
)
def test_compose_publish_variants(tmp_path: Path, ports: str, exposed: bool) -> None:
    write(
        tmp_path, "srv/x/compose.yaml", f"services:\n  ollama:\n    image: ollama/ollama\n    ports:\n{ports}"
    )
    assert bool(by_rule(audit(tmp_path), "exposed-bind")) is exposed


def test_compose_container_bound_to_loopback_is_not_exposed(tmp_path: Path) -> None:
    write(
        tmp_path,
        "srv/x/compose.yaml",
        "services:\n  ollama:\n    image: ollama/ollama\n    environment:\n      - OLLAMA_HOST=127.0.0.1\n"
        '    ports: ["11434:11434"]\n',
    )
    assert not by_rule(audit(tmp_path), "exposed-bind")


def test_compose_host_network_uses_the_container_bind(tmp_path: Path) -> None:
    write(
        tmp_path,
        "srv/x/compose.yaml",
        "services:\n  ai:\n    image: ollama/ollama:latest\n    network_mode: host\n",
    )
    result = audit(tmp_path)
    (finding,) = by_rule(result, "exposed-bind")
    assert finding.evidence["OLLAMA_HOST"].startswith("0.0.0.0:11434")
    apply_fixes(tmp_path, result, {"exposed-bind"})
    assert not by_rule(audit(tmp_path), "exposed-bind")


def test_compose_env_map_interpolation_and_cors(tmp_path: Path) -> None:
    write(tmp_path, "srv/x/.env", "ORIGINS=*\n")
    write(
        tmp_path,
        "srv/x/compose.yaml",
        "services:\n  ollama:\n    image: ollama/ollama\n    environment:\n"
        "      OLLAMA_ORIGINS: ${ORIGINS:-none}\n"
        '      OLLAMA_DEBUG_LOG_REQUESTS: "1"\n',
    )
    result = audit(tmp_path)
    assert by_rule(result, "cors-any-origin") and by_rule(result, "debug-request-logging")
    apply_fixes(tmp_path, result, {"cors-any-origin", "debug-request-logging"})
    again = audit(tmp_path)
    assert not by_rule(again, "cors-any-origin") and not by_rule(again, "debug-request-logging")


def test_docker_daemon_default_ip(tmp_path: Path) -> None:
    write(tmp_path, "etc/docker/daemon.json", '{"ip": "127.0.0.1"}')
    write(
        tmp_path,
        "srv/x/compose.yaml",
        'services:\n  ollama:\n    image: ollama/ollama\n    ports: ["11434:11434"]\n',
    )
    assert not by_rule(audit(tmp_path), "exposed-bind")


def test_explicit_compose_file_outside_root(tmp_path: Path) -> None:
    compose = write(
        tmp_path,
        "project/stack.yml",
        'services:\n  o:\n    image: ollama/ollama\n    ports: ["11434:11434"]\n',
    )
    empty_root = tmp_path / "root"
    empty_root.mkdir()
    (finding,) = by_rule(audit(empty_root, compose_files=[compose]), "exposed-bind")
    assert finding.target == f"compose:{compose}#o"


def test_broken_compose_file_is_a_note_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, "srv/x/compose.yaml", "services: [unclosed\n")
    result = audit(tmp_path)
    assert any("not valid YAML" in n for n in result.report.data["audit"]["notes"])


# ---------------------------------------------------------------------------------------------
# launchd


def test_launchd_plist(tmp_path: Path) -> None:
    plist = {
        "Label": "com.example.ollama",
        "ProgramArguments": ["/Applications/Ollama.app/Contents/Resources/ollama", "serve"],
        "EnvironmentVariables": {"OLLAMA_HOST": "0.0.0.0", "OLLAMA_ORIGINS": "*"},
    }
    rel = "Users/alice/Library/LaunchAgents/com.example.ollama.plist"
    write(tmp_path, rel, plistlib.dumps(plist))
    result = audit(tmp_path)
    (bind,) = by_rule(result, "exposed-bind")
    assert bind.target == f"launchd:/{rel}"
    assert "PlistBuddy -c 'Set :EnvironmentVariables:OLLAMA_HOST 127.0.0.1:11434'" in bind.remediation
    assert by_rule(result, "cors-any-origin")
    out = tmp_path / "plan"
    out.mkdir()
    write_plan(result, out)
    fixed = plistlib.loads((out / "files" / rel).read_bytes())
    assert fixed["EnvironmentVariables"]["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert "OLLAMA_ORIGINS" not in fixed["EnvironmentVariables"]
    shutil.copyfile(out / "files" / rel, tmp_path / rel)
    again = audit(tmp_path)
    assert not by_rule(again, "exposed-bind") and not by_rule(again, "cors-any-origin")


def test_report_json_is_serialisable(tmp_path: Path) -> None:
    result = audit(exposed_root(tmp_path), ollama_version="0.6.5")
    json.dumps(result.report.data)
    assert all(f.remediation for f in result.report.findings)


def test_unset_environment_applies_last(tmp_path: Path) -> None:
    root = clean_root(tmp_path)
    write(
        root,
        f"{DROPIN_DIR}/a.conf",
        "[Service]\nEnvironmentFile=/etc/default/ollama\nUnsetEnvironment=OLLAMA_HOST\n",
    )
    write(root, "etc/default/ollama", "OLLAMA_HOST=0.0.0.0\n")
    assert not by_rule(audit(root), "exposed-bind")


def test_compose_client_of_ollama_is_not_an_ollama_instance(tmp_path: Path) -> None:
    write(
        tmp_path,
        "srv/x/compose.yaml",
        "services:\n  webui:\n    image: ghcr.io/open-webui/open-webui:main\n    environment:\n"
        "      - OLLAMA_HOST=http://ollama:11434\n      - OLLAMA_ORIGINS=*\n"
        "    ports: ['0.0.0.0:3000:8080']\n"
        "  ollama:\n    image: ollama/ollama\n    expose: ['11434']\n",
    )
    result = audit(tmp_path)
    targets = [i["target"] for i in result.report.data["audit"]["instances"]]
    assert targets == ["compose:/srv/x/compose.yaml#ollama"]
    assert not by_rule(result, "exposed-bind") and not by_rule(result, "cors-any-origin")


def test_user_unit(tmp_path: Path) -> None:
    write(tmp_path, "etc/passwd", PASSWD + "alice:x:1000:1000::/home/alice:/bin/bash\n")
    write(
        tmp_path,
        "home/alice/.config/systemd/user/ollama.service",
        "[Service]\nExecStart=%h/bin/ollama serve\nEnvironment=OLLAMA_HOST=0.0.0.0\n",
    )
    result = audit(tmp_path)
    (finding,) = by_rule(result, "exposed-bind")
    assert finding.target == "systemd-user:/home/alice:ollama.service"
    assert "systemctl --user daemon-reload" in finding.remediation
    assert (
        "/home/alice/.config/systemd/user/ollama.service.d/zz-ollama-guard-bind.conf" in finding.remediation
    )
