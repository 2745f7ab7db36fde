"""Where Ollama keeps its identity key and models on the audited system."""

from __future__ import annotations

import posixpath

from ollama_guard.audit.model import Instance, StoreLocation
from ollama_guard.audit.rootfs import RootFS

# Installer service home (Linux), root (Docker volume mounted at /root/.ollama), ordinary users.
WELL_KNOWN_HOMES = ("/usr/share/ollama", "/root")


def locations(fs: RootFS, instances: list[Instance], explicit_models: list[str]) -> list[StoreLocation]:
    found: dict[tuple[str | None, str | None], StoreLocation] = {}

    def add(ollama_dir: str | None, models: str | None, owner: str | None, reason: str) -> None:
        key = (ollama_dir, models)
        if key in found:
            if owner and not found[key].owner:
                found[key] = StoreLocation(ollama_dir, models, owner, found[key].reason)
            return
        found[key] = StoreLocation(ollama_dir, models, owner, reason)

    for inst in instances:
        if inst.kind in ("compose", "docker") or not inst.home:
            continue
        ollama_dir = posixpath.join(inst.home, ".ollama")
        models = inst.value("OLLAMA_MODELS") or posixpath.join(ollama_dir, "models")
        if fs.exists(ollama_dir) or fs.exists(models):
            add(ollama_dir if fs.exists(ollama_dir) else None, models, inst.user, f"used by {inst.target}")
    homes = list(WELL_KNOWN_HOMES) + list(fs.children("/home", dirs_only=True))
    homes += list(fs.children("/Users", dirs_only=True))
    for home in homes:
        ollama_dir = posixpath.join(home, ".ollama")
        if fs.is_dir(ollama_dir):
            models = posixpath.join(ollama_dir, "models")
            add(ollama_dir, models, None, "default location")
    for models in explicit_models:
        add(None, models, None, "--models-dir")
    return list(found.values())
