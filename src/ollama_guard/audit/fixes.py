"""Fixes: the exact change that removes a finding, as text for the report and as files for harden."""

from __future__ import annotations

import json
from dataclasses import dataclass


def systemd_quote(name: str, value: str) -> str:
    """`Environment="NAME=value"` with systemd's escapes (backslash, double quote, percent)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'Environment="{name}={escaped}"'


def env_file_line(name: str, value: str) -> str:
    if value and all(c.isalnum() or c in "._-:/,[]@+" for c in value):
        return f"{name}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


@dataclass(frozen=True)
class DropInFix:
    """A systemd drop-in that sets environment variables for a unit (later files win)."""

    path: str  # logical path of the drop-in file
    unit: str
    scope: str  # system | user
    env: tuple[tuple[str, str], ...]

    def content(self, env: tuple[tuple[str, str], ...] | None = None) -> str:
        lines = [
            "# Written by ollama-guard harden. Review, then install it and restart the unit.",
            "[Service]",
        ]
        lines += [systemd_quote(k, v) for k, v in (env if env is not None else self.env)]
        return "\n".join(lines) + "\n"

    def restart(self) -> str:
        flag = " --user" if self.scope == "user" else ""
        return f"systemctl{flag} daemon-reload && systemctl{flag} restart {self.unit}"

    def describe(self) -> str:
        return f"Create {self.path} containing:\n{self.content()}Then run: {self.restart()}"


@dataclass(frozen=True)
class LineEditFix:
    """Replace (or delete, when `new` is None) one line of a text file."""

    path: str
    line: int
    old: str
    new: str | None
    after: str = ""  # command to run afterwards

    def describe(self) -> str:
        action = f"replace it with:\n  {self.new}" if self.new is not None else "delete that line"
        tail = f"\nThen run: {self.after}" if self.after else ""
        return f"In {self.path}, line {self.line}:\n  {self.old.strip()}\n{action}{tail}"


@dataclass(frozen=True)
class ComposeFix:
    """A Compose override for one service: its ports replaced, environment entries set."""

    compose_file: str
    override_file: str
    service: str
    ports: tuple[str, ...] | None
    env: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return (
            f"Add to {self.override_file} (docker compose reads it next to {self.compose_file}; "
            f"Compose >= 2.24 "
            f"for `!override`):\n{render_compose_override([self])}"
            f"Then run: docker compose -f {self.compose_file} up -d {self.service}"
        )


def render_compose_override(fixes: list[ComposeFix]) -> str:
    services: dict[str, dict[str, object]] = {}
    for fix in fixes:
        entry = services.setdefault(fix.service, {})
        if fix.ports is not None:
            entry["ports"] = list(fix.ports)
        if fix.env:
            env = entry.setdefault("environment", {})
            assert isinstance(env, dict)
            env.update(dict(fix.env))
    lines = ["services:"]
    for name, entry in services.items():
        lines.append(f"  {name}:")
        if "ports" in entry:
            ports = entry["ports"]
            assert isinstance(ports, list)
            if ports:
                lines.append("    ports: !override")
                lines += [f"      - {json.dumps(p)}" for p in ports]
            else:
                lines.append("    ports: !reset []")
        env = entry.get("environment")
        if isinstance(env, dict) and env:
            lines.append("    environment:")
            lines += [f"      {k}: {json.dumps(v)}" for k, v in env.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PlistFix:
    """Set (or remove, when the value is None) EnvironmentVariables entries of a launchd plist."""

    path: str
    env: tuple[tuple[str, str | None], ...]

    def describe(self) -> str:
        sets = [f"{k}={v}" for k, v in self.env if v is not None]
        drops = [k for k, v in self.env if v is None]
        parts = []
        if sets:
            parts.append("set EnvironmentVariables " + ", ".join(sets))
        if drops:
            parts.append("remove EnvironmentVariables " + ", ".join(drops))
        cmds = [
            f"/usr/libexec/PlistBuddy -c 'Set :EnvironmentVariables:{k} {v}' {self.path}"
            for k, v in self.env
            if v
        ]
        cmds += [f"/usr/libexec/PlistBuddy -c 'Delete :EnvironmentVariables:{k}' {self.path}" for k in drops]
        return (
            f"In {self.path}: "
            + "; ".join(parts)
            + ":\n  "
            + "\n  ".join(cmds)
            + f"\nThen run: launchctl unload {self.path} && launchctl load {self.path}"
        )


@dataclass(frozen=True)
class ServerJsonFix:
    """Set `disable_ollama_cloud: true` in ~/.ollama/server.json."""

    path: str

    def describe(self) -> str:
        return (
            f'Set "disable_ollama_cloud": true in {self.path}, e.g.:\n  {{"disable_ollama_cloud": true}}\n'
            "Then restart Ollama."
        )


@dataclass(frozen=True)
class CommandFix:
    """Commands for a person to run (we never run them)."""

    commands: tuple[str, ...]
    note: str = ""

    def describe(self) -> str:
        head = f"{self.note}\n" if self.note else ""
        return head + "\n".join(f"  {c}" for c in self.commands)


Fix = DropInFix | LineEditFix | ComposeFix | PlistFix | ServerJsonFix | CommandFix


def remediation_text(fixes: list[Fix], impact: str) -> str:
    body = "\n\n".join(f.describe() for f in fixes)
    return f"{body}\n\nImpact: {impact}" if body else f"Impact: {impact}"
