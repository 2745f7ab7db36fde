"""exposed-bind, listening-exposed and gateway-missing."""

from __future__ import annotations

from collections.abc import Iterator

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext, lower
from ollama_guard.audit.exposure import Posture
from ollama_guard.audit.fixes import CommandFix, Fix
from ollama_guard.audit.hostspec import DEFAULT_PORT, name_is_loopback
from ollama_guard.audit.model import Instance
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.findings import Severity


def _publish_fix(ctx: AuditContext, inst: Instance) -> list[Fix]:
    if inst.kind == "compose":
        ports = []
        for spec in inst.extra.get("ports", []):
            rewritten = spec
            for pub in inst.publishes:
                if pub.spec == spec and (not pub.host_ip or not name_is_loopback(pub.host_ip.strip("[]"))):
                    rewritten = f"127.0.0.1:{pub.host_port}:{pub.container_port}"
            ports.append(rewritten)
        return [ctx.compose_fix(inst, ports=tuple(ports))]
    pubs = [f"-p 127.0.0.1:{p.host_port or DEFAULT_PORT}:{p.container_port}" for p in inst.publishes]
    return [
        CommandFix(
            (f"docker rm -f {inst.extra.get('container')}", f"docker run -d {' '.join(pubs)} … {inst.image}"),
            "Recreate the container publishing the port on loopback only:",
        )
    ]


@check("exposed-bind")
def exposed_bind(ctx: AuditContext) -> Iterator[Outcome]:
    for exp in ctx.exposures:
        inst = exp.instance
        if exp.how == "bind":
            fixes = ctx.env_fixes(inst, {"OLLAMA_HOST": ctx.loopback_value(inst)}, "bind")
        else:
            fixes = _publish_fix(ctx, inst)
        severity = Severity.HIGH if inst.effective else Severity.MEDIUM
        note = "" if inst.effective else " No unit or process was found that loads this file."
        yield outcome(
            "exposed-bind",
            target=inst.target,
            severity=severity,
            detail=f"{inst.label} {exp.summary}.{note}",
            evidence=exp.evidence(),
            fixes=fixes,
        )


@check("listening-exposed")
def listening_exposed(ctx: AuditContext) -> Iterator[Outcome]:
    for sock in ctx.exposed_sockets:
        fixes: list[Fix] = [
            CommandFix(
                (
                    f'nft add rule inet filter input tcp dport {sock.port} iifname != "lo" drop',
                    f"# or: ufw deny {sock.port}/tcp   (Docker-published ports bypass ufw; fix the publish)",
                ),
                "Until the bind address is fixed (see exposed-bind), drop remote traffic to the port:",
            )
        ]
        yield outcome(
            "listening-exposed",
            target=f"{sock.ip}:{sock.port}" if ":" not in sock.ip else f"[{sock.ip}]:{sock.port}",
            detail=f"{sock.process or 'a process'} (pid {sock.pid}) listens on {sock.ip}:{sock.port}.",
            evidence={"address": sock.ip, "port": sock.port, "pid": sock.pid, "process": sock.process},
            fixes=fixes,
        )


@check("gateway-missing")
def gateway_missing(ctx: AuditContext) -> Iterator[Outcome]:
    effective = [i for i in ctx.facts.instances if i.effective]
    if not effective:
        return
    gateway = ctx.facts.gateway
    posture = ctx.posture
    evidence = {
        "posture": posture.value,
        "gateway_configs": gateway.configs,
        "gateway_processes": gateway.processes,
    }
    fixes: list[Fix] = [
        CommandFix(
            (
                "ollama-guard harden --out ./ollama-guard-plan  # gateway config and unit to review",
                "ollama-guard serve --config /etc/ollama-guard/config.toml",
            ),
            "Run the ollama-guard gateway in front of Ollama:",
        )
    ]
    if gateway.present and posture is Posture.EXPOSED:
        yield outcome(
            "gateway-missing",
            target="ollama-guard gateway",
            title="Gateway found, but Ollama is still reachable without it",
            severity=Severity.MEDIUM,
            detail="An ollama-guard gateway is configured, yet Ollama itself listens beyond loopback, "
            "so clients "
            "can bypass the gateway's authentication.",
            evidence=evidence,
            fixes=[],
            impact="Fix the exposed-bind findings; then only the gateway is reachable.",
        )
        return
    if gateway.present:
        return
    severity = Severity.MEDIUM if posture is Posture.EXPOSED else lower(Severity.MEDIUM, 3, Severity.INFO)
    yield outcome(
        "gateway-missing",
        target="ollama-guard gateway",
        severity=severity,
        detail="No ollama-guard gateway configuration, unit or process was found.",
        evidence=evidence,
        fixes=fixes,
    )
