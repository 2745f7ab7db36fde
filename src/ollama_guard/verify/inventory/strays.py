"""Files that have no business in a store — symlinks, download leftovers, temp files, strays:
``unexpected-file``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ollama_guard.findings import Finding, Severity
from ollama_guard.verify.inventory.model import Inventory

PARTIAL_NAME = re.compile(r"sha256-[0-9a-fA-F]{64}-partial(?:-\d+)?")
TEMP_NAME = re.compile(r"(?:sha256-[^/]*|\..*\.tmp|.*\.(?:tmp|partial|part))")


def classify_stray(inv: Inventory, entry: os.DirEntry[str], *, where: str) -> None:
    path = Path(entry.path)
    if entry.is_symlink():
        _symlink(inv, path)
        return
    if entry.is_dir(follow_symlinks=False):
        unexpected(inv, path, Severity.MEDIUM, f"unexpected directory in the {where}", kind="directory")
        return
    if not entry.is_file(follow_symlinks=False):
        unexpected(
            inv,
            path,
            Severity.HIGH,
            f"special file (not a regular file or directory) in the {where}",
            kind="special-file",
        )
        return
    name = entry.name
    if PARTIAL_NAME.fullmatch(name):
        unexpected(
            inv,
            path,
            Severity.LOW,
            "download leftover (an interrupted or running `ollama pull`)",
            kind="partial-download",
            remediation="If no pull is running, delete it (or restart Ollama, which cleans up).",
        )
    elif TEMP_NAME.fullmatch(name):
        unexpected(
            inv,
            path,
            Severity.LOW,
            "temporary file (an interrupted blob upload, create or write)",
            kind="temp-file",
            remediation="If Ollama is not writing it right now, delete it.",
        )
    else:
        unexpected(
            inv, path, Severity.MEDIUM, f"file that does not belong in the {where}", kind="stray-file"
        )


def _symlink(inv: Inventory, path: Path) -> None:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    resolved = (path.parent / target).resolve(strict=False)
    root = inv.root.resolve()
    leaves = resolved != root and root not in resolved.parents
    severity = Severity.HIGH if leaves else Severity.MEDIUM
    detail = f"symlink to {target}" + (" — points OUTSIDE the model store" if leaves else "")
    unexpected(
        inv,
        path,
        severity,
        detail,
        kind="symlink",
        evidence={"link_target": target, "resolved": str(resolved), "leaves_store": leaves},
        remediation="Ollama never creates symlinks in its store: find out who did, then delete it. "
        "A link leaving the store lets whatever reads the store read (or overwrite) that file.",
    )


def store_dir_symlink(inv: Inventory, path: Path) -> None:
    target = os.readlink(path)
    inv.findings.append(
        Finding(
            rule="unexpected-file",
            severity=Severity.INFO,
            target=str(path),
            title=f"{path.name}/ is a symlink to {target}",
            detail="The store directory is a symlink (commonly used to move models to another disk); "
            "verify follows it. Make sure the target is owned and writable only by the Ollama user.",
            evidence={"kind": "store-symlink", "link_target": target, "resolved": str(path.resolve())},
            remediation="Nothing to do if this is intended.",
        )
    )


def unexpected(
    inv: Inventory,
    path: Path,
    severity: Severity,
    what: str,
    *,
    kind: str,
    evidence: dict[str, object] | None = None,
    remediation: str = "Find out what created it; remove it if nothing legitimate did.",
) -> None:
    inv.stray_files += 1
    rel = _rel(inv.root, path)
    inv.findings.append(
        Finding(
            rule="unexpected-file",
            severity=severity,
            target=str(path),
            title=f"Unexpected {rel}: {what}",
            detail=f"{rel} is {what}. An Ollama store holds only manifests/<host>/<namespace>/<model>/<tag> "
            "files and blobs/sha256-<64 hex> files.",
            evidence={"kind": kind, "path": rel, **(evidence or {})},
            remediation=remediation,
        )
    )


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
