"""What is in an Ollama model store, and what does not add up: manifests that cannot be read or name
impossible digests, layers whose blob is missing or has the wrong size, blobs no manifest uses, files that
have no business in the store (symlinks, download leftovers, temp files) and models pulled from registries
other than Ollama's own.

The walk never follows a symlink below the store root (the top-level `manifests` and `blobs` directories
may themselves be symlinks — a common way to move the store to another disk — and are followed).

The package: ``model`` (``Inventory`` and its entries), ``walk`` (``take_inventory``), ``strays`` (files
that do not belong: the ``unexpected-file`` findings), ``manifests`` (reading one manifest:
``invalid-manifest``) and ``crosscheck`` (``missing-blob``, ``size-mismatch``, ``unreferenced-blob``,
``foreign-registry``)."""

from ollama_guard.verify.inventory.crosscheck import REF_MODEL_THEFT, WELL_KNOWN_REGISTRIES
from ollama_guard.verify.inventory.manifests import MAX_MANIFEST_BYTES, REF_PROBLLAMA
from ollama_guard.verify.inventory.model import BlobFile, Inventory, ModelEntry, media_role, normalize_digest
from ollama_guard.verify.inventory.strays import PARTIAL_NAME, TEMP_NAME
from ollama_guard.verify.inventory.walk import BLOB_NAME, take_inventory

__all__ = [
    "BLOB_NAME",
    "MAX_MANIFEST_BYTES",
    "PARTIAL_NAME",
    "REF_MODEL_THEFT",
    "REF_PROBLLAMA",
    "TEMP_NAME",
    "WELL_KNOWN_REGISTRIES",
    "BlobFile",
    "Inventory",
    "ModelEntry",
    "media_role",
    "normalize_digest",
    "take_inventory",
]
