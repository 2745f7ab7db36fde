"""Running Ollama containers, from `docker inspect` (live host only, time-bounded)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from ollama_guard.audit.hostspec import DEFAULT_PORT, DOCKER_IMAGE_BIND, parse_ollama_host
from ollama_guard.audit.model import EnvValue, Instance, Origin, PortPublish
from ollama_guard.audit.rootfs import RootFS

TIMEOUT_S = 5.0


def daemon_default_ip(fs: RootFS) -> str:
    """`"ip"` in /etc/docker/daemon.json: the host address used for `-p PORT:PORT` without one."""
    text = fs.read_text("/etc/docker/daemon.json")
    if not text:
        return ""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return ""
    value = data.get("ip") if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _docker(args: list[str]) -> str | None:
    exe = shutil.which("docker")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def is_ollama_image(image: str) -> bool:
    repo = image.lower().split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: repo.rfind(":")]
    return repo.endswith("ollama/ollama") or repo.rsplit("/", 1)[-1] == "ollama"


def _instance(info: dict[str, Any], default_ip: str) -> Instance | None:
    config = info.get("Config") or {}
    image = str(config.get("Image") or "")
    if not is_ollama_image(image):
        return None
    name = str(info.get("Name") or info.get("Id", "")[:12]).lstrip("/")
    env: dict[str, EnvValue] = {}
    for item in config.get("Env") or []:
        key, sep, value = str(item).partition("=")
        if sep:
            env[key] = EnvValue(key, value, Origin("docker", f"docker inspect {name}", None, f"Env {item}"))
    host_config = info.get("HostConfig") or {}
    network_mode = str(host_config.get("NetworkMode") or "")
    bind = parse_ollama_host(env["OLLAMA_HOST"].value if "OLLAMA_HOST" in env else DOCKER_IMAGE_BIND)
    port = bind.port or DEFAULT_PORT
    publishes = []
    bindings = (info.get("NetworkSettings") or {}).get("Ports") or host_config.get("PortBindings") or {}
    for key, entries in bindings.items():
        cport, _, proto = str(key).partition("/")
        if not cport.isdigit() or int(cport) != port or (proto or "tcp") != "tcp":
            continue
        for entry in entries or []:
            host_ip = str(entry.get("HostIp") or default_ip)
            host_port = str(entry.get("HostPort") or "")
            spec = f"{host_ip}:{host_port}:{cport}" if host_ip else f"{host_port}:{cport}"
            origin = Origin("docker", f"docker inspect {name}", None, f"Ports {key} -> {spec}")
            publishes.append(PortPublish(host_ip, host_port, int(cport), "tcp", origin, spec))
    labels = config.get("Labels") or {}
    return Instance(
        kind="docker",
        target=f"docker:{name}",
        label=f"Docker container {name} ({image})",
        env=env,
        default_bind=DOCKER_IMAGE_BIND,
        containerised=network_mode != "host",
        host_network=network_mode == "host",
        publishes=publishes,
        image=image,
        extra={"container": name, "labels": {k: v for k, v in labels.items() if "version" in k}},
    )


def collect(fs: RootFS) -> tuple[list[Instance], list[str]]:
    ids = _docker(["ps", "-q", "--no-trunc"])
    if ids is None:
        return [], ["docker: no daemon answered (skipped)"]
    id_list = ids.split()
    if not id_list:
        return [], []
    raw = _docker(["inspect", *id_list])
    if raw is None:
        return [], ["docker: `docker inspect` failed (skipped)"]
    try:
        infos = json.loads(raw)
    except (ValueError, RecursionError):
        return [], ["docker: unreadable `docker inspect` output"]
    default_ip = daemon_default_ip(fs)
    out = [inst for info in infos if isinstance(info, dict) if (inst := _instance(info, default_ip))]
    return out, []
