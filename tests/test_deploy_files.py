"""The shipped deployment files (issue 9, item 14): deploy/compose.yaml keeps Ollama unreachable except
through the gateway, deploy/Dockerfile runs the gateway unprivileged, and the systemd unit — one file,
shipped as package data and written by `harden` — is sandboxed and verified by systemd itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from ollama_guard.audit.collect import AuditOptions
from ollama_guard.audit.envsyntax import parse_unit_file
from ollama_guard.audit.plan_gateway import gateway_unit
from ollama_guard.audit.runner import run_audit
from ollama_guard.redact import contains_credential, is_sensitive_name
from support.cli import run_cli

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"


def compose(name: str = "compose.yaml") -> dict:
    document = yaml.safe_load((DEPLOY / name).read_text())
    # the Compose Specification's own schema (draft 7)
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(document)
    return document


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_puts_ollama_on_an_internal_network_only() -> None:
    doc = compose()
    networks = doc["networks"]
    ollama = doc["services"]["ollama"]
    assert ollama["image"].startswith("ollama/ollama")
    assert "ports" not in ollama and "expose" not in ollama and "network_mode" not in ollama
    joined = ollama["networks"] if isinstance(ollama["networks"], list) else list(ollama["networks"])
    assert joined and all((networks[n] or {}).get("internal") is True for n in joined), joined


def test_compose_publishes_only_the_gateway_and_points_it_at_ollama() -> None:
    doc = compose()
    services = doc["services"]
    published = [name for name, svc in services.items() if svc.get("ports")]
    assert published == ["gateway"]
    gateway = services["gateway"]
    [port] = gateway["ports"]
    assert str(port).split(":")[-1] == "11435"
    env = env_of(gateway)
    assert env["OLLAMA_GUARD_UPSTREAM"] == "http://ollama:11434"
    assert env["OLLAMA_GUARD_LISTEN"].endswith(":11435")
    networks = doc["networks"]
    joined = list(gateway["networks"])
    internal = [n for n in joined if (networks[n] or {}).get("internal")]
    external = [n for n in joined if not (networks[n] or {}).get("internal")]
    assert internal and set(internal) <= set(services["ollama"]["networks"]) and external
    assert gateway["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()


def test_compose_keeps_secrets_out_of_the_file() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        for key, value in env_of(service).items():
            assert not is_sensitive_name(key), f"{name}: {key} set inline"
            assert not contains_credential(value), f"{name}: {key} holds a credential"
    gateway = doc["services"]["gateway"]
    assert gateway.get("env_file") or gateway.get("secrets")  # where credentials go instead
    assert (DEPLOY / "gateway.env.example").is_file()
    assert "gateway.env" in (REPO / ".gitignore").read_text()


def test_compose_hardens_the_gateway_container() -> None:
    gateway = compose()["services"]["gateway"]
    assert gateway["read_only"] is True and gateway["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in gateway["security_opt"]
    assert gateway["ulimits"]["nofile"]["soft"] >= 65536


def test_pull_override_adds_egress_but_no_port() -> None:
    ollama = compose("compose.pull.yaml")["services"]["ollama"]
    assert "ports" not in ollama and "egress" in ollama["networks"]


def test_our_own_audit_finds_the_compose_file_safe(tmp_path: Path) -> None:
    result = run_audit(AuditOptions(root=tmp_path, compose_files=[DEPLOY / "compose.yaml"]))
    mine = [i for i in result.context.facts.instances if i.kind == "compose"]
    assert [i.extra["service"] for i in mine] == ["ollama"]
    assert not [f for f in result.report.findings if f.rule in ("exposed-bind", "cors-any-origin")]


def test_dockerfile_runs_the_gateway_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line[0].isspace()]
    final = instructions[max(i for i, words in enumerate(instructions) if words[0] == "FROM") :]
    keys = {words[0]: words[1] if len(words) > 1 else "" for words in final}
    assert keys["USER"].split(":")[0] not in ("root", "0")
    assert keys["EXPOSE"] == "11435"
    assert json.loads(keys["ENTRYPOINT"]) == ["ollama-guard"] and json.loads(keys["CMD"]) == ["serve"]
    assert "HEALTHCHECK" in keys and "/-/health" in text
    assert not re.search(r"(?m)^\s*(ENV|ARG)\b.*(SECRET|PASSWORD|TOKEN)", text)


# --- the systemd unit ---------------------------------------------------------------------------------

SANDBOX = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
}


def service_settings(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in parse_unit_file(text):
        if a.section == "Service":
            out.setdefault(a.key, []).append(a.value)
    return out


def test_the_unit_is_one_file_shipped_and_written_by_harden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (DEPLOY / "ollama-guard.service").read_text()
    assert gateway_unit() == shipped
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    code, _out, err = run_cli(capsys, "harden", "--root", str(root), "--out", str(tmp_path / "plan"))
    assert code == 0, err
    assert (tmp_path / "plan/gateway/ollama-guard.service").read_text() == shipped


def test_the_unit_is_sandboxed() -> None:
    settings = service_settings(gateway_unit())
    for key, value in SANDBOX.items():
        assert settings.get(key, [None])[-1] == value, key
    assert int(settings["LimitNOFILE"][-1]) >= 65536
    assert settings["RestrictAddressFamilies"][-1].split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert "@system-service" in settings["SystemCallFilter"]
    assert "/var/lib/ollama-guard" in settings["ReadWritePaths"]
    assert settings["User"] == ["ollama-guard"] or settings.get("DynamicUser") == ["yes"]
    assert "--config /etc/ollama-guard/config.toml" in settings["ExecStart"][-1]
    assert settings["Environment"] == ["OLLAMA_GUARD_HOME=/var/lib/ollama-guard"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """systemd's own parser: no unknown key, no bad value. ExecStart must exist on this machine, so the
    check runs on a copy pointing at this installation's `ollama-guard`."""
    exe = Path(sys.executable).parent / "ollama-guard"
    assert exe.is_file()
    unit = tmp_path / "ollama-guard.service"
    unit.write_text(gateway_unit().replace("/usr/local/bin/ollama-guard", str(exe)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "ollama-guard.service" in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr
