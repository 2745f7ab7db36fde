"""Indicators of compromise exported as CSV and as a STIX 2.1 bundle (validated by the `stix2` parser)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from ollama_guard.findings import Finding, Severity
from ollama_guard.investigate.iocs import build_iocs, iocs_csv, registry_of
from support.cli import run_cli
from test_investigate_gen import gin

stix2 = pytest.importorskip("stix2")

LOGS = Path(__file__).parent / "data" / "logs"
T = datetime(2025, 1, 11, 23, 0, 0)
V6 = "2001:db8::bad:1"
FORMULA = '=HYPERLINK("http://evil.example","x")'


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """exfil.log (an IPv4 thief with a blob digest) plus an IPv6 scanner and a client column that is a
    spreadsheet formula (gin believes any X-Forwarded-For)."""
    tmp = tmp_path_factory.mktemp("iocs")
    extra = [gin(T + timedelta(seconds=i), client, "GET", path)
             for client in (V6, FORMULA) for i, path in enumerate(["/", "/api/version", "/api/tags"])]
    log = tmp / "server.log"
    log.write_bytes((LOGS / "exfil.log").read_bytes() + ("\n".join(extra) + "\n").encode())
    from ollama_guard.cli import main  # module scope: no capsys for run_cli; the same entry point

    with pytest.raises(SystemExit) as done:
        main(["investigate", str(log), "--fail-on", "never", "-q", "-o", str(tmp / "r.json"),
              "--iocs", str(tmp / "iocs.csv"), "--stix", str(tmp / "bundle.json")])
    assert done.value.code == 0
    return {"log": log, "report": json.loads((tmp / "r.json").read_text(encoding="utf-8")),
            "csv": (tmp / "iocs.csv").read_text(encoding="utf-8"),
            "stix": json.loads((tmp / "bundle.json").read_text(encoding="utf-8"))}


def test_iocs_in_the_report(exported: dict) -> None:
    iocs = exported["report"]["iocs"]
    assert iocs[0]["value"] in ("198.51.100.23", V6, FORMULA)
    by_value = {i["value"]: i for i in iocs}
    assert by_value["198.51.100.23"]["type"] == "ipv4-addr"
    assert by_value["198.51.100.23"]["severity"] == "critical"
    assert by_value[V6]["type"] == "ipv6-addr"
    assert by_value[FORMULA]["type"] == "client"
    blob = by_value["ab704f5c7b61f10c38cba3e3fe1a6bc06b91d43ce15eb51fcd5fb0a0cd3bc30e"]
    assert blob["type"] == "sha256" and blob["clients"] == ["198.51.100.23"]
    assert "exfiltration-chain" in blob["rules"] and "uploaded" in blob["context"]


def test_csv_export(exported: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(exported["csv"])))
    values = [i["value"] for i in exported["report"]["iocs"]]
    assert [r["value"] for r in rows] == [("'" + v if v.startswith("=") else v) for v in values]
    by_type = {}
    for row in rows:
        by_type.setdefault(row["type"], []).append(row)
    thief = next(r for r in by_type["ipv4-addr"] if r["value"] == "198.51.100.23")
    assert thief["count"] == "5" and thief["severity"] == "critical"
    assert set(thief["rules"].split()) >= {"exfiltration-chain", "model-deleted", "admin-from-remote"}
    assert thief["first_seen"] == "2025-01-11T23:31:25Z"
    # a value from the log that a spreadsheet would run as a formula is kept as text
    (formula,) = by_type["client"]
    assert formula["value"] == "'" + FORMULA
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row.values())


def test_stix_bundle_parses_and_carries_the_indicators(exported: dict) -> None:
    bundle = exported["stix"]
    parsed = stix2.parse(json.dumps(bundle), allow_custom=False)
    objects = {o.id: o for o in parsed.objects}
    kinds = [o.type for o in parsed.objects]
    for kind in ("identity", "indicator", "sighting", "ipv4-addr", "ipv6-addr", "file", "attack-pattern",
                 "relationship", "note", "report"):
        assert kind in kinds, kind
    patterns = {o.pattern for o in parsed.objects if o.type == "indicator"}
    assert "[ipv4-addr:value = '198.51.100.23']" in patterns
    assert f"[ipv6-addr:value = '{V6}']" in patterns
    assert ("[file:hashes.'SHA-256' = 'ab704f5c7b61f10c38cba3e3fe1a6bc06b91d43ce15eb51fcd5fb0a0cd3bc30e']"
            in patterns)
    assert not any(FORMULA in p for p in patterns)  # not an address: in the note, not an indicator
    thief = next(o for o in parsed.objects if o.type == "indicator" and "198.51.100.23" in o.pattern)
    (sighting,) = [o for o in parsed.objects if o.type == "sighting" and o.sighting_of_ref == thief.id]
    assert sighting.count == 5
    assert sighting.first_seen.isoformat().startswith("2025-01-11T23:31:25")
    assert sighting.last_seen.isoformat().startswith("2025-01-11T23:40:00")
    techniques = {o.external_references[0].external_id for o in parsed.objects if o.type == "attack-pattern"}
    assert {"T1567", "T1041", "T1485"} <= techniques
    indicated = {objects[o.target_ref].name for o in parsed.objects
                 if o.type == "relationship" and o.source_ref == thief.id}
    assert {"T1567", "T1485"} <= indicated
    raw = {o["id"]: o for o in bundle["objects"]}
    assert raw[thief.id]["valid_from"] == "2025-01-11T23:31:25.000Z"  # set by us, not the parser's default
    assert all(o.get("spec_version") == "2.1" for o in bundle["objects"])
    (report,) = [o for o in parsed.objects if o.type == "report"]
    assert raw[report.id]["report_types"] and raw[report.id]["published"]
    assert set(report.object_refs) == {o.id for o in parsed.objects if o.type != "report"}
    # the analysed log is in the bundle with its hash (chain of custody)
    digest = hashlib.sha256(exported["log"].read_bytes()).hexdigest()
    evidence = [o for o in parsed.objects if o.type == "file" and o.hashes.get("SHA-256") == digest]
    assert evidence and evidence[0].size == exported["log"].stat().st_size
    (note,) = [o for o in parsed.objects if o.type == "note"]
    assert digest in note.content and "command:" in note.content


def test_stix_without_findings_is_still_a_valid_bundle(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "investigate", str(LOGS / "benign_local.log"), "--fail-on", "never",
                           "-o", str(tmp_path / "r.json"), "--stix", str(tmp_path / "b.json"))
    assert code == 0, err
    parsed = stix2.parse((tmp_path / "b.json").read_text(encoding="utf-8"), allow_custom=False)
    assert not [o for o in parsed.objects if o.type == "indicator"]
    assert "wrote" in err and "b.json" in err


@pytest.mark.parametrize(("model", "registry"), [
    ("llama3", "registry.ollama.ai"),
    ("attacker/llama3:latest", "registry.ollama.ai"),
    ("evil.example.com/ns/stolen:v1", "evil.example.com"),
    ("10.0.0.5:5000/stolen", "10.0.0.5:5000"),
    ("localhost/x", "localhost"),
])
def test_registry_of(model: str, registry: str) -> None:
    assert registry_of(model) == registry


def test_registries_pushed_to_come_from_the_pushing_findings() -> None:
    def finding(rule: str) -> Finding:
        return Finding(rule=rule, severity=Severity.HIGH, target="198.51.100.7", title=rule,
                       evidence={"client": "198.51.100.7", "first_seen": "2025-01-01T00:00:00Z",
                                 "last_seen": "2025-01-01T00:10:00Z", "endpoints": {"POST /api/push": 1},
                                 "models": {"evil.example.com/ns/stolen:v1": 1}})

    pushed = {"198.51.100.7": {"evil.example.com/ns/stolen:v1": 2}}
    iocs = build_iocs([finding("exfiltration-chain"), finding("recon-burst")], [], pushed)
    (registry,) = [i for i in iocs if i["type"] == "registry"]
    assert registry["value"] == "evil.example.com" and registry["rules"] == ["exfiltration-chain"]
    assert [i["value"] for i in iocs if i["type"] == "model"] == ["evil.example.com/ns/stolen:v1"]
    text = iocs_csv(iocs)
    assert "registry,evil.example.com," in text
