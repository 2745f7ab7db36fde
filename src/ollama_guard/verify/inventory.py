"""What is in an Ollama model store, and what does not add up: manifests that cannot be read or name
impossible digests, layers whose blob is missing or has the wrong size, blobs no manifest uses, files that
have no business in the store (symlinks, download leftovers, temp files) and models pulled from registries
other than Ollama's own.

The walk never follows a symlink below the store root (the top-level `manifests` and `blobs` directories
may themselves be symlinks — a common way to move the store to another disk — and are followed)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from ollama_guard.errors import InputError
from ollama_guard.findings import Finding, Severity
from ollama_guard.ollama.names import DEFAULT_HOST, InvalidModelName, ModelName, is_valid_digest
from ollama_guard.ollama.store import Layer, Manifest

BLOB_NAME = re.compile(r"sha256-([0-9a-fA-F]{64})")
PARTIAL_NAME = re.compile(r"sha256-[0-9a-fA-F]{64}-partial(?:-\d+)?")
TEMP_NAME = re.compile(r"(?:sha256-[^/]*|\..*\.tmp|.*\.(?:tmp|partial|part))")
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

# Registries whose models are common and usually benign (a lower severity than an unknown host).
WELL_KNOWN_REGISTRIES = frozenset({"hf.co", "huggingface.co", "ollama.com"})

REF_PROBLLAMA = "https://www.wiz.io/blog/probllama-ollama-vulnerability-cve-2024-37032"
REF_MODEL_THEFT = "https://github.com/ollama/ollama/blob/main/docs/faq.md"


@dataclass(frozen=True)
class BlobFile:
    """A well-formed blob file and the stat fields a baseline compares."""

    digest: str  # "sha256:<lower hex>"
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int


@dataclass
class ModelEntry:
    name: ModelName
    path: Path
    manifest: Manifest
    manifest_sha256: str


@dataclass
class Inventory:
    root: Path
    models: list[ModelEntry] = field(default_factory=list)
    blobs: dict[str, BlobFile] = field(default_factory=dict)
    # digest -> the models (display names) and layers that use it
    references: dict[str, list[tuple[str, Layer]]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    stray_files: int = 0


def normalize_digest(digest: str) -> str:
    """`sha256:<hex>` / `sha256-<hex>` → `sha256:<lower hex>` (caller has validated it)."""
    return "sha256:" + digest[7:].lower()


def take_inventory(root: Path) -> Inventory:
    """Walk the store at `root` (which must be an existing directory) and cross-check manifests and blobs."""
    inv = Inventory(root=root)
    manifest_files: list[tuple[Path, PurePosixPath]] = []
    try:
        with os.scandir(root) as it:
            top = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot read models directory {root}: {exc.strerror or exc}") from None
    for entry in top:
        path = Path(entry.path)
        if entry.name in ("manifests", "blobs"):
            if entry.is_symlink():
                _store_dir_symlink(inv, path)
            if not entry.is_dir(follow_symlinks=True):
                _unexpected(
                    inv, path, Severity.HIGH, f"'{entry.name}' is not a directory", kind="not-a-directory"
                )
                continue
            if entry.name == "blobs":
                _walk_blobs(inv, path)
            else:
                _walk_manifests(inv, path, PurePosixPath(), manifest_files)
            continue
        _classify_stray(inv, entry, where="store root")
    for path, rel in manifest_files:
        _load_manifest(inv, path, rel)
    _cross_check(inv)
    return inv


# --- walking -------------------------------------------------------------------------------------------


def _walk_blobs(inv: Inventory, blobs_dir: Path) -> None:
    try:
        with os.scandir(blobs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"cannot read {blobs_dir}: {exc.strerror or exc}") from None
    for entry in entries:
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
        _classify_stray(inv, entry, where="blobs directory")


def _walk_manifests(
    inv: Inventory, directory: Path, rel: PurePosixPath, out: list[tuple[Path, PurePosixPath]]
) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        _unexpected(
            inv, directory, Severity.MEDIUM, f"unreadable directory: {exc.strerror}", kind="unreadable"
        )
        return
    for entry in entries:
        sub = rel / entry.name
        depth = len(sub.parts)
        if entry.is_symlink() or not (
            entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False)
        ):
            _classify_stray(inv, entry, where="manifests directory")
        elif entry.is_dir(follow_symlinks=False):
            if depth < 4:
                _walk_manifests(inv, Path(entry.path), sub, out)
            else:
                _unexpected(
                    inv,
                    Path(entry.path),
                    Severity.MEDIUM,
                    "directory nested deeper than manifests/<host>/<namespace>/<model>/<tag>",
                    kind="misplaced",
                )
        elif depth == 4:
            out.append((Path(entry.path), sub))
        else:
            _classify_stray(inv, entry, where="manifests directory")


def _classify_stray(inv: Inventory, entry: os.DirEntry[str], *, where: str) -> None:
    path = Path(entry.path)
    if entry.is_symlink():
        _symlink(inv, path)
        return
    if entry.is_dir(follow_symlinks=False):
        _unexpected(inv, path, Severity.MEDIUM, f"unexpected directory in the {where}", kind="directory")
        return
    if not entry.is_file(follow_symlinks=False):
        _unexpected(
            inv,
            path,
            Severity.HIGH,
            f"special file (not a regular file or directory) in the {where}",
            kind="special-file",
        )
        return
    name = entry.name
    if PARTIAL_NAME.fullmatch(name):
        _unexpected(
            inv,
            path,
            Severity.LOW,
            "download leftover (an interrupted or running `ollama pull`)",
            kind="partial-download",
            remediation="If no pull is running, delete it (or restart Ollama, which cleans up).",
        )
    elif TEMP_NAME.fullmatch(name):
        _unexpected(
            inv,
            path,
            Severity.LOW,
            "temporary file (an interrupted blob upload, create or write)",
            kind="temp-file",
            remediation="If Ollama is not writing it right now, delete it.",
        )
    else:
        _unexpected(
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
    _unexpected(
        inv,
        path,
        severity,
        detail,
        kind="symlink",
        evidence={"link_target": target, "resolved": str(resolved), "leaves_store": leaves},
        remediation="Ollama never creates symlinks in its store: find out who did, then delete it. "
        "A link leaving the store lets whatever reads the store read (or overwrite) that file.",
    )


def _store_dir_symlink(inv: Inventory, path: Path) -> None:
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


def _unexpected(
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


# --- manifests -----------------------------------------------------------------------------------------


def _load_manifest(inv: Inventory, path: Path, rel: PurePosixPath) -> None:
    try:
        name = ModelName.from_manifest_relpath(rel)
    except InvalidModelName as exc:
        if TEMP_NAME.fullmatch(path.name):
            _unexpected(
                inv,
                path,
                Severity.LOW,
                "temporary file (an interrupted manifest write)",
                kind="temp-file",
                remediation="If Ollama is not writing it right now, delete it.",
            )
            return
        _unexpected(
            inv,
            path,
            Severity.MEDIUM,
            f"file whose path is not a valid model name ({exc})",
            kind="invalid-name",
            remediation="Ollama ignores it; remove it if nothing legitimate wrote it.",
        )
        return
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{size} bytes is far larger than any manifest")
        raw = path.read_bytes()
    except (OSError, ValueError) as exc:
        _invalid_manifest(inv, name, path, f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
        return
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _invalid_manifest(inv, name, path, f"is not valid JSON ({exc})")
        return
    if not isinstance(data, dict):
        _invalid_manifest(inv, name, path, "is not a JSON object")
        return
    bad = _bad_digests(data)
    if bad:
        traversal = any("/" in d or "\\" in d or ".." in d for d in bad)
        inv.findings.append(
            Finding(
                rule="invalid-manifest",
                severity=Severity.CRITICAL if traversal else Severity.HIGH,
                target=name.display(),
                title=f"{name.display()}: manifest names "
                + ("a path-traversal digest" if traversal else "an invalid digest")
                + f" {bad[0][:80]!r}",
                detail="Digests must be sha256:<64 hex>. "
                + (
                    "A digest that is a path ('../../etc/passwd') is the trace of CVE-2024-37032 "
                    "(Probllama): a "
                    "malicious registry served it so that Ollama read or wrote files outside its store. "
                    if traversal
                    else ""
                )
                + "The manifest did not come from a well-behaved registry or was edited.",
                evidence={"manifest": str(path), "invalid_digests": bad[:20]},
                remediation="Delete this model (remove the manifest file), check the host for files written "
                "outside the store around the manifest's modification time, and upgrade Ollama to ≥ 0.1.34.",
                references=[REF_PROBLLAMA, "https://nvd.nist.gov/vuln/detail/CVE-2024-37032"],
            )
        )
        return
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        _invalid_manifest(inv, name, path, f"does not have a manifest's shape ({where}: {first.get('msg')})")
        return
    inv.models.append(ModelEntry(name, path, manifest, hashlib.sha256(raw).hexdigest()))


def _bad_digests(data: dict[str, object]) -> list[str]:
    entries: list[object] = []
    if isinstance(data.get("config"), dict):
        entries.append(data["config"])
    layers = data.get("layers")
    if isinstance(layers, list):
        entries.extend(layers)
    bad = []
    for entry in entries:
        if isinstance(entry, dict) and "digest" in entry:
            digest = entry["digest"]
            if not isinstance(digest, str) or not is_valid_digest(digest):
                bad.append(str(digest))
    return bad


def _invalid_manifest(inv: Inventory, name: ModelName, path: Path, problem: str) -> None:
    inv.findings.append(
        Finding(
            rule="invalid-manifest",
            severity=Severity.HIGH,
            target=name.display(),
            title=f"{name.display()}: manifest {problem[:120]}",
            detail=f"The manifest {path} {problem}. Ollama cannot use this model; the file was truncated, "
            "corrupted or written by something other than Ollama.",
            evidence={"manifest": str(path), "problem": problem},
            remediation=f"Re-pull the model (`ollama pull {name.display()}`) or remove the manifest file.",
        )
    )


# --- cross-checks --------------------------------------------------------------------------------------


def _cross_check(inv: Inventory) -> None:
    for model in inv.models:
        display = model.name.display()
        for layer in model.manifest.all_layers():
            digest = normalize_digest(layer.digest)
            inv.references.setdefault(digest, []).append((display, layer))
            blob = inv.blobs.get(digest)
            role = media_role(layer.mediaType)
            if blob is None:
                inv.findings.append(
                    Finding(
                        rule="missing-blob",
                        severity=Severity.HIGH,
                        target=display,
                        title=f"{display}: {role} blob {digest[:19]}… is missing",
                        detail=f"The manifest of {display} names {digest} ({layer.mediaType}, {layer.size} "
                        "bytes) "
                        "but blobs/ has no such file. The model cannot load; a blob was deleted or moved.",
                        evidence={
                            "manifest": str(model.path),
                            "digest": digest,
                            "media_type": layer.mediaType,
                            "size": layer.size,
                        },
                        remediation=f"Re-pull the model: `ollama pull {display}`.",
                    )
                )
            elif blob.size != layer.size:
                inv.findings.append(
                    Finding(
                        rule="size-mismatch",
                        severity=Severity.HIGH,
                        target=display,
                        title=f"{display}: {role} blob {digest[:19]}… is {blob.size} bytes, manifest says "
                        f"{layer.size}",
                        detail="A blob's size differs from the size its manifest records: the blob was "
                        "truncated or "
                        "replaced, or the manifest was edited.",
                        evidence={
                            "manifest": str(model.path),
                            "digest": digest,
                            "media_type": layer.mediaType,
                            "manifest_size": layer.size,
                            "file_size": blob.size,
                            "path": str(blob.path),
                        },
                        remediation=f"Re-pull the model: `ollama pull {display}`.",
                    )
                )
        _foreign_registry(inv, model)
    for digest, blob in inv.blobs.items():
        if digest not in inv.references:
            inv.findings.append(
                Finding(
                    rule="unreferenced-blob",
                    severity=Severity.LOW,
                    target=str(blob.path),
                    title=f"Blob {digest[:19]}… ({blob.size} bytes) is used by no model",
                    detail="No manifest references this blob. Ollama prunes such blobs when it starts "
                    "(unless "
                    "OLLAMA_NOPRUNE is set); one that appears between restarts was uploaded (POST "
                    "/api/blobs) or "
                    "left behind by a deleted model — an uploaded blob is the first step of a malicious "
                    "create.",
                    evidence={"digest": digest, "size": blob.size, "path": str(blob.path)},
                    remediation="If no model should use it, delete it (or restart Ollama to prune it).",
                )
            )


def _foreign_registry(inv: Inventory, model: ModelEntry) -> None:
    host = model.name.host.lower()
    if host == DEFAULT_HOST:
        return
    hostname, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    hostname = hostname or host
    is_ip = _is_ip(hostname.strip("[]"))
    if is_ip or port or hostname == "localhost" or "." not in hostname:
        severity = Severity.HIGH
        why = (
            "an IP address or non-standard port — the shape of a model copied to an attacker's registry "
            "before `ollama push` (model theft), or pulled from an untrusted one"
        )
    elif host in WELL_KNOWN_REGISTRIES:
        severity = Severity.LOW
        why = (
            "a well-known third-party registry; its models (and embedded chat templates) are not vetted "
            "by Ollama"
        )
    else:
        severity = Severity.MEDIUM
        why = "a registry other than Ollama's; make sure it is one you trust"
    display = model.name.display()
    inv.findings.append(
        Finding(
            rule="foreign-registry",
            severity=severity,
            target=display,
            title=f"{display} comes from registry {model.name.host}",
            detail=f"The manifest lives under manifests/{model.name.host}/: {why}.",
            evidence={"host": model.name.host, "manifest": str(model.path)},
            remediation=f"If you did not pull or copy it on purpose, remove it (`ollama rm {display}`) and "
            "review who can reach the Ollama API (pull/copy/push need no authentication).",
        )
    )


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def media_role(media_type: str) -> str:
    """`application/vnd.ollama.image.template` → `template`; the docker config type → `config`."""
    if media_type == "application/vnd.docker.container.image.v1+json":
        return "config"
    return (
        media_type.rsplit(".", 1)[-1]
        if media_type.startswith("application/vnd.ollama.image.")
        else media_type
    )


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
