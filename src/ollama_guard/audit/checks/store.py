"""store-permissions: who else can read the identity key or change the model store."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext
from ollama_guard.audit.fixes import CommandFix
from ollama_guard.audit.model import StoreLocation
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.audit.rootfs import mode_string
from ollama_guard.findings import Severity

KEY_NAME = "id_ed25519"
_MAX_ENTRIES = 20000


@dataclass
class _Problem:
    severity: Severity
    path: str
    what: str
    commands: tuple[str, ...]
    evidence: dict[str, object]


def _owner_name(ctx: AuditContext, st: os.stat_result) -> str:
    return ctx.facts.user_by_uid(st.st_uid) or str(st.st_uid)


def _owner_ok(ctx: AuditContext, st: os.stat_result, owner: str | None) -> bool:
    if owner is None or st.st_uid == 0:
        return True
    expected = ctx.facts.passwd.get(owner)
    return expected is None or expected[0] == st.st_uid


def _base_evidence(ctx: AuditContext, path: str, st: os.stat_result) -> dict[str, object]:
    return {"path": path, "mode": mode_string(st), "owner": _owner_name(ctx, st), "uid": st.st_uid}


def _check_key(ctx: AuditContext, loc: StoreLocation, ollama_dir: str) -> Iterator[_Problem]:
    key = posixpath.join(ollama_dir, KEY_NAME)
    st = ctx.fs.stat(key)
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    ev = _base_evidence(ctx, key, st)
    if mode & 0o066:
        who = (
            "group and others"
            if mode & 0o006 and mode & 0o060
            else ("others" if mode & 0o006 else "its group")
        )
        yield _Problem(
            Severity.HIGH,
            key,
            f"the identity key is readable or writable by {who}",
            (f"chmod 0600 {key}",),
            ev,
        )
    if not _owner_ok(ctx, st, loc.owner):
        yield _Problem(
            Severity.MEDIUM,
            key,
            f"the identity key belongs to {ev['owner']}, not {loc.owner}",
            (f"chown {loc.owner}: {key}",),
            ev,
        )


def _check_dir(ctx: AuditContext, loc: StoreLocation, path: str, label: str) -> Iterator[_Problem]:
    st = ctx.fs.stat(path)
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode)
    ev = _base_evidence(ctx, path, st)
    if mode & 0o002:
        yield _Problem(
            Severity.HIGH, path, f"{label} is writable by every local user", (f"chmod o-w {path}",), ev
        )
    elif mode & 0o020:
        yield _Problem(Severity.MEDIUM, path, f"{label} is writable by its group", (f"chmod g-w {path}",), ev)
    if not _owner_ok(ctx, st, loc.owner):
        yield _Problem(
            Severity.MEDIUM,
            path,
            f"{label} belongs to {ev['owner']}, not {loc.owner}",
            (f"chown -R {loc.owner}: {path}",),
            ev,
        )


def _check_store_tree(ctx: AuditContext, loc: StoreLocation, models: str) -> Iterator[_Problem]:
    """Every manifest and blob under the store: writable by others, or owned by someone else."""
    world: list[str] = []
    group: list[str] = []
    foreign: list[str] = []
    seen = 0
    for sub in ("manifests", "blobs"):
        top = ctx.fs.host_path(posixpath.join(models, sub))
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                seen += 1
                if seen > _MAX_ENTRIES:
                    break
                host = os.path.join(dirpath, name)
                try:
                    st = os.lstat(host)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    continue
                logical = posixpath.join(
                    models, os.path.relpath(host, ctx.fs.host_path(models)).replace(os.sep, "/")
                )
                mode = stat.S_IMODE(st.st_mode)
                if mode & 0o002:
                    world.append(logical)
                elif mode & 0o020:
                    group.append(logical)
                if not _owner_ok(ctx, st, loc.owner):
                    foreign.append(logical)
    if world:
        yield _Problem(
            Severity.HIGH,
            models,
            f"{len(world)} entries of the model store are writable by every local user",
            (f"chmod -R o-w {models}",),
            {"path": models, "examples": world[:5], "count": len(world)},
        )
    if group:
        yield _Problem(
            Severity.MEDIUM,
            models,
            f"{len(group)} entries of the model store are writable by their group",
            (f"chmod -R g-w {models}",),
            {"path": models, "examples": group[:5], "count": len(group)},
        )
    if foreign:
        yield _Problem(
            Severity.MEDIUM,
            models,
            f"{len(foreign)} entries of the model store belong to another user",
            (f"chown -R {loc.owner}: {models}",),
            {"path": models, "examples": foreign[:5], "count": len(foreign)},
        )


def _check_readable_store(ctx: AuditContext, models: str) -> Iterator[_Problem]:
    st = ctx.fs.stat(models)
    if st is None:
        return
    if stat.S_IMODE(st.st_mode) & 0o005 == 0o005:
        yield _Problem(
            Severity.LOW,
            models,
            "models can be read (copied) by every local user",
            (f"chmod o-rx {models}",),
            _base_evidence(ctx, models, st),
        )


@check("store-permissions")
def store_permissions(ctx: AuditContext) -> Iterator[Outcome]:
    for loc in ctx.facts.stores:
        problems: list[_Problem] = []
        if loc.ollama_dir:
            problems += _check_dir(ctx, loc, loc.ollama_dir, "the .ollama directory")
            problems += _check_key(ctx, loc, loc.ollama_dir)
            server_json = posixpath.join(loc.ollama_dir, "server.json")
            st = ctx.fs.stat(server_json)
            if st is not None and stat.S_IMODE(st.st_mode) & 0o022:
                problems.append(
                    _Problem(
                        Severity.MEDIUM,
                        server_json,
                        "server.json (cloud settings) is writable by others",
                        (f"chmod go-w {server_json}",),
                        _base_evidence(ctx, server_json, st),
                    )
                )
        if loc.models_dir and ctx.fs.is_dir(loc.models_dir):
            problems += _check_dir(ctx, loc, loc.models_dir, "the model store")
            for sub in ("manifests", "blobs"):
                problems += _check_dir(
                    ctx, loc, posixpath.join(loc.models_dir, sub), f"the store's {sub} directory"
                )
            problems += _check_store_tree(ctx, loc, loc.models_dir)
            problems += _check_readable_store(ctx, loc.models_dir)
        for p in problems:
            evidence = dict(p.evidence)
            evidence["expected_owner"] = loc.owner
            evidence["found_because"] = loc.reason
            yield outcome(
                "store-permissions",
                target=p.path,
                severity=p.severity,
                title=f"Ollama store permissions: {p.what}",
                detail=f"{p.path}: {p.what}.",
                evidence=evidence,
                fixes=[CommandFix(p.commands, "Run on the audited host:")],
            )
