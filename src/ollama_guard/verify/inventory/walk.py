"""``take_inventory``: walk the store (never following a symlink below its root) and cross-check what it
holds."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from ollama_guard.errors import InputError
from ollama_guard.findings import Severity
from ollama_guard.verify.inventory.crosscheck import cross_check
from ollama_guard.verify.inventory.manifests import load_manifest
from ollama_guard.verify.inventory.model import BlobFile, Inventory
from ollama_guard.verify.inventory.strays import classify_stray, store_dir_symlink, unexpected

BLOB_NAME = re.compile(r"sha256-([0-9a-fA-F]{64})")


def take_inventory(root: Path) -> Inventory:
    """Walk the store at `root` (which must be an existing directory) and cross-check manifests and blobs."""
    inv = Inventory(root=root)
    manifest_files: list[tuple[Path, PurePosixPath]] = []
    for entry in _entries(root, f"models directory {root}"):
        path = Path(entry.path)
        if entry.name in ("manifests", "blobs"):
            if entry.is_symlink():
                store_dir_symlink(inv, path)
            if not entry.is_dir(follow_symlinks=True):
                unexpected(
                    inv, path, Severity.HIGH, f"'{entry.name}' is not a directory", kind="not-a-directory"
                )
                continue
            if entry.name == "blobs":
                _walk_blobs(inv, path)
            else:
                _walk_manifests(inv, path, PurePosixPath(), manifest_files)
            continue
        classify_stray(inv, entry, where="store root")
    for path, rel in manifest_files:
        load_manifest(inv, path, rel)
    cross_check(inv)
    return inv


def _entries(directory: Path, what: str) -> list[os.DirEntry[str]]:
    """The directory's entries by name; one clear line (``InputError``) when it cannot be read."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}") from None


def _walk_blobs(inv: Inventory, blobs_dir: Path) -> None:
    for entry in _entries(blobs_dir, str(blobs_dir)):
        match = BLOB_NAME.fullmatch(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # removed while we walk (a prune or delete in progress)
                continue
            digest = "sha256:" + match.group(1).lower()
            inv.blobs[digest] = BlobFile(
                digest, Path(entry.path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino
            )
            continue
        classify_stray(inv, entry, where="blobs directory")


def _walk_manifests(
    inv: Inventory, directory: Path, rel: PurePosixPath, out: list[tuple[Path, PurePosixPath]]
) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        unexpected(
            inv, directory, Severity.MEDIUM, f"unreadable directory: {exc.strerror}", kind="unreadable"
        )
        return
    for entry in entries:
        sub = rel / entry.name
        depth = len(sub.parts)
        if entry.is_symlink() or not (
            entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)
        ):
            classify_stray(inv, entry, where="manifests directory")
        elif entry.is_dir(follow_symlinks=False):
            if depth < 4:
                _walk_manifests(inv, Path(entry.path), sub, out)
            else:
                unexpected(
                    inv,
                    Path(entry.path),
                    Severity.MEDIUM,
                    "directory nested deeper than manifests/<host>/<namespace>/<model>/<tag>",
                    kind="misplaced",
                )
        elif depth == 4:
            out.append((Path(entry.path), sub))
        else:
            classify_stray(inv, entry, where="manifests directory")
