"""Is an ollama-guard gateway in front of Ollama? Config files and units (any root) and running
`ollama-guard serve` processes and their sockets (live only)."""

from __future__ import annotations

import posixpath
import tomllib

from ollama_guard.audit.envsyntax import parse_unit_file
from ollama_guard.audit.model import GatewayPresence
from ollama_guard.audit.rootfs import RootFS
from ollama_guard.audit.sources.systemd import SYSTEM_UNIT_DIRS
from ollama_guard.redact import redact_text

CONFIG_DIRS = ("/etc/ollama-guard", "/usr/local/etc/ollama-guard")
CONFIG_FILES = ("/etc/ollama-guard.toml",)


def _config_candidates(fs: RootFS, homes: list[str]) -> list[str]:
    paths = list(CONFIG_FILES)
    dirs = list(CONFIG_DIRS) + [posixpath.join(h, ".config/ollama-guard") for h in homes]
    for directory in dirs:
        paths.extend(posixpath.join(directory, n) for n in fs.listdir(directory) if n.endswith(".toml"))
    return [p for p in paths if fs.is_file(p)]


def collect(fs: RootFS, homes: list[str]) -> GatewayPresence:
    found = GatewayPresence()
    for path in _config_candidates(fs, homes):
        text = fs.read_text(path) or ""
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError):
            continue
        section = data.get("gateway")
        if not isinstance(section, dict):
            continue
        found.configs.append(path)
        upstream = section.get("upstream")
        if isinstance(upstream, str):
            found.upstreams.append(redact_text(upstream))
    for directory in SYSTEM_UNIT_DIRS:
        for name in fs.listdir(directory):
            if not name.endswith(".service"):
                continue
            path = posixpath.join(directory, name)
            for a in parse_unit_file(fs.read_text(path) or ""):
                if a.key == "ExecStart" and "ollama-guard" in a.value and "serve" in a.value.split():
                    found.configs.append(path)
    return found
