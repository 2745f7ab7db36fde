"""systemd units that run `ollama serve`: unit file, drop-ins, Environment= and EnvironmentFile=.

Effective environment follows systemd: files are applied unit first, then drop-ins sorted by file name
(a drop-in name in /etc masks the same name in /run and /usr/lib); later `Environment=` assignments win;
an empty assignment resets the list; variables from `EnvironmentFile=` override `Environment=`.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass, field

from ollama_guard.audit.envsyntax import (
    UnitAssignment,
    environment_assignments,
    parse_systemd_env_file,
    parse_unit_file,
    systemd_words,
)
from ollama_guard.audit.model import EnvValue, Instance, Origin
from ollama_guard.audit.rootfs import RootFS
from ollama_guard.audit.sources.accounts import home_of

SYSTEM_UNIT_DIRS = (
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
USER_UNIT_DIRS = ("/etc/systemd/user", "/usr/lib/systemd/user")
DROPIN_NAME = "zz-ollama-guard.conf"


@dataclass
class UnitFiles:
    name: str
    scope: str  # system | user
    user_home: str | None  # for user units: whose ~/.config/systemd/user
    main: str
    dropins: list[str] = field(default_factory=list)
    search_dirs: tuple[str, ...] = ()


def _is_ollama_serve(exec_start: str) -> bool:
    words = systemd_words(exec_start.lstrip("@-:+!")) or []
    while words and posixpath.basename(words[0]) == "env":
        words = [w for w in words[1:] if "=" not in w or w.startswith("-")]
    return bool(words) and posixpath.basename(words[0]) == "ollama" and "serve" in words[1:]


def _runs_ollama(fs: RootFS, path: str, name: str) -> bool:
    if name.startswith("ollama-guard"):
        return False
    if name in ("ollama.service", "ollama@.service"):
        return True
    text = fs.read_text(path) or ""
    return any(
        a.key == "ExecStart" and _is_ollama_serve(a.value)
        for a in parse_unit_file(text)
        if a.section == "Service"
    )


def _search_paths(fs: RootFS, passwd_homes: list[str]) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(scope, user home, ordered unit dirs) for system units and each user's own units."""
    out: list[tuple[str, str | None, tuple[str, ...]]] = [("system", None, SYSTEM_UNIT_DIRS)]
    for home in passwd_homes:
        user_dir = posixpath.join(home, ".config/systemd/user")
        if fs.is_dir(user_dir):
            out.append(("user", home, (user_dir, *USER_UNIT_DIRS)))
    return out


def find_units(fs: RootFS, homes: list[str]) -> list[UnitFiles]:
    units: list[UnitFiles] = []
    for scope, home, dirs in _search_paths(fs, homes):
        seen: set[str] = set()
        for directory in dirs:
            if scope == "user" and directory in USER_UNIT_DIRS:
                continue  # shared user-unit dirs are only searched for drop-ins
            for name in fs.listdir(directory):
                if not name.endswith(".service") or name in seen:
                    continue
                path = posixpath.join(directory, name)
                seen.add(name)  # the first directory that has the name wins (even a mask)
                if not fs.is_file(path) or not _runs_ollama(fs, path, name):
                    continue
                units.append(UnitFiles(name, scope, home, path, _dropins(fs, name, dirs), dirs))
    return units


def _dropins(fs: RootFS, unit: str, dirs: tuple[str, ...]) -> list[str]:
    chosen: dict[str, str] = {}
    for directory in dirs:
        ddir = posixpath.join(directory, unit + ".d")
        for name in fs.listdir(ddir):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = posixpath.join(ddir, name)
    return [chosen[n] for n in sorted(chosen)]


def _expand_env_file_spec(fs: RootFS, spec: str) -> tuple[list[str], bool]:
    """`-/etc/default/ollama` → ([paths], optional). Globs in the last component are expanded."""
    optional = spec.startswith("-")
    path = spec[1:] if optional else spec
    if any(ch in path for ch in "*?["):
        directory, pattern = posixpath.split(path)
        return [
            posixpath.join(directory, n) for n in fs.listdir(directory) if fnmatch.fnmatch(n, pattern)
        ], optional
    return [path], optional


def load_unit(fs: RootFS, unit: UnitFiles, passwd: dict[str, tuple[int, str]]) -> Instance:
    env: dict[str, EnvValue] = {}
    env_files: list[tuple[str, int, str, str]] = []  # (spec, line, text, unit file)
    user: str | None = None
    exec_env: dict[str, EnvValue] = {}
    unset_names: list[str] = []  # UnsetEnvironment=: applied last, to every source
    for path in [unit.main, *unit.dropins]:
        for a in parse_unit_file(fs.read_text(path) or ""):
            if a.section != "Service":
                continue
            if a.key == "UnsetEnvironment":
                words = systemd_words(a.value)
                unset = [] if not a.value else (words or [])
                if not a.value:
                    unset_names.clear()
                unset_names.extend(unset)
                continue
            user = _apply(a, path, env, env_files, exec_env, user)
    missing: list[str] = []
    loaded: list[str] = []
    file_env: dict[str, EnvValue] = {}
    for spec, line, _text, unit_path in env_files:
        paths, optional = _expand_env_file_spec(fs, spec)
        for p in paths:
            content = fs.read_text(p)
            if content is None:
                if not optional:
                    missing.append(f"{p} (required by {unit_path}:{line})")
                continue
            loaded.append(p)
            for entry in parse_systemd_env_file(content):
                origin = Origin("environment-file", p, entry.line, entry.text)
                file_env[entry.name] = EnvValue(entry.name, entry.value, origin)
    env.update(file_env)
    for item in unset_names:
        name, sep, value = item.partition("=")
        if name in env and (not sep or env[name].value == value):
            del env[name]
    env.update(exec_env)
    if unit.scope == "user":
        home = unit.user_home
        owner = next((n for n, (_uid, h) in passwd.items() if h == home), None)
    else:
        owner = user or "root"
        home = home_of(owner, passwd)
    if "HOME" in env:
        home = env["HOME"].value
    dropin_base = unit.search_dirs[0]
    target = (
        f"systemd:{unit.name}" if unit.scope == "system" else f"systemd-user:{unit.user_home}:{unit.name}"
    )
    return Instance(
        kind="systemd",
        target=target,
        label=f"systemd {unit.scope} unit {unit.name} ({unit.main})",
        env=env,
        user=owner,
        home=home,
        extra={
            "unit": unit.name,
            "scope": unit.scope,
            "unit_path": unit.main,
            "dropins": list(unit.dropins),
            "dropin_path": posixpath.join(dropin_base, unit.name + ".d", DROPIN_NAME),
            "env_files": loaded,
            "missing_env_files": missing,
        },
    )


def _apply(
    a: UnitAssignment,
    path: str,
    env: dict[str, EnvValue],
    env_files: list[tuple[str, int, str, str]],
    exec_env: dict[str, EnvValue],
    user: str | None,
) -> str | None:
    origin = Origin("systemd", path, a.line, a.text)
    if a.key == "Environment":
        pairs = environment_assignments(a.value)
        if pairs is None:
            return user
        if not a.value:
            env.clear()
        for name, value in pairs:
            env[name] = EnvValue(name, value, origin)
    elif a.key == "EnvironmentFile":
        if not a.value:
            env_files.clear()
        else:
            env_files.append((a.value, a.line, a.text, path))
    elif a.key == "User":
        return a.value or None
    elif a.key == "ExecStart":
        exec_env.clear()
        words = systemd_words(a.value.lstrip("@-:+!")) or []
        if words and posixpath.basename(words[0]) == "env":
            for word in words[1:]:
                name, sep, value = word.partition("=")
                if not sep:
                    break
                exec_env[name] = EnvValue(name, value, origin)
    return user


def collect(fs: RootFS, passwd: dict[str, tuple[int, str]]) -> list[Instance]:
    homes = sorted({h for _uid, h in passwd.values() if h.startswith(("/home/", "/root", "/Users/"))})
    if "/root" not in homes:
        homes.append("/root")
    for home in fs.children("/home", dirs_only=True):
        if home not in homes:
            homes.append(home)
    return [load_unit(fs, unit, passwd) for unit in find_units(fs, homes)]
