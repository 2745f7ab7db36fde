"""What a store holds (``Inventory``: models, blobs, who references what, findings) and digest/media-type
names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ollama_guard.findings import Finding
from ollama_guard.ollama.names import ModelName
from ollama_guard.ollama.store import Layer, Manifest


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


def media_role(media_type: str) -> str:
    """`application/vnd.ollama.image.template` → `template`; the docker config type → `config`."""
    if media_type == "application/vnd.docker.container.image.v1+json":
        return "config"
    return (
        media_type.rsplit(".", 1)[-1]
        if media_type.startswith("application/vnd.ollama.image.")
        else media_type
    )
