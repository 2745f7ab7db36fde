"""Ollama's on-disk model store (OLLAMA_MODELS), read and written in Ollama's own layout.

Layout (Ollama's `manifest` package): manifests at `manifests/<host>/<namespace>/<model>/<tag>` (JSON,
schemaVersion 2) and content-addressed blobs at `blobs/sha256-<64 hex>`. A manifest names its config blob
and its layers by digest; a model's "digest" as `/api/tags` shows it is the sha256 of the manifest file.

Every write here is atomic (a temporary file in the target directory, then a rename), and a blob's file
name is always the sha256 of its content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from ollama_guard.ollama.names import InvalidModelName, ModelName, is_valid_digest

MEDIA_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_PROMPT = "application/vnd.ollama.image.prompt"  # legacy name of the template layer
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_EMBED = "application/vnd.ollama.image.embed"  # deprecated, ignored by Ollama
MEDIA_TENSOR = "application/vnd.ollama.image.tensor"
MEDIA_DRAFT = "application/vnd.ollama.image.draft"

KNOWN_LAYER_MEDIA_TYPES: frozenset[str] = frozenset(
    {
        MEDIA_MODEL,
        MEDIA_ADAPTER,
        MEDIA_PROJECTOR,
        MEDIA_PROMPT,
        MEDIA_TEMPLATE,
        MEDIA_SYSTEM,
        MEDIA_PARAMS,
        MEDIA_LICENSE,
        MEDIA_MESSAGES,
        MEDIA_EMBED,
        MEDIA_TENSOR,
        MEDIA_DRAFT,
        "application/vnd.ollama.image.json",
    }
)

_COPY_CHUNK = 1 << 20


class StoreError(Exception):
    """A store operation failed (bad digest, unreadable manifest, …)."""


class Layer(BaseModel):
    """One manifest entry (config or layer): media type, digest `sha256:<hex>`, size, optional from/name."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    mediaType: str
    digest: str
    size: int
    from_: str | None = Field(default=None, alias="from")
    name: str | None = None


class Manifest(BaseModel):
    """A model manifest as Ollama writes it."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    schemaVersion: int = 2
    mediaType: str = MEDIA_MANIFEST
    config: Layer
    layers: list[Layer] = Field(default_factory=list)

    def all_layers(self) -> list[Layer]:
        """Layers then config (Ollama's `append(m.Layers, m.Config)`)."""
        return [*self.layers, self.config]

    def digests(self) -> set[str]:
        return {layer.digest for layer in self.all_layers() if layer.digest}

    def total_size(self) -> int:
        """What `/api/tags` reports as the model size: layers plus config."""
        return sum(layer.size for layer in self.all_layers())

    def layer(self, media_type: str) -> Layer | None:
        """The first layer of a media type."""
        return next((layer for layer in self.layers if layer.mediaType == media_type), None)

    def to_bytes(self) -> bytes:
        """The file content, as Go's json.Encoder writes it (compact, trailing newline)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return (json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class StoredManifest:
    """A manifest read from disk with what Ollama derives from the file itself."""

    name: ModelName
    path: Path
    manifest: Manifest
    digest: str  # hex sha256 of the manifest file (no prefix), as /api/tags shows it
    modified_at: datetime


def blob_filename(digest: str) -> str:
    """`sha256:<hex>` or `sha256-<hex>` → `sha256-<hex>`; StoreError for anything else."""
    if not is_valid_digest(digest):
        raise StoreError("invalid digest format")
    return "sha256-" + digest[7:]


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class BlobWriter:
    """Streams content into the blob directory; `commit()` renames it to its real digest.

    Usage: `with store.blob_writer() as w: w.write(chunk) ...; digest = w.commit()`. Leaving the block
    without commit() removes the temporary file.
    """

    def __init__(self, blobs_dir: Path) -> None:
        blobs_dir.mkdir(parents=True, exist_ok=True)
        self.blobs_dir = blobs_dir
        fd, tmp = tempfile.mkstemp(dir=blobs_dir, prefix="sha256-", suffix=".partial")
        self._tmp = Path(tmp)
        self._handle: IO[bytes] = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.size = 0
        self.created = False
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._handle.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Finish: the blob is at blobs/sha256-<hex>; returns `sha256:<hex>`. `created` says if it was new."""
        self._handle.close()
        digest = "sha256:" + self._sha.hexdigest()
        final = self.blobs_dir / blob_filename(digest)
        if final.exists():
            self._tmp.unlink(missing_ok=True)
        else:
            os.chmod(self._tmp, 0o644)
            os.replace(self._tmp, final)
            self.created = True
        self._done = True
        return digest

    def abort(self) -> None:
        if not self._done:
            self._handle.close()
            self._tmp.unlink(missing_ok=True)
            self._done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class ModelStore:
    """A model directory in Ollama's layout (`root` = what OLLAMA_MODELS points at)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    def ensure(self) -> None:
        """Create the two top-level directories if missing."""
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)

    # --- blobs -------------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """Path of a blob (validates the digest like Ollama's BlobsPath: `sha256[:-]<64 hex>`)."""
        return self.blobs_dir / blob_filename(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob(self, data: bytes) -> str:
        """Store bytes as a blob (no-op if present); returns `sha256:<hex>`."""
        digest = sha256_digest(data)
        path = self.blob_path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest

    def blob_writer(self) -> BlobWriter:
        return BlobWriter(self.blobs_dir)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def iter_blobs(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every file under blobs/ whose name is a valid blob name."""
        if not self.blobs_dir.is_dir():
            return
        for path in sorted(self.blobs_dir.iterdir()):
            if path.is_file() and is_valid_digest(path.name):
                yield "sha256:" + path.name[7:], path

    # --- manifests ---------------------------------------------------------------------------------
    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.manifest_relpath().parts)

    def iter_manifests(self) -> Iterator[tuple[ModelName, Path]]:
        """Every manifest file at `manifests/*/*/*/*` with a valid name (Ollama's Manifests())."""
        if not self.manifests_dir.is_dir():
            return
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file():
                continue
            try:
                name = ModelName.from_manifest_relpath(path.relative_to(self.manifests_dir).as_posix())
            except InvalidModelName:
                continue
            yield name, path

    def read_manifest(self, path: Path) -> Manifest:
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read manifest {path}: {exc}") from exc

    def load(self, name: ModelName, path: Path | None = None) -> StoredManifest:
        """A manifest with its file digest and modification time (FileNotFoundError if absent)."""
        path = path or self.manifest_path(name)
        raw = path.read_bytes()
        try:
            manifest = Manifest.model_validate_json(raw)
        except ValueError as exc:
            raise StoreError(f"cannot read manifest {path}: {exc}") from exc
        return StoredManifest(
            name=name,
            path=path,
            manifest=manifest,
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime, UTC),
        )

    def list_models(self) -> list[StoredManifest]:
        """Every readable manifest (unreadable ones are skipped, as Ollama does)."""
        models: list[StoredManifest] = []
        for name, path in self.iter_manifests():
            with contextlib.suppress(OSError, StoreError):
                models.append(self.load(name, path))
        return models

    def write_manifest(self, name: ModelName, manifest: Manifest) -> Path:
        path = self.manifest_path(name)
        _atomic_write(path, manifest.to_bytes())
        return path

    def resolve_name(self, name: ModelName) -> ModelName:
        """Ollama's getExistingName: each part that matches an existing manifest's part case-insensitively
        takes that spelling (so `LLAMA3` finds `llama3`)."""
        host, namespace, model, tag = name.host, name.namespace, name.model, name.tag
        for existing, _ in self.iter_manifests():
            if existing.host.lower() == host.lower():
                host = existing.host
            if existing.namespace.lower() == namespace.lower():
                namespace = existing.namespace
            if existing.model.lower() == model.lower():
                model = existing.model
            if existing.tag.lower() == tag.lower():
                tag = existing.tag
        return ModelName(host=host, namespace=namespace, model=model, tag=tag, scheme=name.scheme)

    def find(self, name: ModelName) -> StoredManifest | None:
        """The stored manifest whose name equals `name` case-insensitively, or None."""
        wanted = name.canonical()
        for existing, path in self.iter_manifests():
            if existing.canonical() == wanted:
                with contextlib.suppress(OSError, StoreError):
                    return self.load(existing, path)
        return None

    def referenced_digests(self, exclude: Iterable[Path] = ()) -> set[str]:
        """Digests used by any manifest (except the files in `exclude`)."""
        skip = {Path(p) for p in exclude}
        used: set[str] = set()
        for _, path in self.iter_manifests():
            if path in skip:
                continue
            with contextlib.suppress(StoreError):
                used |= self.read_manifest(path).digests()
        return used

    def delete_model(self, stored: StoredManifest) -> list[str]:
        """Ollama's delete: remove the manifest, prune empty manifest dirs, then remove the model's blobs
        that no other manifest uses. Returns the digests removed."""
        stored.path.unlink()
        self._prune_empty_dirs(stored.path.parent)
        in_use = self.referenced_digests()
        removed: list[str] = []
        for digest in sorted(stored.manifest.digests() - in_use):
            with contextlib.suppress(FileNotFoundError, StoreError):
                self.blob_path(digest).unlink()
                removed.append(digest)
        return removed

    def copy_model(self, source: StoredManifest, destination: ModelName) -> Path:
        """Ollama's copy: the same manifest bytes under another name."""
        path = self.manifest_path(destination)
        _atomic_write(path, source.path.read_bytes())
        return path

    def _prune_empty_dirs(self, start: Path) -> None:
        current = start
        while current != self.manifests_dir and self.manifests_dir in current.parents:
            try:
                current.rmdir()
            except OSError:
                return
            current = current.parent


def config_of(store: ModelStore, manifest: Manifest) -> dict[str, Any]:
    """The decoded config blob of a manifest ({} if missing or unreadable)."""
    try:
        data = json.loads(store.read_blob(manifest.config.digest))
    except (OSError, ValueError, StoreError):
        return {}
    return data if isinstance(data, dict) else {}
