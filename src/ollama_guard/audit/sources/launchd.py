"""macOS launchd jobs that run Ollama: EnvironmentVariables in LaunchAgents/LaunchDaemons plists."""

from __future__ import annotations

import plistlib
import posixpath
from typing import Any

from ollama_guard.audit.model import EnvValue, Instance, Origin
from ollama_guard.audit.rootfs import RootFS

SYSTEM_DIRS = ("/Library/LaunchDaemons", "/Library/LaunchAgents")


def _plist_dirs(fs: RootFS) -> list[tuple[str, str | None]]:
    dirs: list[tuple[str, str | None]] = [(d, None) for d in SYSTEM_DIRS]
    for home in [*fs.children("/Users", dirs_only=True), "/root", *fs.children("/home", dirs_only=True)]:
        dirs.append((posixpath.join(home, "Library/LaunchAgents"), home))
    return dirs


def _runs_ollama(job: dict[str, Any]) -> bool:
    label = str(job.get("Label", "")).lower()
    args = job.get("ProgramArguments") or []
    program = str(job.get("Program", ""))
    words = [str(a) for a in args] if isinstance(args, list) else []
    first = program or (words[0] if words else "")
    base = posixpath.basename(first).lower()
    if "ollama-guard" in label or base == "ollama-guard":
        return False
    return "ollama" in label or base in ("ollama", "ollama.app") or "Ollama.app" in first


def collect(fs: RootFS) -> list[Instance]:
    out: list[Instance] = []
    for directory, home in _plist_dirs(fs):
        for name in fs.listdir(directory):
            if not name.endswith(".plist"):
                continue
            path = posixpath.join(directory, name)
            data = fs.read_bytes(path)
            if data is None:
                continue
            try:
                job = plistlib.loads(data)
            except Exception:  # noqa: S112 - a malformed plist is not ours to judge
                continue
            if not isinstance(job, dict) or not _runs_ollama(job):
                continue
            variables = job.get("EnvironmentVariables") or {}
            env = {}
            if isinstance(variables, dict):
                for key, value in variables.items():
                    origin = Origin("launchd", path, None, f"EnvironmentVariables.{key} = {value}")
                    env[str(key)] = EnvValue(str(key), str(value), origin)
            user = job.get("UserName")
            out.append(
                Instance(
                    kind="launchd",
                    target=f"launchd:{path}",
                    label=f"launchd job {job.get('Label', name)} ({path})",
                    env=env,
                    user=str(user) if user else (posixpath.basename(home) if home else None),
                    home=home,
                    extra={"plist": path},
                )
            )
    return out
