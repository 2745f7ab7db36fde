"""A service that listens on loopback only is reported as reachable from this host only (issue 9, item 6).

Before: scanning 127.0.0.1 where Ollama listens on loopback gave 3 critical + 4 high findings and the
remediation "bind Ollama to loopback". The socket table the scanner reads is real here (a decoy on
127.0.0.1); the "also listening on another address" cases replace it, since tests never bind beyond
loopback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollama_guard.scan import locality
from ollama_guard.scan.locality import locality_of
from support.cli import run_cli
from support.servers import DecoyProcess, start_decoy

MISSING_AUTH = {"unauthenticated-api", "unauthenticated-admin"}
BIND_ADVICE = "Bind Ollama to loopback"


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory):
    with start_decoy(tmp_path_factory.mktemp("loopback"), version="0.6.5", seed_models=1) as running:
        yield running


def scan(capsys: pytest.CaptureFixture[str], decoy: DecoyProcess) -> list[dict]:
    code, out, err = run_cli(capsys, "scan", decoy.hostport, "--format", "json", "--fail-on", "never")
    assert code == 0, err
    return json.loads(out)["findings"]


def test_loopback_only_ollama_is_not_critical_and_not_told_to_bind_to_loopback(
    capsys: pytest.CaptureFixture[str], decoy: DecoyProcess
) -> None:
    assert locality_of(decoy.host, decoy.port).loopback_only  # the real socket table says so
    findings = scan(capsys, decoy)
    rules = {f["rule"]: f for f in findings}
    assert MISSING_AUTH <= set(rules)
    assert not [f["rule"] for f in findings if f["severity"] == "critical"]
    for rule in MISSING_AUTH:
        finding = rules[rule]
        assert finding["severity"] == "medium", finding
        assert "this host only" in finding["title"]
        assert "local account" in finding["detail"] and "browser" in finding["detail"]
        assert "DNS rebinding" in finding["detail"]
        assert finding["evidence"]["reachable_from"].startswith("this host only")
        assert "already bound to loopback" in finding["remediation"]
    for finding in findings:
        assert BIND_ADVICE not in finding["remediation"], finding["rule"]
        assert "unreachable from untrusted networks" not in finding["remediation"], finding["rule"]
    # the advisories that are the open API itself are missing-auth findings too
    open_api = [f for f in findings if "Missing authentication" in f["title"] or "unauthorized" in f["title"]]
    assert open_api and all(f["severity"] in ("medium", "low") for f in open_api)
    assert rules["model-enumeration"]["severity"] == "low"


def test_the_same_service_also_on_every_interface_is_exposed(
    capsys: pytest.CaptureFixture[str], decoy: DecoyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scanned on 127.0.0.1, but its process also listens on 0.0.0.0: reachable from the network."""
    pid = decoy.proc.pid
    table = [("127.0.0.1", decoy.port, pid), ("0.0.0.0", decoy.port, pid)]
    monkeypatch.setattr(locality, "_listening", lambda: table)
    findings = scan(capsys, decoy)
    admin = next(f for f in findings if f["rule"] == "unauthenticated-admin")
    assert admin["severity"] == "critical"
    assert BIND_ADVICE in admin["remediation"]
    assert admin["evidence"]["also_listening_on"] == [f"0.0.0.0:{decoy.port}"]
    assert "reachable from the network" in admin["detail"]


def _judge(table: list[tuple[str, int, int | None]] | None, host: str, port: int, monkeypatch) -> object:
    monkeypatch.setattr(locality, "_listening", lambda: table)
    return locality_of(host, port)


def test_locality_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    def judge(table, host="127.0.0.1", port=11434):  # type: ignore[no-untyped-def]
        return _judge(table, host, port, monkeypatch)

    assert judge([("127.0.0.1", 11434, 5)]).loopback_only
    # a socket on every interface answered 127.0.0.1
    assert not judge([("0.0.0.0", 11434, 5)]).loopback_only
    assert not judge([("::", 11434, 5)], host="::1").loopback_only
    assert judge([("0.0.0.0", 11434, 5)], host="::1").also_on == ()  # an IPv4 socket cannot serve ::1
    # the same process (or one we cannot see) also on a LAN address
    assert judge([("127.0.0.1", 11434, 5), ("192.0.2.7", 11434, 5)]).also_on == ("192.0.2.7:11434",)
    assert not judge([("127.0.0.1", 11434, None), ("192.0.2.7", 11434, 6)]).loopback_only
    assert not judge([("127.0.0.1", 11434, 5), ("192.0.2.7", 11434, None)]).loopback_only
    # another process on the same port elsewhere is another service
    assert judge([("127.0.0.1", 11434, 5), ("192.0.2.7", 11434, 6)]).loopback_only
    # other ports do not matter
    assert judge([("127.0.0.1", 11434, 5), ("0.0.0.0", 8080, 5)]).loopback_only
    # unreadable table: judged on the address, and said so
    unknown = judge(None)
    assert unknown.loopback_only and not unknown.confirmed
    # not a loopback target at all
    assert not judge([("0.0.0.0", 11434, 5)], host="192.0.2.7").loopback_target
    assert judge([("127.0.0.1", 11434, 5)], host="127.9.9.9").loopback_target


def test_scanning_a_non_loopback_address_is_unchanged(tmp_path: Path) -> None:
    assert not locality_of("192.0.2.1", 11434).loopback_target  # no socket table needed, no traffic


async def test_other_loopback_only_servers_get_their_own_advice() -> None:
    """Not Ollama (a vLLM and a ComfyUI look-alike on 127.x): lowered too, and no Ollama-specific or
    bind-to-loopback advice."""
    from ollama_guard.scan.engine import Scanner, ScanSettings
    from ollama_guard.scan.targets import TargetSet
    from test_scan import AI_IMITATIONS, ServerThread

    servers = ServerThread()
    endpoints: dict[str, str] = {}
    try:
        for name in ("vllm", "comfyui"):
            address, routes, _service, _version = AI_IMITATIONS[name]
            endpoints[f"{address}:{servers.app(address, name, routes)}"] = name
        scanner = Scanner(TargetSet(list(endpoints)), ScanSettings(timeout=5))
        results = {endpoints[r.endpoint]: r async for r in scanner.results()}
    finally:
        servers.stop()
    for name, result in results.items():
        [finding] = [f for f in result.findings if f.rule == "unauthenticated-api"]
        assert finding.severity == "medium", name
        assert "already bound to loopback" in finding.remediation
        assert "OLLAMA" not in finding.remediation and "ollama-guard" not in finding.remediation
        assert "bind" not in finding.remediation.replace("already bound", ""), finding.remediation
