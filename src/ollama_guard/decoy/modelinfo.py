"""What /api/show reports from a model's GGUF file: metadata (model_info), tensors, capabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf

GGUF_MAGIC = b"GGUF"
_HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")
_SHORT_ARRAY_LIMIT = 5


@dataclass(frozen=True)
class GgufSummary:
    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        value = self.kv.get("general.architecture")
        return value if isinstance(value, str) else ""

    @property
    def is_embedding(self) -> bool:
        return f"{self.architecture}.pooling_type" in self.kv

    @property
    def has_vision(self) -> bool:
        return f"{self.architecture}.vision.block_count" in self.kv


def is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


@lru_cache(maxsize=256)
def read_gguf(path: Path) -> GgufSummary:
    """Metadata and tensor list of a GGUF file (empty summary if it is not one). Cached per blob path;
    blob files are content-addressed, so a path's content never changes."""
    if not is_gguf(path):
        return GgufSummary()
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError):
        return GgufSummary()
    kv: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            kv[key] = _plain(fld.contents())
        except (ValueError, IndexError, TypeError):
            continue
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape.tolist()]}
        for t in reader.tensors
    ]
    return GgufSummary(kv=kv, tensors=tensors)


def model_info(summary: GgufSummary, *, verbose: bool) -> dict[str, Any]:
    """Ollama's model_info: the GGUF metadata without the name and chat template; long arrays emptied
    unless verbose."""
    info: dict[str, Any] = {}
    for key, value in summary.kv.items():
        if key in _HIDDEN_KEYS:
            continue
        if not verbose and isinstance(value, list) and len(value) > _SHORT_ARRAY_LIMIT:
            value = None
        info[key] = value
    return info


def capabilities(summary: GgufSummary, template: str, *, has_projector: bool) -> list[str]:
    """Ollama's Model.Capabilities(): completion or embedding from the GGUF, tools/insert from the
    template's variables, vision from a projector or vision metadata."""
    caps = ["embedding" if summary.is_embedding else "completion"] if summary.kv else []
    if summary.has_vision:
        caps.append("vision")
    if ".Tools" in template:
        caps.append("tools")
    if ".Suffix" in template:
        caps.append("insert")
    if has_projector and "vision" not in caps:
        caps.append("vision")
    return caps
