"""Everything the decoy's handlers share: settings, the model store and its cache, loaded models, pushes."""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ollama_guard.decoy.catalog import Catalog, ModelRecord
from ollama_guard.decoy.fabricate import fabricate, install, seed_names
from ollama_guard.decoy.limits import DEFAULT_UPLOAD_QUOTA, BodyBudget, DiskQuota
from ollama_guard.decoy.serverlog import ServerLog
from ollama_guard.ollama.names import parse_model_name
from ollama_guard.ollama.store import ModelStore
from ollama_guard.ollama.versions import OllamaVersion, parse_version

FOREVER = datetime(2318, 1, 1, tzinfo=UTC)  # what "keep_alive: -1" looks like in /api/ps


@dataclass(frozen=True)
class DecoySettings:
    """Fixed for the life of one decoy process."""

    version: str = "0.6.5"
    models_dir: Path = Path(".")
    origins: tuple[str, ...] = ()
    host_guard: bool = True
    stream_delay: float = 0.01  # seconds between streamed chunks
    keep_alive: float = 300.0  # seconds a model stays "loaded" after use (OLLAMA_KEEP_ALIVE default 5m)
    upload_quota: int = DEFAULT_UPLOAD_QUOTA  # bytes the blob store may occupy (uploads stop there)
    # Where answers say the store is (Ollama's own default for its Linux service), whatever the real path.
    shown_models_dir: str = "/usr/share/ollama/.ollama/models"


@dataclass
class LoadedModel:
    """A model /api/ps shows as loaded until `expires_at`."""

    record: ModelRecord
    expires_at: datetime
    loaded_at: float = field(default_factory=time.monotonic)


@dataclass
class DecoyState:
    settings: DecoySettings
    store: ModelStore
    catalog: Catalog
    version: OllamaVersion
    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    server_log: ServerLog | None = None  # set by the CLI with --server-log
    quota: DiskQuota | None = None
    budget: BodyBudget = field(default_factory=BodyBudget)

    @classmethod
    def open(cls, settings: DecoySettings) -> DecoyState:
        store = ModelStore(settings.models_dir)
        store.ensure()
        return cls(
            settings=settings,
            store=store,
            catalog=Catalog(store),
            version=parse_version(settings.version),
            quota=DiskQuota(store.blobs_dir, settings.upload_quota),
        )

    def seed(self, count: int) -> list[str]:
        """Create the first `count` seed models that are not in the store yet; returns all their names."""
        names = seed_names(count)
        for raw in names:
            name = parse_model_name(raw)
            if self.store.find(name) is None:
                install(self.store, fabricate(name))
        self.catalog.invalidate()
        return names

    def identity_seed(self) -> bytes:
        """Random-looking, stable per install and different between installs, without writing anything
        into the store: the machine's name and the store directory's device and inode."""
        try:
            st = self.settings.models_dir.stat()
            where = f"{st.st_dev}:{st.st_ino}"
        except OSError:
            where = str(self.settings.models_dir)
        return hashlib.sha256(f"{socket.gethostname()}|{where}".encode()).digest()

    def shown(self, path: Path) -> str:
        """A store path as answers show it: under `shown_models_dir` instead of the real directory."""
        try:
            relative = path.relative_to(self.settings.models_dir)
        except ValueError:
            return str(path)
        return str(Path(self.settings.shown_models_dir) / relative)

    def at_least(self, version: str) -> bool:
        """Whether the emulated Ollama is this version or newer."""
        return self.version >= parse_version(version)

    # --- the scheduler, simulated ------------------------------------------------------------------
    def is_loaded(self, record: ModelRecord) -> bool:
        self._expire()
        return record.name.canonical() in self.loaded

    def touch(self, record: ModelRecord, keep_alive: float | None) -> None:
        """Mark a model as loaded for `keep_alive` seconds (inf = forever, 0 = unload now)."""
        seconds = self.settings.keep_alive if keep_alive is None else keep_alive
        key = record.name.canonical()
        if seconds == 0:
            self.loaded.pop(key, None)
            return
        expires = FOREVER if seconds == float("inf") else datetime.now(UTC) + timedelta(seconds=seconds)
        self.loaded[key] = LoadedModel(record=record, expires_at=expires)

    def unload(self, record: ModelRecord) -> None:
        self.loaded.pop(record.name.canonical(), None)

    def loaded_models(self) -> list[LoadedModel]:
        """Loaded models, longest remaining time first."""
        self._expire()
        return sorted(self.loaded.values(), key=lambda m: m.expires_at, reverse=True)

    def _expire(self) -> None:
        now = datetime.now(UTC)
        for key in [k for k, m in self.loaded.items() if m.expires_at <= now]:
            del self.loaded[key]

    def log_event(self, source: str, message: str) -> None:
        """An slog-style line in the Ollama-format server log (if one is being written)."""
        if self.server_log is not None:
            self.server_log.event(source, message)

    def models_changed(self) -> None:
        """Call after any change to the store made through the decoy."""
        self.catalog.invalidate()
        live = {r.name.canonical() for r in self.catalog.all()}
        for key in [k for k in self.loaded if k not in live]:
            del self.loaded[key]
