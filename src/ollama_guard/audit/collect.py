"""Gather the facts every check works from, reading only under the root (and nothing live with --root)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ollama_guard.audit.model import Facts, Instance, VersionObservation
from ollama_guard.audit.rootfs import RootFS
from ollama_guard.audit.sources import (
    accounts,
    compose,
    docker,
    envfiles,
    gateway,
    launchd,
    processes,
    sockets,
    store,
    systemd,
    version,
)
from ollama_guard.errors import InputError
from ollama_guard.paths import default_models_dir
from ollama_guard.redact import redact_text


@dataclass
class AuditOptions:
    root: Path | None = None  # None: the live host
    models_dirs: list[str] = field(default_factory=list)  # logical paths (inside the root)
    compose_files: list[Path] = field(default_factory=list)  # real paths on this machine
    ollama_version: str | None = None


def collect(options: AuditOptions) -> tuple[RootFS, Facts]:
    live = options.root is None
    fs = RootFS(options.root if options.root is not None else Path("/"), live=live)
    facts = Facts(live=live, root=str(fs.root))
    for models in options.models_dirs:
        if not fs.is_dir(models):
            where = f" under --root {fs.root}" if not live else ""
            raise InputError(f"--models-dir {models}: no such directory{where}")
    facts.passwd = accounts.read_passwd(fs)
    facts.hosts_file = accounts.read_hosts(fs)

    units = systemd.collect(fs, facts.passwd)
    facts.instances.extend(units)
    loaded: set[str] = set()
    for unit in units:
        loaded.update(unit.extra.get("env_files", []))
        for missing in unit.extra.get("missing_env_files", []):
            facts.notes.append(
                f"{unit.target}: EnvironmentFile {missing} does not exist (the unit will not start)"
            )
    facts.instances.extend(envfiles.collect(fs, loaded))
    facts.instances.extend(launchd.collect(fs))

    extra_dirs = [os.getcwd()] if live else []
    default_ip = docker.daemon_default_ip(fs)
    found, files, notes = compose.collect(fs, options.compose_files, extra_dirs, default_ip)
    facts.instances.extend(found)
    facts.notes.extend(notes)

    homes = sorted({h for _uid, h in facts.passwd.values()} | {"/root"})
    facts.gateway = gateway.collect(fs, homes)

    if live:
        _collect_live(fs, facts)
    else:
        facts.notes.append("--root: running processes, sockets, Docker and the local API were not consulted")

    facts.versions.extend(version.from_images(facts.instances))
    if options.ollama_version:
        facts.versions.append(VersionObservation(options.ollama_version, "--ollama-version"))
    models_dirs = list(options.models_dirs)
    if live:
        own = str(default_models_dir())
        if own not in models_dirs and fs.is_dir(own):
            models_dirs.append(own)
    facts.stores = store.locations(fs, facts.instances, models_dirs)
    facts.notes.extend(f"compose file read: {f}" for f in files)
    facts.notes = [redact_text(n) for n in facts.notes]  # notes quote paths and error messages
    return fs, facts


def _collect_live(fs: RootFS, facts: Facts) -> None:
    procs, gateway_procs, notes = processes.collect()
    facts.instances.extend(procs)
    facts.gateway.processes.extend(gateway_procs)
    facts.notes.extend(notes)
    containers, notes = docker.collect(fs)
    facts.instances.extend(containers)
    facts.notes.extend(notes)
    socks, notes = sockets.collect()
    facts.sockets = socks
    facts.notes.extend(notes)
    for sock in socks:
        if processes.is_gateway((sock.process or "").split()):
            facts.gateway.listening.append(f"{sock.ip}:{sock.port}")
    facts.versions.extend(version.from_cli())
    for port in sorted(_loopback_reachable_ports(facts, procs)):
        obs = version.from_api(port)
        if obs is not None:
            facts.versions.append(obs)


def _loopback_reachable_ports(facts: Facts, procs: list[Instance]) -> set[int]:
    """Ports where a local Ollama listens and 127.0.0.1 reaches it (loopback or all interfaces)."""
    ports: set[int] = set()
    server_pids = {p.extra.get("pid") for p in procs}
    for sock in facts.sockets:
        owned = sock.pid in server_pids or processes.is_ollama_server((sock.process or "").split())
        if owned and sock.ip in ("127.0.0.1", "0.0.0.0", "::", "::ffff:127.0.0.1"):
            ports.add(sock.port)
    return ports
