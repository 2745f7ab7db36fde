"""SARIF 2.1.0: one run, one rule per distinct finding rule, one result per finding.

Levels: critical/high → error, medium → warning, low/info → note. Every rule carries
``properties.security-severity`` (the numbers GitHub code scanning buckets on) and every result a
``partialFingerprints`` entry from ``Finding.fingerprint()`` so repeated runs de-duplicate. A finding whose
evidence names a file (``evidence["path"]``, optionally ``evidence["line"]``) gets a physical location; any
other finding gets a logical location naming its target (a host:port, a model, …).
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any
from urllib.parse import quote

from ollama_guard.findings import SECURITY_SEVERITY, Finding, Report, Severity
from ollama_guard.reports.common import (
    TOOL_NAME,
    TOOL_VERSION,
    finished_at,
    iso_time,
    jsonable,
    summary_dict,
)

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/ollama-guard/"
FINGERPRINT_KEY = "ollamaGuardFingerprint/v1"

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
    Severity.INFO: "note",
}
_ADVISORY_RULE = re.compile(r"^(CVE-\d{4}-\d+|CNVD-\d{4}-\d+|GHSA-[\w-]+|OLLAMA-[\w-]+)$")


def sarif_level(severity: Severity) -> str:
    return _LEVELS[severity]


def _rule_name(rule_id: str) -> str:
    """``unauthenticated-admin`` → ``UnauthenticatedAdmin`` (SARIF's human-readable rule name)."""
    parts = re.split(r"[^0-9A-Za-z]+", rule_id)
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or rule_id


def _rule(rule_id: str, findings: list[Finding], command: str) -> dict[str, Any]:
    worst = max((f.severity for f in findings), key=lambda s: s.rank)
    first = max(findings, key=lambda f: f.severity.rank)
    references = list(dict.fromkeys(r for f in findings for r in f.references))
    help_lines = [first.remediation or first.detail or first.title]
    if references:
        help_lines += ["", "References:", *references]
    tags = ["security", "ollama", command]
    if _ADVISORY_RULE.match(rule_id):
        tags.append("advisory")
    rule: dict[str, Any] = {
        "id": rule_id,
        "name": _rule_name(rule_id),
        "shortDescription": {"text": first.title},
        "fullDescription": {"text": first.detail or first.title},
        "help": {"text": "\n".join(help_lines)},
        "defaultConfiguration": {"level": sarif_level(worst)},
        "properties": {
            "security-severity": SECURITY_SEVERITY[worst],
            "severity": worst.value,
            "tags": list(dict.fromkeys(tags)),
        },
    }
    if references:
        rule["helpUri"] = references[0]
    return rule


def _artifact_uri(path: str) -> str:
    """A file path as a SARIF uri-reference: absolute paths as file:// URIs, relative ones encoded."""
    if PureWindowsPath(path).drive and not path.startswith("/"):
        return PureWindowsPath(path).as_uri()
    if path.startswith("/"):
        return PurePosixPath(path).as_uri()
    return quote(path.replace("\\", "/"), safe="/-._~")


def _location(finding: Finding) -> dict[str, Any]:
    path = finding.evidence.get("path")
    if isinstance(path, str) and path.strip():
        physical: dict[str, Any] = {"artifactLocation": {"uri": _artifact_uri(path.strip())}}
        line = finding.evidence.get("line")
        if isinstance(line, int) and not isinstance(line, bool) and line >= 1:
            physical["region"] = {"startLine": line}
        return {"physicalLocation": physical}
    return {
        "logicalLocations": [
            {"name": finding.target, "fullyQualifiedName": finding.target, "kind": "resource"}
        ]
    }


def _message(finding: Finding) -> str:
    text = f"{finding.title} [{finding.target}]"
    if finding.detail:
        text += f": {finding.detail}"
    if finding.remediation:
        text += f" Remediation: {finding.remediation}"
    return text


def _accepted(report: Report) -> list[tuple[Finding, dict[str, Any]]]:
    """Findings left out by the ignore file (ollama_guard.ignorefile), with their acceptance."""
    out = []
    for item in report.data.get("ignored") or []:
        if isinstance(item, dict) and isinstance(item.get("ignored"), dict):
            fields = {k: v for k, v in item.items() if k in Finding.model_fields}
            out.append((Finding.model_validate(fields), item["ignored"]))
    return out


def _suppression(acceptance: dict[str, Any]) -> dict[str, Any]:
    reason = str(acceptance.get("reason", ""))
    where = acceptance.get("entry")
    expires = acceptance.get("expires")
    return {
        "kind": "external",
        "status": "accepted",
        "justification": reason,
        "properties": {"expires": str(expires), "entry": str(where)},
    }


def sarif_document(report: Report) -> dict[str, Any]:
    findings = report.sorted_findings()
    accepted = _accepted(report)
    by_rule: dict[str, list[Finding]] = {}
    for f in [*findings, *(f for f, _ in accepted)]:
        by_rule.setdefault(f.rule, []).append(f)
    rule_ids = sorted(by_rule)
    rule_index = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    results = []
    for f, acceptance in [*((f, None) for f in findings), *accepted]:
        result: dict[str, Any] = (
            {
                "ruleId": f.rule,
                "ruleIndex": rule_index[f.rule],
                "level": sarif_level(f.severity),
                "message": {"text": _message(f)},
                "locations": [_location(f)],
                "partialFingerprints": {FINGERPRINT_KEY: f.fingerprint()},
                "properties": {
                    "severity": f.severity.value,
                    "security-severity": SECURITY_SEVERITY[f.severity],
                    "target": f.target,
                    "evidence": jsonable(f.evidence),
                    "remediation": f.remediation,
                    "references": list(f.references),
                },
            }
        )
        if acceptance is not None:
            result["suppressions"] = [_suppression(acceptance)]
        results.append(result)
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": TOOL_VERSION,
                "semanticVersion": TOOL_VERSION,
                "informationUri": INFORMATION_URI,
                "rules": [_rule(r, by_rule[r], report.command) for r in rule_ids],
            }
        },
        "invocations": [
            {
                "executionSuccessful": True,
                "commandLine": _command_line(report),
                "startTimeUtc": iso_time(report.started_at),
                "endTimeUtc": iso_time(finished_at(report)),
            }
        ],
        "results": results,
        "properties": {"command": report.command, "summary": jsonable(summary_dict(report))},
    }
    artifacts = _artifacts(report)
    if artifacts:
        run["artifacts"] = artifacts
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def _command_line(report: Report) -> str:
    """The exact (credential-redacted) command line when the command recorded it in
    ``data["provenance"]``, else the command's name."""
    provenance = report.data.get("provenance")
    if isinstance(provenance, dict) and isinstance(provenance.get("command_line"), str):
        return provenance["command_line"]
    return f"{TOOL_NAME} {report.command}"


def _artifacts(report: Report) -> list[dict[str, Any]]:
    """The files a command analysed, with their SHA-256 and size (``data["custody"]``: chain of custody)."""
    out = []
    for rec in report.data.get("custody") or []:
        if not isinstance(rec, dict) or not rec.get("sha256"):
            continue
        where = rec.get("path") or rec.get("source") or ""
        artifact: dict[str, Any] = {
            "location": {"uri": _artifact_uri(where) if rec.get("path") else quote(str(where), safe="")},
            "hashes": {"sha-256": rec["sha256"]},
            "description": {"text": f"{rec.get('source')} ({rec.get('kind')}): hash of {rec.get('hashed')}"},
        }
        if isinstance(rec.get("size"), int):
            artifact["length"] = rec["size"]
        out.append(artifact)
    return out


def render_sarif(report: Report) -> str:
    return json.dumps(sarif_document(report), indent=2, ensure_ascii=False) + "\n"
