"""Running `ollama serve` processes: their real environment (/proc/PID/environ), user and unit.

Live host only. Processes in another network namespace (containers) are left to the Docker source:
their bind address is inside the container, the host exposure is the published port.
"""

from __future__ import annotations

import os
import posixpath
import pwd
import re

import psutil

from ollama_guard.audit.model import EnvValue, Instance, Origin
from ollama_guard.redact import redact_argv, redact_command

_UNIT_IN_CGROUP = re.compile(r"/([^/]+\.service)(?:/|$)")


def _netns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _unit_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    for line in text.splitlines():
        m = _UNIT_IN_CGROUP.search(line)
        if m:
            return m.group(1)
    return None


def _home_of(user: str | None) -> str | None:
    if not user:
        return None
    try:
        return pwd.getpwnam(user).pw_dir
    except KeyError:
        return None


def is_ollama_server(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    return posixpath.basename(cmdline[0]) == "ollama" and "serve" in cmdline[1:]


def is_gateway(cmdline: list[str]) -> bool:
    joined = " ".join(cmdline)
    return ("ollama-guard" in joined or "ollama_guard" in joined) and "serve" in cmdline


def collect() -> tuple[list[Instance], list[str], list[str]]:
    """(instances, gateway process descriptions, notes)."""
    instances: list[Instance] = []
    gateways: list[str] = []
    notes: list[str] = []
    own_ns = _netns("self")
    for proc in psutil.process_iter(["pid", "cmdline", "username"]):
        try:
            cmdline = proc.info.get("cmdline") or []
            if is_gateway(cmdline):
                gateways.append(f"pid {proc.pid}: {redact_command(cmdline, limit=200)}")
                continue
            if not is_ollama_server(cmdline):
                continue
            if own_ns is not None and _netns(proc.pid) not in (None, own_ns):
                notes.append(f"pid {proc.pid}: `ollama serve` in another network namespace (container)")
                continue
            try:
                environ = proc.environ()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                notes.append(f"pid {proc.pid}: cannot read its environment (run as root to audit it)")
                environ = {}
            user = proc.info.get("username")
            origin = Origin("process", f"/proc/{proc.pid}/environ")
            env = {
                k: EnvValue(k, v, origin)
                for k, v in environ.items()
                if k.startswith("OLLAMA_") or k == "HOME"
            }
            home = env.pop("HOME").value if "HOME" in env else _home_of(user)
            unit = _unit_of(proc.pid)
            instances.append(
                Instance(
                    kind="process",
                    target="process:ollama serve" + (f" ({unit})" if unit else ""),
                    label=f"running `ollama serve` (pid {proc.pid}, user {user})",
                    env=env,
                    user=user,
                    home=home,
                    extra={"pid": proc.pid, "unit": unit, "cmdline": redact_argv(cmdline)},
                )
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return instances, gateways, notes
