"""Reading one manifest: its path must be a model name, its digests sha256:<64 hex>, its JSON a manifest's
shape."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from ollama_guard.findings import Finding, Severity
from ollama_guard.ollama.names import InvalidModelName, ModelName, is_valid_digest
from ollama_guard.ollama.store import Manifest
from ollama_guard.verify.inventory.model import Inventory, ModelEntry
from ollama_guard.verify.inventory.strays import TEMP_NAME, unexpected

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
REF_PROBLLAMA = "https://www.wiz.io/blog/probllama-ollama-vulnerability-cve-2024-37032"


def load_manifest(inv: Inventory, path: Path, rel: PurePosixPath) -> None:
    try:
        name = ModelName.from_manifest_relpath(rel)
    except InvalidModelName as exc:
        if TEMP_NAME.fullmatch(path.name):
            unexpected(
                inv,
                path,
                Severity.LOW,
                "temporary file (an interrupted manifest write)",
                kind="temp-file",
                remediation="If Ollama is not writing it right now, delete it.",
            )
            return
        unexpected(
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
