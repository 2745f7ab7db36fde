"""The decoy's cached view of its model store: what /api/tags, /api/show and inference look up.

The manifest list is cached and rebuilt only after a change made through the decoy (`invalidate()`), or
once `ttl` seconds have passed (to notice changes other programs make on disk), so `/api/tags` does not
scan the disk per request.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar, cast

from ollama_guard.ollama.names import ModelName
from ollama_guard.ollama.store import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    ModelStore,
    StoredManifest,
    StoreError,
    config_of,
)

T = TypeVar("T")


@dataclass
class ModelRecord:
    """One stored model with its config and (lazily read) text layers."""

    store: ModelStore
    stored: StoredManifest
    config: dict[str, Any]
    _texts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def name(self) -> ModelName:
        return self.stored.name

    @property
    def display(self) -> str:
        return self.stored.name.display()

    @property
    def digest(self) -> str:
        return self.stored.digest

    @property
    def size(self) -> int:
        return self.stored.manifest.total_size()

    def _layer_texts(self, *media_types: str) -> list[str]:
        key = "|".join(media_types)
        if key not in self._texts:
            texts: list[str] = []
            for layer in self.stored.manifest.layers:
                if layer.mediaType in media_types:
                    with contextlib.suppress(OSError, StoreError):
                        texts.append(self.store.read_blob(layer.digest).decode("utf-8", errors="replace"))
            self._texts[key] = texts
        return self._texts[key]

    @property
    def template(self) -> str:
        texts = self._layer_texts(MEDIA_TEMPLATE, MEDIA_PROMPT)
        return texts[-1] if texts else ""

    @property
    def system(self) -> str:
        texts = self._layer_texts(MEDIA_SYSTEM)
        return texts[-1] if texts else ""

    @property
    def licenses(self) -> list[str]:
        return self._layer_texts(MEDIA_LICENSE)

    @cached_property
    def options(self) -> dict[str, Any]:
        texts = self._layer_texts(MEDIA_PARAMS)
        if not texts:
            return {}
        try:
            data = json.loads(texts[-1])
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    @cached_property
    def messages(self) -> list[dict[str, Any]]:
        texts = self._layer_texts(MEDIA_MESSAGES)
        if not texts:
            return []
        try:
            data = json.loads(texts[-1])
        except ValueError:
            return []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    @property
    def model_layer_digest(self) -> str | None:
        layer = self.stored.manifest.layer(MEDIA_MODEL)
        return layer.digest if layer else None

    @property
    def has_projector(self) -> bool:
        return self.stored.manifest.layer(MEDIA_PROJECTOR) is not None

    def details(self, *, parent_model: str = "") -> dict[str, Any]:
        """Ollama's ModelDetails from the config blob."""
        return {
            "parent_model": parent_model,
            "format": self.config.get("model_format", ""),
            "family": self.config.get("model_family", ""),
            "families": self.config.get("model_families"),
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }


class Catalog:
    """Cached list of the store's models, keyed by canonical (case-insensitive) name."""

    def __init__(self, store: ModelStore, ttl: float = 2.0) -> None:
        self.store = store
        self.ttl = ttl
        self._lock = threading.Lock()
        self._records: dict[str, ModelRecord] | None = None
        self._built_at = 0.0
        self._derived: dict[str, Any] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._records = None
            self._derived.clear()

    def derived(self, key: str, build: Callable[[list[ModelRecord]], T]) -> T:
        """A value computed from the model list (e.g. the encoded /api/tags body), kept until the list
        is rebuilt."""
        records = self.all()
        with self._lock:
            if key not in self._derived:
                self._derived[key] = build(records)
            return cast(T, self._derived[key])

    def _build(self) -> dict[str, ModelRecord]:
        records: dict[str, ModelRecord] = {}
        for stored in self.store.list_models():
            records[stored.name.canonical()] = ModelRecord(
                store=self.store, stored=stored, config=config_of(self.store, stored.manifest)
            )
        return records

    def _current(self) -> dict[str, ModelRecord]:
        with self._lock:
            now = time.monotonic()
            if self._records is None or now - self._built_at > self.ttl:
                self._records = self._build()
                self._built_at = now
                self._derived.clear()
            return self._records

    def all(self) -> list[ModelRecord]:
        """Most recently modified first (Ollama's /api/tags order)."""
        records = list(self._current().values())
        records.sort(key=lambda r: r.stored.modified_at, reverse=True)
        return records

    def get(self, name: ModelName) -> ModelRecord | None:
        return self._current().get(name.canonical())
