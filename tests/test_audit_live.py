"""Live sources, exercised against processes this test starts (never the machine's own state)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ollama_guard.audit.collect import AuditOptions
from ollama_guard.audit.runner import run_audit
from ollama_guard.audit.sources.docker import _instance, is_ollama_image

FAKE_SERVER = r"""
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"version": "0.1.30"}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_running_ollama_serve_process_is_audited(tmp_path: Path) -> None:
    """A process whose argv is `ollama … serve` with OLLAMA_HOST=0.0.0.0 in its environment."""
    env = dict(os.environ, OLLAMA_HOST="0.0.0.0:11434", OLLAMA_ORIGINS="*")
    script = tmp_path / "fake.py"
    script.write_text(FAKE_SERVER)
    # bash's `exec -a` sets argv[0] to "ollama"; "serve" is the script's first argument
    proc = subprocess.Popen(
        ["bash", "-c", f'exec -a ollama "{sys.executable}" "{script}" serve'],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        result = run_audit(AuditOptions())
        mine = [
            f
            for f in result.report.findings
            if f.rule == "exposed-bind" and f"pid {proc.pid}," in f.evidence.get("source", "")
        ]
        assert mine, [(f.rule, f.target) for f in result.report.findings]
        assert mine[0].evidence["set_at"]["path"] == f"/proc/{proc.pid}/environ"
        assert f"kill {proc.pid}" in mine[0].remediation
        assert any(
            f.rule == "cors-any-origin" and f"pid {proc.pid}," in f.evidence["source"]
            for f in result.report.findings
        )
        # the version came from GET http://127.0.0.1:PORT/api/version of that process
        versions = result.report.data["audit"]["versions"]
        assert {"version": "0.1.30", "source": f"GET http://127.0.0.1:{port}/api/version"} in versions
        # its socket is on loopback: not listening-exposed
        assert not [
            f
            for f in result.report.findings
            if f.rule == "listening-exposed" and f.evidence["pid"] == proc.pid
        ]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


INSPECT = {
    "Id": "abc123",
    "Name": "/ollama",
    "Config": {
        "Image": "ollama/ollama:0.6.5",
        "Env": ["PATH=/usr/bin", "OLLAMA_HOST=0.0.0.0:11434"],
        "Labels": {"org.opencontainers.image.version": "0.6.5"},
    },
    "HostConfig": {
        "NetworkMode": "bridge",
        "PortBindings": {"11434/tcp": [{"HostIp": "", "HostPort": "11434"}]},
    },
    "NetworkSettings": {
        "Ports": {
            "11434/tcp": [{"HostIp": "0.0.0.0", "HostPort": "11434"}, {"HostIp": "::", "HostPort": "11434"}]
        }
    },
}


def test_docker_inspect_publish_is_exposure() -> None:
    inst = _instance(json.loads(json.dumps(INSPECT)), "")
    assert inst is not None and inst.containerised
    assert [(p.host_ip, p.host_port) for p in inst.publishes] == [("0.0.0.0", "11434"), ("::", "11434")]
    loopback = json.loads(json.dumps(INSPECT))
    loopback["NetworkSettings"]["Ports"]["11434/tcp"] = [{"HostIp": "127.0.0.1", "HostPort": "11434"}]
    from ollama_guard.audit.exposure import exposures_of

    assert len(exposures_of(inst, {})) == 2
    fixed = _instance(loopback, "")
    assert fixed is not None and exposures_of(fixed, {}) == []


def test_docker_image_names() -> None:
    assert is_ollama_image("ollama/ollama:latest")
    assert is_ollama_image("docker.io/ollama/ollama@sha256:" + "0" * 64)
    assert is_ollama_image("registry.local:5000/ollama/ollama:0.6.5-rocm")
    assert not is_ollama_image("ghcr.io/open-webui/open-webui:ollama")
    assert not is_ollama_image("nginx")


def test_listening_sockets_judged_without_touching_the_network(tmp_path: Path) -> None:
    from ollama_guard.audit.checks.network import listening_exposed
    from ollama_guard.audit.context import AuditContext
    from ollama_guard.audit.exposure import Posture
    from ollama_guard.audit.model import Facts, ListeningSocket
    from ollama_guard.audit.rootfs import RootFS

    facts = Facts(live=True, root=str(tmp_path))
    facts.sockets = [
        ListeningSocket("0.0.0.0", 11434, 100, "/usr/local/bin/ollama serve"),
        ListeningSocket("127.0.0.1", 11434, 101, "/usr/local/bin/ollama serve"),
        ListeningSocket("::", 11434, 102, "/usr/bin/docker-proxy -proto tcp -host-ip :: -host-port 11434"),
        ListeningSocket("0.0.0.0", 11435, 103, "/usr/bin/python3 /usr/local/bin/ollama-guard serve"),
        ListeningSocket("0.0.0.0", 22, 1, "sshd: /usr/sbin/sshd"),
        ListeningSocket("10.1.2.3", 8080, 104, "/opt/ollama/ollama serve"),  # any port, if it is Ollama
    ]
    ctx = AuditContext.build(RootFS(tmp_path, live=False), facts)
    targets = sorted(o.finding.target for o in listening_exposed(ctx))
    assert targets == ["0.0.0.0:11434", "10.1.2.3:8080", "[::]:11434"]
    assert ctx.posture is Posture.EXPOSED


def test_gateway_present_but_ollama_exposed(tmp_path: Path) -> None:
    unit = tmp_path / "etc/systemd/system/ollama.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/bin/ollama serve\nEnvironment=OLLAMA_HOST=0.0.0.0\n")
    config = tmp_path / "etc/ollama-guard/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[gateway]\nupstream = "http://127.0.0.1:11434"\n')
    result = run_audit(AuditOptions(root=tmp_path))
    (finding,) = [f for f in result.report.findings if f.rule == "gateway-missing"]
    assert finding.title.startswith("Gateway found") and finding.severity.value == "medium"
