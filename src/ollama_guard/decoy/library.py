"""Public library models in the decoy's store, as a real Ollama that pulled them would hold them.

`data/library.json` has their manifests byte for byte (so `/api/tags` shows the digests and sizes the
registry and `ollama list` show) and the layer contents that could be rebuilt exactly. The model layer
is a sparse file of its real size that starts with a GGUF header (a few KiB on disk); layers whose exact
text is not public are filled to their real size with plausible text.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ollama_guard.decoy.fabricate import build_gguf
from ollama_guard.ollama.names import parse_model_name
from ollama_guard.ollama.store import MEDIA_MODEL, ModelStore

_GGUF_FAMILY = {"gemma": "gemma3", "llama": "llama"}


@cache
def library() -> list[dict[str, Any]]:
    text = resources.files("ollama_guard.decoy").joinpath("data/library.json").read_text(encoding="utf-8")
    return list(json.loads(text)["models"])


def library_names() -> list[str]:
    return [name for model in library() for name in model["names"]]


def _fill(entry: dict[str, Any], size: int) -> bytes:
    if "json" in entry:
        data = json.dumps(entry["json"], separators=(",", ":")).encode()
        return data + b" " * (size - len(data))
    data = entry["text"].encode()
    return data + b"\n" * (size - len(data))


def _write_new(path: Path, content: bytes, size: int) -> None:
    """Write a blob file of exactly `size` bytes (content, then a sparse zero tail) atomically."""
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("wb") as handle:
        handle.write(content[:size])
        handle.truncate(size)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install_library(store: ModelStore) -> list[str]:
    """Install every library model not in the store yet; returns the names installed."""
    installed = []
    for model in library():
        manifest = json.loads(model["manifest"])
        for raw_name in model["names"]:
            name = parse_model_name(raw_name)
            if store.find(name) is not None:
                continue
            for layer in [manifest["config"], *manifest["layers"]]:
                path = store.blob_path(layer["digest"])
                if path.exists():
                    continue
                if layer["mediaType"] == MEDIA_MODEL:
                    family = _GGUF_FAMILY.get(model["family"], "llama")
                    content = build_gguf(name, family, int(model["parameters"]))
                else:
                    content = _fill(model["contents"][layer["digest"]], layer["size"])
                _write_new(path, content, layer["size"])
            target = store.manifest_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_new(target, model["manifest"].encode(), len(model["manifest"].encode()))
            installed.append(raw_name)
    return installed
