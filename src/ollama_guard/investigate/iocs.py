"""Indicators of compromise from an investigation, and their exports: CSV (for a spreadsheet or a
blocklist) and a STIX 2.1 bundle (for a SIEM, a threat-intelligence platform or a CERT).

Indicators: the addresses of untrusted clients with findings, the blob digests they uploaded or probed
(``/api/blobs/sha256:…``), the models named in findings and the registries models were pushed to (both
from the gateway's audit log, which records the model; Ollama's own access log does not). User agents
appear in neither source, so there are none to report.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from ollama_guard.findings import Finding, Severity

_BLOB = re.compile(r"^(?:POST|HEAD|GET) /api/blobs/sha256[:-]([0-9a-f]{64})$")
DEFAULT_REGISTRY = "registry.ollama.ai"
CSV_COLUMNS = ("type", "value", "first_seen", "last_seen", "count", "severity", "rules", "clients", "context")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _worst(a: str | None, b: str) -> str:
    if a is None:
        return b
    return a if Severity(a).rank >= Severity(b).rank else b


def _merge(found: dict[tuple[str, str], dict[str, Any]], kind: str, value: str, f: Finding, count: int,
           context: str) -> None:
    entry = found.setdefault((kind, value), {
        "type": kind, "value": value, "first_seen": None, "last_seen": None, "count": 0, "severity": None,
        "rules": [], "clients": [], "context": context,
    })
    ev = f.evidence
    first, last = ev.get("first_seen"), ev.get("last_seen")
    if first and (entry["first_seen"] is None or first < entry["first_seen"]):
        entry["first_seen"] = first
    if last and (entry["last_seen"] is None or last > entry["last_seen"]):
        entry["last_seen"] = last
    entry["count"] = max(entry["count"], count)
    entry["severity"] = _worst(entry["severity"], f.severity.value)
    if f.rule not in entry["rules"]:
        entry["rules"].append(f.rule)
    client = ev.get("client")
    if client is not None and client not in entry["clients"]:
        entry["clients"].append(client)


def registry_of(model: str) -> str:
    """The registry host of an Ollama model name (``host/namespace/model:tag``; no host: Ollama's)."""
    name = model.split("@", 1)[0]
    parts = name.split("/")
    host_like = "." in parts[0] or ":" in parts[0] or parts[0] == "localhost"
    if len(parts) >= 3 or (len(parts) == 2 and host_like):
        return parts[0].lower()
    return DEFAULT_REGISTRY


def build_iocs(findings: list[Finding], clients: list[dict[str, Any]],
               pushed_models: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """``clients``: the untrusted clients with findings (the timeline's shape), first; then blob
    digests, models and registries named by the findings (each with its clients and rules)."""
    out = [dict(c) for c in clients]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for f in findings:
        ev = f.evidence
        for endpoint, n in (ev.get("endpoints") or {}).items():
            m = _BLOB.match(endpoint)
            if m:
                how = "uploaded" if endpoint.startswith("POST") else "probed"
                _merge(found, "sha256", m.group(1), f, n, f"blob {how} through /api/blobs")
        for model, n in (ev.get("models") or {}).items():
            _merge(found, "model", model, f, n, "model named in the requests of a finding")
        client = ev.get("client")
        for model, n in (pushed_models.get(client, {}) if client is not None else {}).items():
            if f.rule in ("exfiltration-chain", "admin-from-remote"):
                _merge(found, "registry", registry_of(model), f, n, f"pushed {model}")
    order = {"sha256": 0, "model": 1, "registry": 2}
    out += sorted(found.values(), key=lambda e: (order[e["type"]], -Severity(e["severity"]).rank, e["value"]))
    return out


def address_type(value: str) -> str:
    """``ipv4-addr``/``ipv6-addr`` for an address (brackets and zone dropped), else ``client``."""
    text = value.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return "client"
    return "ipv6-addr" if addr.version == 6 and addr.ipv4_mapped is None else "ipv4-addr"


def plain_address(value: str) -> str:
    text = value.strip().strip("[]").split("%", 1)[0]
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# --- CSV ----------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: values from the log (a client column is whatever an
    attacker sent in X-Forwarded-For) starting like a formula get a leading apostrophe."""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def iocs_csv(iocs: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for ioc in iocs:
        row = dict(ioc)
        row.setdefault("count", row.get("requests", 0))
        row.setdefault("clients", [])
        row.setdefault("context", "")
        if row["type"] in ("ipv4-addr", "ipv6-addr", "client"):
            row["count"] = row.get("requests", row.get("count", 0))
            row["context"] = row.get("context") or "client of the Ollama server"
        writer.writerow([_cell(row.get(col)) for col in CSV_COLUMNS])
    return buf.getvalue()


# --- STIX 2.1 -----------------------------------------------------------------------------------

_SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")  # STIX 2.1 §2.9


def _sco_id(kind: str, contributing: dict[str, Any]) -> str:
    canonical = json.dumps(contributing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{kind}--{uuid.uuid5(_SCO_NAMESPACE, canonical)}"


def _ts(value: str | datetime | None, default: datetime) -> str:
    if isinstance(value, str) and value:
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        value = default
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def stix_bundle(iocs: list[dict[str, Any]], findings: list[Finding], *, custody: list[dict[str, Any]],
                provenance: dict[str, Any], created: datetime) -> dict[str, Any]:
    """A STIX 2.1 bundle: the tool as identity; per client address and blob digest an observable
    (``ipv4-addr``/``ipv6-addr``/``file``), an indicator with its pattern and a sighting (count, first and
    last seen); registries pushed to as ``domain-name`` observables; the ATT&CK techniques of the findings
    as attack patterns the indicators indicate; the analysed logs as ``file`` observables in a note that
    carries the chain of custody; and a report that refers to all of it."""
    now = _ts(created, created)
    objects: list[dict[str, Any]] = []
    identity = {"type": "identity", "spec_version": "2.1", "id": f"identity--{uuid.uuid4()}", "created": now,
                "modified": now, "name": f"ollama-guard {provenance.get('version', '')}".strip(),
                "identity_class": "system",
                "description": f"ollama-guard investigate, run as: {provenance.get('command_line', '')}"}
    objects.append(identity)
    creator = identity["id"]
    techniques: dict[str, dict[str, Any]] = {}
    for f in findings:
        for ref in f.references:
            m = re.search(r"attack\.mitre\.org/techniques/(T\d{4})(?:/(\d{3}))?", ref)
            if m:
                tid = m.group(1) + (f".{m.group(2)}" if m.group(2) else "")
                techniques.setdefault(tid, {
                    "type": "attack-pattern", "spec_version": "2.1", "id": f"attack-pattern--{uuid.uuid4()}",
                    "created": now, "modified": now, "created_by_ref": creator, "name": tid,
                    "external_references": [{"source_name": "mitre-attack", "external_id": tid, "url": ref}],
                })
    objects += techniques.values()
    technique_of_rule: dict[str, list[str]] = {}
    for f in findings:
        technique_of_rule.setdefault(f.rule, [str(t) for t in f.evidence.get("attack", [])])
    refs: list[str] = [creator, *(t["id"] for t in techniques.values())]
    for ioc in iocs:
        kind, value = ioc["type"], str(ioc["value"])
        if kind in ("ipv4-addr", "ipv6-addr"):
            value = plain_address(value)
            sco = {"type": kind, "spec_version": "2.1", "id": _sco_id(kind, {"value": value}), "value": value}
            pattern = f"[{kind}:value = '{_quote(value)}']"
            name = f"Ollama attacker address {value}"
        elif kind == "sha256":
            hashes = {"SHA-256": value}
            sco = {"type": "file", "spec_version": "2.1", "id": _sco_id("file", {"hashes": hashes}),
                   "hashes": hashes}
            pattern = f"[file:hashes.'SHA-256' = '{value}']"
            name = f"Blob {ioc.get('context', 'seen')}: sha256:{value[:12]}…"
        elif kind == "registry":
            host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
            sco = {"type": "domain-name", "spec_version": "2.1",
                   "id": _sco_id("domain-name", {"value": host}), "value": host}
            pattern = f"[domain-name:value = '{_quote(host)}']"
            name = f"Registry models were pushed to: {host}"
        else:  # models and unparseable client columns have no STIX observable type: in the report text
            continue
        first = _ts(ioc.get("first_seen"), created)
        last = _ts(ioc.get("last_seen"), created)
        rules = ", ".join(ioc.get("rules", []))
        indicator = {
            "type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.uuid4()}", "created": now,
            "modified": now, "created_by_ref": creator, "name": name,
            "description": f"Worst severity {ioc.get('severity')}; rules: {rules}.",
            "indicator_types": ["malicious-activity"], "pattern": pattern, "pattern_type": "stix",
            "pattern_version": "2.1", "valid_from": first,
            "labels": [f"severity:{ioc.get('severity')}", *(f"rule:{r}" for r in ioc.get("rules", []))],
        }
        count = int(ioc.get("requests", ioc.get("count", 1)) or 1)
        sighting = {
            "type": "sighting", "spec_version": "2.1", "id": f"sighting--{uuid.uuid4()}", "created": now,
            "modified": now, "created_by_ref": creator, "sighting_of_ref": indicator["id"],
            "first_seen": first, "last_seen": max(first, last), "count": min(count, 999_999_999),
        }
        objects += [sco, indicator, sighting]
        refs += [sco["id"], indicator["id"], sighting["id"]]
        for rule in ioc.get("rules", []):
            for tid in technique_of_rule.get(rule, []):
                if tid in techniques:
                    rel = {"type": "relationship", "spec_version": "2.1",
                           "id": f"relationship--{uuid.uuid4()}", "created": now, "modified": now,
                           "created_by_ref": creator,
                           "relationship_type": "indicates", "source_ref": indicator["id"],
                           "target_ref": techniques[tid]["id"]}
                    objects.append(rel)
                    refs.append(rel["id"])
    evidence = []
    for rec in custody:
        if not rec.get("sha256"):
            continue
        props: dict[str, Any] = {"hashes": {"SHA-256": rec["sha256"]}}
        where = rec.get("path") or rec.get("location") or rec["source"]
        sco = {"type": "file", "spec_version": "2.1", "id": _sco_id("file", {"hashes": props["hashes"]}),
               **props, "size": int(rec.get("size") or 0), "name": where.rsplit("/", 1)[-1] or rec["source"]}
        objects.append(sco)
        evidence.append(sco["id"])
    models = [i["value"] for i in iocs if i["type"] == "model"]
    others = [i["value"] for i in iocs if i["type"] == "client"]
    lines = [f"{r['source']}: {r.get('path') or r.get('location') or r.get('command') or r['kind']}, "
             f"{r.get('size')} bytes, sha256 {r.get('sha256')}, {r.get('lines')} lines "
             f"({r.get('recognised_lines')} recognised), {r.get('first_time')} – {r.get('last_time')}"
             for r in custody]
    note_text = "Chain of custody (sources analysed):\n" + "\n".join(lines)
    note_text += (f"\n\nTool: ollama-guard {provenance.get('version')}; "
                  f"command: {provenance.get('command_line')}")
    if models:
        note_text += "\nModels named in findings: " + ", ".join(models)
    if others:
        note_text += "\nClient columns that are not addresses: " + ", ".join(repr(o) for o in others)
    note = {"type": "note", "spec_version": "2.1", "id": f"note--{uuid.uuid4()}", "created": now,
            "modified": now, "created_by_ref": creator, "abstract": "Chain of custody and provenance",
            "content": note_text, "object_refs": evidence or [creator]}
    objects.append(note)
    refs.append(note["id"])
    refs += evidence
    counts = {s.value: sum(1 for f in findings if f.severity == s) for s in Severity}
    report = {
        "type": "report", "spec_version": "2.1", "id": f"report--{uuid.uuid4()}", "created": now,
        "modified": now, "created_by_ref": creator, "name": "Ollama server incident report (ollama-guard)",
        "description": "Findings: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ". " + " ".join(
            f"[{f.severity.value}] {f.rule} {f.target}: {f.title}." for f in findings[:50]),
        "report_types": ["threat-report", "indicator", "attack-pattern"], "published": now,
        "object_refs": refs,
    }
    objects.append(report)
    return {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
