"""The shipped Prometheus alert rules: valid for promtool, firing on the situations they describe
(`promtool test rules`), and naming only metrics the gateway exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ollama_guard.gateway.metrics import GatewayMetrics

ROOT = Path(__file__).parent.parent
RULES = ROOT / "deploy" / "prometheus" / "ollama-guard.rules.yml"
CASES = Path(__file__).parent / "data" / "prometheus" / "ollama-guard.rules.test.yml"


def exported_names() -> set[str]:
    names: set[str] = set()
    for family in GatewayMetrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def test_rules_name_only_exported_metrics() -> None:
    document = yaml.safe_load(RULES.read_text())
    exprs = [rule["expr"] for group in document["groups"] for rule in group["rules"]]
    assert len(exprs) >= 7
    used = {name for expr in exprs for name in re.findall(r"\bollama_guard_[a-z_]+", expr)}
    assert used and used <= exported_names(), used - exported_names()
    # what the issue asks alerts for
    alerts = {rule["alert"] for group in document["groups"] for rule in group["rules"]}
    assert {"OllamaGuardAuthFailureBurst", "OllamaGuardRefusalSpike", "OllamaGuardAuditBacklog",
            "OllamaGuardUpstreamErrors"} <= alerts
    for group in document["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) not installed")
def test_promtool_checks_and_unit_tests(tmp_path: Path) -> None:
    shutil.copy(RULES, tmp_path / RULES.name)
    shutil.copy(CASES, tmp_path / CASES.name)
    check = subprocess.run(["promtool", "check", "rules", RULES.name], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    tested = subprocess.run(["promtool", "test", "rules", CASES.name], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr
