"""What /api/show reports from a model's GGUF file: metadata (model_info), tensors, capabilities."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy

from ollama_guard.decoy.http import Float32
from ollama_guard.verify.gguf_inspect import read_gguf_header

GGUF_MAGIC = b"GGUF"
_HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")
_SHORT_ARRAY_LIMIT = 5

# Bounds for GGUF files an attacker uploads and then names in /api/create (the decoy parses them to
# answer /api/show like Ollama): the header is read with verify's bounded parser, only small headers
# are handed to the full `gguf` reader (for the tensor list), at most two parses run at once (in worker
# threads, off the event loop), and a small LRU keeps summaries, each of bounded size.
MAX_HEADER_BYTES = 16 << 20
MAX_KEPT_KEYS = 1024
MAX_TENSORS_LISTED = 4096
MAX_ARRAY_ELEMENTS_FOR_READER = 300_000
CACHE_ENTRIES = 64
_PARSE_SLOTS = threading.BoundedSemaphore(2)
_CACHE: OrderedDict[tuple[str, int, int], GgufSummary] = OrderedDict()
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class GgufSummary:
    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[dict[str, Any]] = field(default_factory=list)
    array_lengths: dict[str, int] = field(default_factory=dict)

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


def read_gguf(path: Path) -> GgufSummary:
    """Metadata and tensor list of a GGUF file (empty summary if it is not one or is beyond the bounds).
    Cached by path, size and mtime in a small LRU; blob files are content-addressed."""
    try:
        st = path.stat()
    except OSError:
        return GgufSummary()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    with _PARSE_SLOTS:
        summary = _parse(path)
    with _CACHE_LOCK:
        _CACHE[key] = summary
        while len(_CACHE) > CACHE_ENTRIES:
            _CACHE.popitem(last=False)
    return summary


async def read_gguf_async(path: Path) -> GgufSummary:
    """read_gguf in a worker thread: a hostile header never stalls other clients."""
    return await asyncio.to_thread(read_gguf, path)


def _parse(path: Path) -> GgufSummary:
    if not is_gguf(path):
        return GgufSummary()
    try:
        header = read_gguf_header(path, max_header_bytes=MAX_HEADER_BYTES)
    except (ValueError, OSError):
        return GgufSummary()
    kv: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for name, value in header.metadata.items():
        if len(kv) >= MAX_KEPT_KEYS:
            break
        kv[name] = value
    for name, array in header.arrays.items():
        if len(kv) >= MAX_KEPT_KEYS:
            break
        kv[name] = list(array.head)
        lengths[name] = array.count
    for name, text in header.chat_templates.items():
        if name in kv:
            kv[name] = text
    elements = sum(a.count for a in header.arrays.values())
    tensors: list[dict[str, Any]] = []
    small = header.kv_count <= MAX_KEPT_KEYS and header.tensor_count <= MAX_TENSORS_LISTED
    if small and elements <= MAX_ARRAY_ELEMENTS_FOR_READER:
        tensors, full = _reader_details(path)
        for name, value in full.items():
            if name in kv:
                kv[name] = value
                lengths.pop(name, None)
    return GgufSummary(kv=kv, tensors=tensors, array_lengths=lengths)


def _reader_details(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tensor list and full (small) arrays from the `gguf` package, for headers already known small."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError, IndexError):
        return [], {}
    arrays: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or not fld.types or fld.types[0] != gguf.GGUFValueType.ARRAY:
            continue
        try:
            arrays[key] = _plain(fld.contents())
        except (ValueError, IndexError, TypeError):
            continue
    tensors = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(x) for x in t.shape.tolist()]}
        for t in reader.tensors
    ]
    return tensors, arrays


def model_info(summary: GgufSummary, *, verbose: bool) -> dict[str, Any]:
    """Ollama's model_info: the GGUF metadata without the name and chat template, long arrays emptied
    unless verbose; a Go map, so marshalled with sorted keys, and GGUF's float32 values with float32
    digits."""
    info: dict[str, Any] = {}
    for key in sorted(summary.kv):
        if key in _HIDDEN_KEYS:
            continue
        value = summary.kv[key]
        length = summary.array_lengths.get(key, len(value) if isinstance(value, list) else 0)
        if not verbose and isinstance(value, list) and length > _SHORT_ARRAY_LIMIT:
            value = None
        info[key] = _as_go(value)
    return info


def _as_go(value: Any) -> Any:
    if isinstance(value, float) and numpy.float32(value) == value:
        return Float32(value)
    if isinstance(value, list):
        return [_as_go(v) for v in value]
    return value


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
