"""The words of each investigate finding: a finding's detail speaks only of what it is about.

One attacker does everything (scans, guesses models, runs inference, deletes, pulls, pushes after
staging a model, calls account routes, fails to authenticate), so a rule that borrowed a fact from
the client's other activity (the bytes its pushes uploaded, say) would show it in its own text.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ollama_guard.cli import cli
from ollama_guard.investigate.rules import load_rules
from test_investigate_gen import config_line, gin

T = datetime(2025, 3, 2, 9, 0, 0)
ATTACKER = "203.0.113.9"
TUNNELLED = "198.51.100.77"


def _slog(t: datetime, msg: str) -> str:
    return f'time={t:%Y-%m-%dT%H:%M:%S}.000Z level=INFO source=upload.go:114 msg="{msg}"'


def _scenario() -> list[str]:
    t = T
    lines = [config_line(t, "0.0.0.0:11434", "[*]", " OLLAMA_DEBUG_LOG_REQUESTS:1")]

    def at(seconds: float) -> datetime:
        return t + timedelta(seconds=seconds)

    # recon: three discovery endpoints within a minute
    lines += [gin(at(10), ATTACKER, "GET", "/"), gin(at(11), ATTACKER, "GET", "/api/version"),
              gin(at(12), ATTACKER, "GET", "/api/tags")]
    # model-name guessing: 404s on chat (also an error burst with the 401s below)
    lines += [gin(at(20 + i), ATTACKER, "POST", "/api/chat", 404) for i in range(6)]
    # compute abuse: 30 generations in ten minutes
    lines += [gin(at(40 + 10 * i), ATTACKER, "POST", "/api/generate", 200, "2.5s") for i in range(30)]
    # key guessing against a gateway-like front: 401s
    lines += [gin(at(26 + i), ATTACKER, "GET", "/api/tags", 401) for i in range(10)]
    # a pull (downloads), a deletion, an account route
    lines += [_slog(at(500), "downloading 6a0746a1ec1a in 16 291 MB part(s)"),
              gin(at(520), ATTACKER, "POST", "/api/pull"),
              gin(at(530), ATTACKER, "DELETE", "/api/delete"),
              gin(at(540), ATTACKER, "POST", "/api/me")]
    # theft: stage a blob and a model, then push it (uploads)
    digest = "sha256:" + "ab" * 32
    lines += [gin(at(600), ATTACKER, "POST", f"/api/blobs/{digest}"),
              gin(at(610), ATTACKER, "POST", "/api/create"),
              _slog(at(620), "uploading ab704f5c7b61 in 8 100 MB part(s)"),
              gin(at(700), ATTACKER, "POST", "/api/push")]
    lines += ["panic: runtime error: index out of range [3] with length 3", "",
              "goroutine 7 [running]:"]
    return lines


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    path: Path = tmp_path_factory.mktemp("wording") / "server.log"
    path.write_text("\n".join(_scenario()) + "\n", encoding="utf-8")
    # another server, bound to loopback, answering someone else through a tunnel
    tunnel = path.parent / "laptop.log"
    tunnelled = gin(T + timedelta(seconds=5), TUNNELLED, "POST", "/api/chat")
    tunnel.write_text("\n".join([config_line(T), tunnelled]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["investigate", "--format", "json", "--fail-on", "never", str(path),
                                      str(tunnel)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out: dict[str, dict] = {}
    for f in report["findings"]:
        assert f["rule"] not in out, f"two {f['rule']} findings"
        out[f["rule"]] = f
    return out


def test_the_scenario_fires_every_rule(findings: dict[str, dict]) -> None:
    assert set(findings) == {rule.id for rule in load_rules()}


@pytest.mark.parametrize("rule", [r.id for r in load_rules()])
def test_each_detail_speaks_only_of_its_own_requests(findings: dict[str, dict], rule: str) -> None:
    finding = findings[rule]
    detail = finding["detail"]
    description = next(r.description for r in load_rules() if r.id == rule)
    assert description in detail
    endpoints = finding["evidence"].get("endpoints", {})
    pushes = "POST /api/push" in endpoints
    pulls = "POST /api/pull" in endpoints
    # data moved is named only where the finding's own requests moved it
    assert ("uploaded" in detail) == pushes, detail
    assert ("downloaded" in detail) == pulls, detail
    assert ("pushed_bytes_approx" in finding["evidence"]) == (pushes or pulls)
    if "client" in finding["evidence"]:
        client = TUNNELLED if rule == "tunnel-exposure" else ATTACKER
        assert detail.startswith(f"{client} (public) made {finding['evidence']['matched_requests']} "
                                 "matching request(s) between ")
    else:
        assert detail.startswith(("server.log", "1 crash(es) in server.log"))


@pytest.mark.parametrize(("rule", "words"), [
    ("exfiltration-chain", ["About 800.0 MB of model data was uploaded by these pushes."]),
    ("admin-from-remote", ["About 800.0 MB of model data was uploaded by these pushes.",
                           "About 4.7 GB of model data was downloaded by these pulls."]),
    ("model-deleted", ["DELETE /api/delete ×1"]),
    ("recon-burst", ["GET /api/tags ×"]),
    ("model-not-found-probing", ["6 matching request(s)", "POST /api/chat ×6"]),
    ("server-crash", ["1 crash(es) in server.log", "index out of range"]),
    ("exposed-bind", ["OLLAMA_HOST=0.0.0.0:11434"]),
])
def test_detail_figures(findings: dict[str, dict], rule: str, words: list[str]) -> None:
    for text in words:
        assert text in findings[rule]["detail"]
