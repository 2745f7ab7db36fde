"""The gateway and firewall parts of a hardening plan: config, systemd unit, first-key script, rules.

The unit is the file shipped as package data (deploy/ollama-guard.service in the repository is the same
file), so `harden` and a manual install use one reviewed, sandboxed unit.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from ollama_guard.audit.exposure import Posture
from ollama_guard.audit.plan import Plan, Step

if TYPE_CHECKING:
    from ollama_guard.audit.runner import AuditResult

GATEWAY_CONFIG_PATH = "/etc/ollama-guard/config.toml"
GATEWAY_UNIT_PATH = "/etc/systemd/system/ollama-guard.service"
GATEWAY_PORT = 11435
UNIT_RESOURCE = "data/ollama-guard.service"


def gateway_unit() -> str:
    """The gateway's systemd unit, as shipped."""
    return resources.files("ollama_guard.audit").joinpath(UNIT_RESOURCE).read_text(encoding="utf-8")


def gateway_files(plan: Plan, result: AuditResult, upstream_port: int) -> None:
    exposed = result.context.posture is Posture.EXPOSED
    listen = f"0.0.0.0:{GATEWAY_PORT}" if exposed else f"127.0.0.1:{GATEWAY_PORT}"
    config = f"""# ollama-guard gateway configuration (written by `ollama-guard harden`; review before use).
# Install as {GATEWAY_CONFIG_PATH}. Clients call the gateway with `Authorization: Bearer <key>`.
[gateway]
# Where clients connect. {
        "Ollama was reachable from the network, so the gateway takes over that role."
        if exposed
        else "Loopback only; change to 0.0.0.0:" + str(GATEWAY_PORT) + " to serve other machines."
    }
listen = "{listen}"
# Ollama itself, on loopback only (see the systemd drop-in / Compose override steps).
upstream = "http://127.0.0.1:{upstream_port}"
db = "sqlite:////var/lib/ollama-guard/guard.db"
# Client networks allowed at all; narrow this to your LAN, e.g. ["10.0.0.0/8", "192.168.0.0/16"].
allow_cidrs = ["0.0.0.0/0", "::/0"]
# Only these peers' X-Forwarded-For is believed (a reverse proxy in front of the gateway).
trusted_proxies = []
max_body_bytes = 16777216
# Browser origins allowed to call the gateway (never "*").
cors_origins = []
# Model egress: no pushes anywhere, pulls only from the Ollama registry, no insecure registries.
push_registries = []
pull_registries = ["registry.ollama.ai"]
allow_insecure = false
allow_cloud = false
# TLS: set both to serve HTTPS directly.
# tls_cert = "/etc/ollama-guard/tls.crt"
# tls_key = "/etc/ollama-guard/tls.key"
"""
    rel_cfg = plan.write("gateway/config.toml", config).relative_to(plan.out)
    unit = gateway_unit()
    rel_unit = plan.write("gateway/ollama-guard.service", unit).relative_to(plan.out)
    key_script = f"""#!/bin/sh
# Creates the first admin key for the gateway. NOT run by harden: run it yourself after installing
# {GATEWAY_CONFIG_PATH}. The secret is printed once (last line): store it in a password manager.
# Runs as the gateway's user so the key database stays readable by the service only.
set -eu
sudo -u ollama-guard env OLLAMA_GUARD_HOME=/var/lib/ollama-guard \\
  ollama-guard keys create admin --role admin --config {GATEWAY_CONFIG_PATH}
# Then give each application its own narrower key, e.g. (same user and environment):
#   ollama-guard keys create webui --role inference --models 'llama3*' --rpm 60 --config {GATEWAY_CONFIG_PATH}
"""
    rel_key = plan.write("gateway/create-admin-key.sh", key_script, executable=True).relative_to(plan.out)
    plan.steps.append(
        Step(
            "Put the ollama-guard gateway in front of Ollama",
            "1. Create the service user: "
            "`useradd --system --no-create-home --shell /usr/sbin/nologin ollama-guard`.\n"
            f"2. Copy `{rel_cfg}` to `{GATEWAY_CONFIG_PATH}` and review `listen`/`allow_cidrs`.\n"
            f"3. Copy `{rel_unit}` to `{GATEWAY_UNIT_PATH}` and run "
            "`systemctl daemon-reload && systemctl enable --now ollama-guard`.\n"
            f"4. Create the first admin key: `sh {rel_key}` (prints the secret once).\n"
            f"5. Point clients at `http://<this host>:{GATEWAY_PORT}` with `Authorization: Bearer <key>`.",
            "Every request needs a key; pushes, insecure pulls and cloud models are refused; "
            "every decision is logged. Clients that called Ollama directly must be given a key "
            "and the gateway's address.",
        )
    )


def firewall_files(plan: Plan, ports: list[int]) -> None:
    port_set = ", ".join(str(p) for p in ports)
    nft = f"""# nftables: drop remote traffic to Ollama's port(s) (written by `ollama-guard harden`).
# Load with: nft -f nftables.conf   (persist by including it from /etc/nftables.conf)
table inet ollama_guard {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "lo" accept
    tcp dport {{ {port_set} }} drop
  }}
}}
"""
    docker = (
        "#!/bin/sh\n# Docker-published ports bypass the INPUT chain; DOCKER-USER sees them (run as root).\n"
        "set -eu\n"
    )
    docker += "".join(
        f"iptables -I DOCKER-USER -p tcp -m conntrack --ctorigdstport {p} --ctdir ORIGINAL "
        "! -s 127.0.0.0/8 -j DROP\n"
        for p in ports
    )
    ufw = "#!/bin/sh\n# ufw (does not cover Docker-published ports; see iptables-docker-user.sh).\nset -eu\n"
    ufw += "".join(f"ufw deny {p}/tcp\n" for p in ports)
    plan.write("firewall/nftables.conf", nft)
    plan.write("firewall/iptables-docker-user.sh", docker, executable=True)
    plan.write("firewall/ufw.sh", ufw, executable=True)
    plan.steps.append(
        Step(
            "Add a firewall rule as a second line of defence",
            f"Pick one: `nft -f firewall/nftables.conf`, `sh firewall/ufw.sh`, and for Docker hosts "
            f"`sh firewall/iptables-docker-user.sh`. Ports: {port_set}.",
            "Remote connections to Ollama's port are dropped even if a later change binds it "
            "to 0.0.0.0 again; "
            f"the gateway's port {GATEWAY_PORT} stays open.",
        )
    )
