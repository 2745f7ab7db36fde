"""Docker Compose files that run Ollama: published ports, OLLAMA_* environment, host networking.

Files are found under common locations (or given with --compose) and merged with their default
override file the way `docker compose` does: ports lists are concatenated, environment maps merged,
and the `!override` / `!reset` tags replace or clear a value.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ollama_guard.audit.envsyntax import parse_pam_environment
from ollama_guard.audit.hostspec import DEFAULT_PORT, DOCKER_IMAGE_BIND, parse_ollama_host
from ollama_guard.audit.model import EnvValue, Instance, Origin, PortPublish
from ollama_guard.audit.rootfs import RootFS
from ollama_guard.errors import InputError

COMPOSE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_NAMES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
SEARCH_DIRS = ("/opt", "/srv", "/etc", "/root", "/home")
_MAX_DEPTH = 3
_MAX_DIRS = 4000
_SKIP_DIRS = frozenset(
    {".git", "node_modules", "__pycache__", ".cache", "proc", "sys", "models", "blobs", ".venv"}
)
_INTERPOLATION = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass(frozen=True)
class Tagged:
    tag: str  # "override" | "reset"
    value: Any


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that understands Compose's merge tags."""


def _tagged(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Tagged:
        if isinstance(node, yaml.SequenceNode):
            return Tagged(tag, loader.construct_sequence(node, deep=True))
        if isinstance(node, yaml.MappingNode):
            return Tagged(tag, loader.construct_mapping(node, deep=True))
        return Tagged(tag, loader.construct_scalar(node))  # type: ignore[arg-type]

    return construct


_ComposeLoader.add_constructor("!override", _tagged("override"))
_ComposeLoader.add_constructor("!reset", _tagged("reset"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 - SafeLoader subclass with two data tags


def _untag(value: Any) -> Any:
    if isinstance(value, Tagged):
        return None if value.tag == "reset" else value.value
    return value


def find_compose_files(fs: RootFS, extra_dirs: list[str]) -> list[str]:
    """Compose files under the search directories (breadth first, bounded depth and count).

    Symlinked directories are not followed; paths are returned as logical paths of the root.
    """
    found: list[str] = []
    visited = 0
    queue: list[tuple[str, Path, int]] = [(d, fs.host_path(d), 0) for d in (*SEARCH_DIRS, *extra_dirs)]
    seen: set[Path] = set()
    while queue and visited < _MAX_DIRS:
        logical, host, depth = queue.pop(0)
        if host in seen:
            continue
        seen.add(host)
        visited += 1
        try:
            entries = sorted(os.scandir(host), key=lambda e: e.name)
        except OSError:
            continue
        names = {e.name for e in entries}
        for name in COMPOSE_NAMES:
            if name in names:
                found.append(posixpath.join(logical, name))
                break
        if depth >= _MAX_DEPTH:
            continue
        for entry in entries:
            if entry.name in _SKIP_DIRS or (entry.name.startswith(".") and depth > 0):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    queue.append((posixpath.join(logical, entry.name), Path(entry.path), depth + 1))
            except OSError:
                continue
    return found


def _interpolate(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1) or m.group(4)
            op, arg = m.group(2), m.group(3) or ""
            current = variables.get(name)
            if op in (":-", "-"):
                if current is None or (op == ":-" and current == ""):
                    return arg
            elif op in (":+", "+"):
                return arg if current else ""
            return current or ""

        return _INTERPOLATION.sub(repl, value)
    if isinstance(value, list):
        return [_interpolate(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, Tagged):
        return Tagged(value.tag, _interpolate(value.value, variables))
    return value


def _env_map(value: Any) -> dict[str, str | None]:
    value = _untag(value)
    out: dict[str, str | None] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = None if v is None else str(v)
    elif isinstance(value, list):
        for item in value:
            name, sep, val = str(item).partition("=")
            out[name] = val if sep else None
    return out


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Tagged):
            merged[key] = _untag(value)
        elif key == "ports":
            merged[key] = list(_untag(base.get(key)) or []) + [
                p for p in (value or []) if p not in (base.get(key) or [])
            ]
        elif key == "environment":
            env = _env_map(base.get(key))
            env.update(_env_map(value))
            merged[key] = env
        else:
            merged[key] = value
    return merged


def _line_of(lines: list[str], needle: str) -> tuple[int | None, str | None]:
    for number, line in enumerate(lines, start=1):
        if needle in line:
            return number, line.strip()
    return None, None


def _is_ollama_service(name: str, service: dict[str, Any]) -> bool:
    image = str(_untag(service.get("image")) or "").lower()
    repo = image.rsplit("@", 1)[0]
    repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    if repo.endswith("ollama/ollama") or repo.rsplit("/", 1)[-1] == "ollama":
        return True
    # A service that only *uses* Ollama (e.g. OLLAMA_HOST=http://ollama:11434 in a web UI) is not one.
    command = f"{_untag(service.get('entrypoint')) or ''} {_untag(service.get('command')) or ''}"
    return name == "ollama" or ("ollama" in command and "serve" in command)


def image_version(image: str | None) -> str | None:
    """The tag of an `ollama/ollama:TAG` image when it names a release (e.g. 0.6.5, 0.6.5-rocm)."""
    if not image or "@" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.split(":", 1)[1]
    m = re.fullmatch(r"v?(\d+\.\d+\.\d+(?:-rc\d+)?)(?:-[a-z]+)?", tag)
    return m.group(1) if m else None


def parse_port_spec(spec: Any, default_host_ip: str) -> list[tuple[str, str, int, str]]:
    """Compose `ports:` entry → [(host_ip, host_port, container_port, protocol)], ranges expanded."""
    if isinstance(spec, dict):
        target = str(spec.get("target", ""))
        published = "" if spec.get("published") is None else str(spec.get("published"))
        host_ip = str(spec.get("host_ip") or default_host_ip)
        protocol = str(spec.get("protocol") or "tcp").lower()
        return [(host_ip, published, p, protocol) for p in _port_range(target)]
    text = str(spec).strip()
    protocol = "tcp"
    if "/" in text:
        text, protocol = text.rsplit("/", 1)
        protocol = protocol.lower()
    host_ip = ""
    if text.startswith("["):
        end = text.find("]")
        host_ip, text = text[1:end], text[end + 2 :]
        parts = text.split(":")
    else:
        parts = text.split(":")
        if len(parts) > 3:
            host_ip, parts = ":".join(parts[:-2]), parts[-2:]
        elif len(parts) == 3:
            host_ip, parts = parts[0], parts[1:]
    if len(parts) == 1:
        host_port, container = "", parts[0]
    else:
        host_port, container = parts[0], parts[1]
    return [(host_ip or default_host_ip, host_port, p, protocol) for p in _port_range(container)]


def _port_range(text: str) -> list[int]:
    text = text.strip()
    lo, sep, hi = text.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        return []
    start, end = int(lo), int(hi) if sep else int(lo)
    if end < start or end - start > 1024:
        return []
    return list(range(start, end + 1))


def _read_dotenv(fs: RootFS | None, directory: str) -> dict[str, str]:
    text = _read(fs, posixpath.join(directory, ".env"))
    return {e.name: e.value for e in parse_pam_environment(text or "")}


def _read(fs: RootFS | None, path: str) -> str | None:
    if fs is not None:
        return fs.read_text(path)
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def load_compose_file(
    fs: RootFS | None, path: str, *, default_host_ip: str = "", strict: bool = False
) -> tuple[list[Instance], list[str]]:
    """Instances for the Ollama services of one compose file (plus its override file).

    `fs` None means `path` is a real path on this machine (given with --compose).
    """
    notes: list[str] = []
    text = _read(fs, path)
    if text is None:
        if strict:
            raise InputError(f"cannot read compose file {path}")
        return [], [f"cannot read {path}"]
    directory, name = posixpath.split(path)
    files = [(path, text)]
    if name in COMPOSE_NAMES:
        for override in OVERRIDE_NAMES:
            otext = _read(fs, posixpath.join(directory, override))
            if otext is not None:
                files.append((posixpath.join(directory, override), otext))
                break
    variables = _read_dotenv(fs, directory)
    services: dict[str, dict[str, Any]] = {}
    where: dict[str, list[tuple[str, list[str]]]] = {}
    for fpath, ftext in files:
        try:
            doc = _interpolate(load_yaml(ftext), variables)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" line {mark.line + 1}" if mark is not None else ""
            if strict:
                raise InputError(f"compose file {fpath} is not valid YAML{at}") from None
            notes.append(f"{fpath}: not valid YAML{at}")
            continue
        except RecursionError:  # a hostile file nested thousands deep: not a Compose file we can judge
            if strict:
                raise InputError(f"compose file {fpath} is nested too deeply to read") from None
            notes.append(f"{fpath}: nested too deeply to read (skipped)")
            continue
        svc_map = doc.get("services") if isinstance(doc, dict) else None
        if not isinstance(svc_map, dict):
            continue
        for sname, svc in svc_map.items():
            if not isinstance(svc, dict):
                continue
            key = str(sname)
            services[key] = _merge_service(services.get(key, {}), svc)
            where.setdefault(key, []).append((fpath, ftext.splitlines()))
    instances = []
    for sname, svc in services.items():
        if _is_ollama_service(sname, svc):
            instances.append(_instance(fs, path, sname, svc, where[sname], default_host_ip))
    return instances, notes


def _locate(sources: list[tuple[str, list[str]]], needle: str) -> Origin:
    for fpath, lines in reversed(sources):
        line, text = _line_of(lines, needle)
        if line is not None:
            return Origin("compose", fpath, line, text)
    return Origin("compose", sources[-1][0])


def _instance(
    fs: RootFS | None,
    path: str,
    sname: str,
    svc: dict[str, Any],
    sources: list[tuple[str, list[str]]],
    default_host_ip: str,
) -> Instance:
    image = _untag(svc.get("image"))
    env: dict[str, EnvValue] = {}
    directory = posixpath.dirname(path)
    env_files = _untag(svc.get("env_file")) or []
    for item in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        rel = item.get("path") if isinstance(item, dict) else item
        if not rel:
            continue
        efile = posixpath.normpath(posixpath.join(directory, str(rel)))
        for entry in parse_pam_environment(_read(fs, efile) or ""):
            origin = Origin("compose", efile, entry.line, entry.text)
            env[entry.name] = EnvValue(entry.name, entry.value, origin)
    for name, value in _env_map(svc.get("environment")).items():
        if value is not None:
            env[name] = EnvValue(name, value, _locate(sources, name))
    default_bind = DOCKER_IMAGE_BIND
    bind = parse_ollama_host(env["OLLAMA_HOST"].value if "OLLAMA_HOST" in env else default_bind)
    listen_port = bind.port or DEFAULT_PORT
    publishes: list[PortPublish] = []
    for spec in _untag(svc.get("ports")) or []:
        for host_ip, host_port, cport, proto in parse_port_spec(spec, default_host_ip):
            if cport != listen_port or proto != "tcp":
                continue
            needle = str(spec) if not isinstance(spec, dict) else f"target: {spec.get('target')}"
            publishes.append(
                PortPublish(host_ip, host_port, cport, proto, _locate(sources, needle), str(spec))
            )
    network_mode = str(_untag(svc.get("network_mode")) or "")
    return Instance(
        kind="compose",
        target=f"compose:{path}#{sname}",
        label=f"Compose service {sname!r} in {path}",
        env=env,
        default_bind=default_bind,
        containerised=network_mode != "host",
        host_network=network_mode == "host",
        publishes=publishes,
        image=str(image) if image else None,
        extra={
            "compose_file": path,
            "service": sname,
            "override_file": posixpath.join(directory, _override_name(posixpath.basename(path))),
            "local_file": fs is None,
            "ports": [str(p) for p in _untag(svc.get("ports")) or []],
        },
    )


def _override_name(base: str) -> str:
    return "docker-compose.override.yml" if base.startswith("docker-compose") else "compose.override.yaml"


def collect(
    fs: RootFS, explicit: list[Path], extra_dirs: list[str], default_host_ip: str
) -> tuple[list[Instance], list[str], list[str]]:
    """(instances, compose files read, notes)."""
    instances: list[Instance] = []
    notes: list[str] = []
    files = find_compose_files(fs, extra_dirs)
    for path in files:
        found, n = load_compose_file(fs, path, default_host_ip=default_host_ip)
        instances.extend(found)
        notes.extend(n)
    for local in explicit:
        found, n = load_compose_file(None, str(local.resolve()), default_host_ip=default_host_ip, strict=True)
        instances.extend(found)
        notes.extend(n)
    return instances, files + [str(p) for p in explicit], notes
