"""What every check receives: the collected facts, the exposure posture, and fix builders."""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_guard.audit.exposure import Exposure, Posture, exposed_sockets, exposures_of, ollama_sockets
from ollama_guard.audit.fixes import (
    CommandFix,
    ComposeFix,
    DropInFix,
    Fix,
    LineEditFix,
    PlistFix,
    env_file_line,
)
from ollama_guard.audit.hostspec import loopback_bind_for
from ollama_guard.audit.model import Facts, Instance, ListeningSocket
from ollama_guard.audit.rootfs import RootFS
from ollama_guard.findings import Severity


def topic_dropin(dropin_path: str, topic: str) -> str:
    """zz-ollama-guard.conf → zz-ollama-guard-<topic>.conf (sorts before the merged harden file)."""
    base, _, ext = dropin_path.rpartition(".")
    return f"{base}-{topic}.{ext}"


def lower(severity: Severity, steps: int, floor: Severity = Severity.LOW) -> Severity:
    """`severity` lowered by `steps` levels, never below `floor` (nor raised to it)."""
    if steps <= 0 or severity.rank <= floor.rank:
        return severity
    by_rank = {s.rank: s for s in Severity}
    return by_rank[max(floor.rank, severity.rank - steps)]


@dataclass
class AuditContext:
    fs: RootFS
    facts: Facts
    exposures: list[Exposure] = field(default_factory=list)
    exposed_sockets: list[ListeningSocket] = field(default_factory=list)

    @classmethod
    def build(cls, fs: RootFS, facts: Facts) -> AuditContext:
        ctx = cls(fs, facts)
        for inst in facts.instances:
            ctx.exposures.extend(exposures_of(inst, facts.hosts_file))
        ctx.exposed_sockets = exposed_sockets(facts)
        return ctx

    @property
    def posture(self) -> Posture:
        effective = [e for e in self.exposures if e.instance.effective]
        if effective or self.exposed_sockets:
            return Posture.EXPOSED
        if not any(i.effective for i in self.facts.instances) and not ollama_sockets(self.facts):
            return Posture.UNKNOWN
        return Posture.GATEWAY if self.facts.gateway.present else Posture.LOOPBACK

    def instance_exposed(self, inst: Instance) -> bool:
        return any(e.instance is inst for e in self.exposures)

    def posture_steps(self) -> int:
        """How many levels to lower network-reachable risks for the current posture."""
        return {Posture.EXPOSED: 0, Posture.UNKNOWN: 0, Posture.LOOPBACK: 1, Posture.GATEWAY: 2}[self.posture]

    # ---- fixes -----------------------------------------------------------------------------
    def env_fixes(self, inst: Instance, wanted: dict[str, str | None], topic: str) -> list[Fix]:
        """Fixes that give `inst` the wanted environment (None = unset/default).

        systemd drop-ins are named after `topic` (zz-ollama-guard-<topic>.conf) so that each finding's
        remediation can be applied on its own; `harden` merges them into one zz-ollama-guard.conf.
        """
        fixes: list[Fix] = []
        dropin: list[tuple[str, str]] = []
        compose_env: list[tuple[str, str]] = []
        plist_env: list[tuple[str, str | None]] = []
        for name, value in wanted.items():
            current = inst.env.get(name)
            origin = current.origin if current else None
            if inst.kind == "systemd":
                if origin is not None and origin.kind == "environment-file" and origin.path and origin.line:
                    new = None if value is None else env_file_line(name, value)
                    fixes.append(
                        LineEditFix(origin.path, origin.line, origin.text or "", new, self._restart(inst))
                    )
                elif origin is not None and origin.text and origin.text.lstrip().startswith("ExecStart"):
                    fixes.append(
                        CommandFix((), f"Remove {name}=… from the ExecStart line at {origin.describe()}.")
                    )
                else:
                    dropin.append((name, "" if value is None else value))
            elif (
                inst.kind in ("login-environment", "environment-file")
                and origin
                and origin.path
                and origin.line
            ):
                new = None if value is None else env_file_line(name, value)
                fixes.append(LineEditFix(origin.path, origin.line, origin.text or "", new))
            elif inst.kind == "launchd":
                plist_env.append((name, value))
            elif inst.kind == "compose":
                compose_env.append((name, "" if value is None else value))
            elif inst.kind == "docker":
                flag = f"-e {name}={value}" if value is not None else f"(no -e {name})"
                fixes.append(
                    CommandFix(
                        (
                            f"docker rm -f {inst.extra.get('container')}",
                            f"docker run … {flag} … {inst.image}",
                        ),
                        "Recreate the container with the corrected environment:",
                    )
                )
            elif inst.kind == "process":
                fixes.append(self._process_fix(inst, name, value))
        if dropin:
            fixes.insert(
                0,
                DropInFix(
                    topic_dropin(str(inst.extra["dropin_path"]), topic),
                    str(inst.extra["unit"]),
                    str(inst.extra["scope"]),
                    tuple(dropin),
                ),
            )
        if compose_env:
            fixes.append(self.compose_fix(inst, ports=None, env=tuple(compose_env)))
        if plist_env:
            fixes.append(PlistFix(str(inst.extra["plist"]), tuple(plist_env)))
        return fixes

    def compose_fix(
        self, inst: Instance, ports: tuple[str, ...] | None, env: tuple[tuple[str, str], ...] = ()
    ) -> ComposeFix:
        return ComposeFix(
            str(inst.extra["compose_file"]),
            str(inst.extra["override_file"]),
            str(inst.extra["service"]),
            ports,
            env,
        )

    @staticmethod
    def _restart(inst: Instance) -> str:
        if inst.kind == "systemd":
            flag = " --user" if inst.extra.get("scope") == "user" else ""
            return f"systemctl{flag} restart {inst.extra['unit']}"
        return ""

    @staticmethod
    def _process_fix(inst: Instance, name: str, value: str | None) -> CommandFix:
        unit = inst.extra.get("unit")
        if unit:
            return CommandFix(
                (f"systemctl restart {unit}",),
                f"The running server (pid {inst.extra.get('pid')}) still has {name} from when it started; "
                f"after fixing {unit}'s configuration, restart it:",
            )
        pid = inst.extra.get("pid")
        setting = f"{name}={value}" if value is not None else f"without {name}"
        start = f"env {name}={value} ollama serve" if value is not None else f"env -u {name} ollama serve"
        mac = f"launchctl setenv {name} {value}" if value is not None else f"launchctl unsetenv {name}"
        return CommandFix(
            (f"kill {pid}", start, f"{mac}  # macOS app: then quit and reopen Ollama"),
            f"Restart the running server (pid {pid}) {setting}:",
        )

    def loopback_value(self, inst: Instance) -> str:
        return loopback_bind_for(inst.bind())
