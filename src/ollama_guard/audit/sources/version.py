"""The installed Ollama version: `ollama -v` and the local server's GET /api/version (live only,
loopback only, time-bounded), image tags of Docker/Compose services, or --ollama-version."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request

from ollama_guard.audit.model import Instance, VersionObservation
from ollama_guard.audit.sources.compose import image_version

TIMEOUT_S = 3.0
_SERVER = re.compile(r"^ollama version is\s+(\S+)", re.MULTILINE)
_CLIENT = re.compile(r"client version is\s+(\S+)")


def parse_ollama_v(output: str) -> list[VersionObservation]:
    out: list[VersionObservation] = []
    m = _SERVER.search(output)
    if m:
        out.append(VersionObservation(m.group(1), "ollama -v (server)"))
    c = _CLIENT.search(output)
    if c:
        out.append(VersionObservation(c.group(1), "ollama -v (client binary)"))
    return out


def from_cli() -> list[VersionObservation]:
    exe = shutil.which("ollama")
    if exe is None:
        return []
    try:
        proc = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_ollama_v(proc.stdout + "\n" + proc.stderr)


def from_api(port: int) -> VersionObservation | None:
    """GET http://127.0.0.1:PORT/api/version — never any other address."""
    url = f"http://127.0.0.1:{port}/api/version"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            data = json.loads(resp.read(4096))
    except (OSError, ValueError, RecursionError, urllib.error.URLError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    if not isinstance(version, str) or not version:
        return None
    return VersionObservation(version, f"GET {url}")


def from_images(instances: list[Instance]) -> list[VersionObservation]:
    out: list[VersionObservation] = []
    for inst in instances:
        tag = image_version(inst.image)
        if tag:
            out.append(VersionObservation(tag, f"image tag {inst.image} ({inst.target})"))
    return out
