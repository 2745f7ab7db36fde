"""Which instances can be reached from the network, and the host's overall exposure posture."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ollama_guard.audit.hostspec import DEFAULT_PORT, BindAddress, is_exposed, name_is_loopback
from ollama_guard.audit.model import Facts, Instance, ListeningSocket, PortPublish
from ollama_guard.audit.sources.processes import is_gateway, is_ollama_server


class Posture(StrEnum):
    EXPOSED = "exposed"  # Ollama itself is reachable from the network
    LOOPBACK = "loopback"  # only loopback, no gateway found
    GATEWAY = "loopback-behind-gateway"  # only loopback, and an ollama-guard gateway is in front
    UNKNOWN = "unknown"  # no Ollama configuration or socket found


@dataclass(frozen=True)
class Exposure:
    instance: Instance
    how: str  # bind | publish
    bind: BindAddress
    publish: PortPublish | None
    summary: str

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.instance.label, "listen": self.bind.hostport}
        item = self.instance.env.get("OLLAMA_HOST")
        if item is not None:
            out["OLLAMA_HOST"] = item.value
            out["set_at"] = item.origin.to_json()
        elif self.instance.default_bind:
            out["OLLAMA_HOST"] = f"{self.instance.default_bind} (image default)"
        if self.publish is not None:
            out["publish"] = self.publish.spec
            out["published_on"] = self.publish.host_ip or "all interfaces"
            out["publish_at"] = self.publish.origin.to_json()
        return out


def exposures_of(inst: Instance, hosts_file: dict[str, list[str]]) -> list[Exposure]:
    bind = inst.bind()
    if not is_exposed(bind, hosts_file):
        return []
    where = "every interface" if bind.all_interfaces else bind.host
    if not inst.containerised:
        return [Exposure(inst, "bind", bind, None, f"listens on {bind.hostport} ({where})")]
    out = []
    for pub in inst.publishes:
        if pub.host_ip and name_is_loopback(pub.host_ip.strip("[]"), hosts_file):
            continue
        host = pub.host_ip or "every host interface"
        port = pub.host_port or "a random port"
        out.append(
            Exposure(
                inst,
                "publish",
                bind,
                pub,
                f"publishes container port {pub.container_port} on {host}, port {port}",
            )
        )
    return out


def ollama_ports(facts: Facts) -> set[int]:
    """Host ports Ollama is configured to use: 11434, configured binds, published host ports."""
    ports = {DEFAULT_PORT}
    for inst in facts.instances:
        if not inst.containerised:
            ports.add(inst.bind().port)
        for pub in inst.publishes:
            if pub.host_port.isdigit():
                ports.add(int(pub.host_port))
    return ports


def ollama_sockets(facts: Facts) -> list[ListeningSocket]:
    """Listening sockets of Ollama, or on its ports (e.g. docker-proxy); never the gateway's."""
    ports = ollama_ports(facts)
    out = []
    for sock in facts.sockets:
        words = (sock.process or "").split()
        if is_gateway(words):
            continue
        if sock.port in ports or is_ollama_server(words):
            out.append(sock)
    return out


def exposed_sockets(facts: Facts) -> list[ListeningSocket]:
    """The Ollama sockets bound beyond loopback."""
    return [s for s in ollama_sockets(facts) if not name_is_loopback(s.ip)]
