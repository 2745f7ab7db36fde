"""Manifests against blobs (``missing-blob``, ``size-mismatch``, ``unreferenced-blob``) and models from
other registries."""

from __future__ import annotations

import ipaddress

from ollama_guard.findings import Finding, Severity
from ollama_guard.ollama.names import DEFAULT_HOST
from ollama_guard.verify.inventory.model import Inventory, ModelEntry, media_role, normalize_digest

# Registries whose models are common and usually benign (a lower severity than an unknown host).
WELL_KNOWN_REGISTRIES = frozenset({"hf.co", "huggingface.co", "ollama.com"})
REF_MODEL_THEFT = "https://github.com/ollama/ollama/blob/main/docs/faq.md"


def cross_check(inv: Inventory) -> None:
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
