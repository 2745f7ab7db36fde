"""A bounded reader for the header of a GGUF file (Ollama's model weights format).

Only the fixed header, the metadata key/value section and the tensor-info table are read — never tensor
data, never a memory map — and every count, length and the total number of bytes read are capped, so a
crafted header (2^60 key/value pairs, a string longer than the file, a truncated file) is rejected quickly
with a `GGUFFormatError` instead of exhausting memory. This is the file shape behind the GGUF parser CVEs
in llama.cpp/ggml and Ollama, so a blob that fails here should not be loaded by anything.

Layout (little-endian unless the version word reads byte-swapped): magic "GGUF", uint32 version (2 or 3),
uint64 tensor_count, uint64 kv_count, kv_count × (string key, uint32 value type, value), tensor_count ×
(string name, uint32 n_dims, n_dims × uint64 dim, uint32 ggml type, uint64 offset), padding to
`general.alignment` (default 32), tensor data. A string is uint64 length + UTF-8 bytes; an array is
uint32 element type + uint64 count + elements.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Hard caps. Real models: ~20-60 keys, a few thousand tensors, token arrays of ~260k strings, headers of
# ~10-20 MB (tokenizer.huggingface.json can be a few MB).
MAX_KV_COUNT = 1 << 16
MAX_TENSOR_COUNT = 1 << 20
MAX_STRING_BYTES = 32 * 1024 * 1024
MAX_ARRAY_LENGTH = 1 << 25
MAX_ARRAY_DEPTH = 3
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_HEADER_BYTES = 256 * 1024 * 1024
# What is kept in memory from the values read.
KEPT_TEXT_CHARS = 256
KEPT_TEMPLATE_CHARS = MAX_STRING_BYTES  # whole templates: a payload past the first MiB is still read
KEPT_ARRAY_ITEMS = 16

_WINDOW = 1024 * 1024

# value type id -> (struct code, size in bytes); 8 = string and 9 = array are handled separately.
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1),
    1: ("b", 1),
    2: ("H", 2),
    3: ("h", 2),
    4: ("I", 4),
    5: ("i", 4),
    6: ("f", 4),
    7: ("?", 1),
    10: ("Q", 8),
    11: ("q", 8),
    12: ("d", 8),
}
TYPE_STRING = 8
# ggml tensor type id -> (elements per block, bytes per block), from ggml's type traits. Types not listed
# (newer than this table) are accepted without a size check and reported in `unknown_tensor_types`.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip
TYPE_ARRAY = 9
TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
    7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}  # fmt: skip


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF header (or exceeds a safety cap)."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"{reason} (at byte {offset})")
        self.reason = reason
        self.offset = offset


@dataclass
class GGUFArrayInfo:
    element_type: str
    count: int
    head: list[Any] = field(default_factory=list)


@dataclass
class GGUFHeader:
    """What the header says; strings are shortened except chat templates (kept up to 1 MiB)."""

    version: int
    byte_order: str
    tensor_count: int
    kv_count: int
    metadata: dict[str, Any]
    arrays: dict[str, GGUFArrayInfo]
    chat_templates: dict[str, str]
    alignment: int
    data_offset: int
    file_size: int
    bytes_read: int
    unknown_tensor_types: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A small JSON-able description for baselines and evidence."""
        keys = ("general.architecture", "general.name", "general.file_type", "general.quantization_version")
        return {
            "version": self.version,
            "byte_order": self.byte_order,
            "tensor_count": self.tensor_count,
            "kv_count": self.kv_count,
            "alignment": self.alignment,
            "data_offset": self.data_offset,
            **{k: self.metadata[k] for k in keys if k in self.metadata},
        }


def is_gguf(path: Path) -> bool:
    """True if the file starts with the GGUF magic (does not follow symlinks)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.pread(fd, 4, 0) == GGUF_MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def read_gguf_header(path: Path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> GGUFHeader:
    """Parse and validate a GGUF header; raises GGUFFormatError (or OSError for I/O problems)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb", buffering=0) as raw:
        st = os.fstat(raw.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise GGUFFormatError("not a regular file", 0)
        return _HeaderParser(raw, st.st_size, max_header_bytes).parse()


class _Cursor:
    """Sequential reads from a file through a window buffer, never past the file end or the byte cap."""

    def __init__(self, stream: BinaryIO, file_size: int, max_bytes: int) -> None:
        self._stream = stream
        self.file_size = file_size
        self._max_bytes = max_bytes
        self._buf = b""
        self._off = 0
        self.pos = 0  # absolute offset of the next byte to parse
        self.bytes_read = 0  # bytes fetched from the file so far
        self.order = "<"

    def remaining(self) -> int:
        return self.file_size - self.pos

    def _fill(self, n: int) -> None:
        avail = len(self._buf) - self._off
        if avail >= n:
            return
        if n > self.remaining():
            raise GGUFFormatError(f"truncated: need {n} bytes, {self.remaining()} left in file", self.pos)
        want = max(n - avail, min(_WINDOW, self.remaining() - avail))
        if self.bytes_read + want > self._max_bytes:
            want = n - avail
            if self.bytes_read + want > self._max_bytes:
                raise GGUFFormatError(f"header larger than the {self._max_bytes}-byte safety cap", self.pos)
        chunk = self._stream.read(want)
        if chunk is None or len(chunk) < n - avail:
            raise GGUFFormatError("truncated: file ended early", self.pos)
        self.bytes_read += len(chunk)
        self._buf = self._buf[self._off :] + chunk
        self._off = 0

    def take(self, n: int) -> bytes:
        self._fill(n)
        out = self._buf[self._off : self._off + n]
        self._off += n
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if n > self.remaining():
            raise GGUFFormatError(f"truncated: need {n} bytes, {self.remaining()} left in file", self.pos)
        avail = len(self._buf) - self._off
        if n <= avail:
            self._off += n
            self.pos += n
            return
        # Skipping far: drop the window and seek (nothing in between is read).
        self.pos += n
        self._buf = b""
        self._off = 0
        self._stream.seek(self.pos)

    def unpack(self, code: str, size: int) -> Any:
        self._fill(size)
        (value,) = struct.unpack_from(self.order + code, self._buf, self._off)
        self._off += size
        self.pos += size
        return value

    def u32(self) -> int:
        return int(self.unpack("I", 4))

    def u64(self) -> int:
        return int(self.unpack("Q", 8))


class _HeaderParser:
    def __init__(self, stream: BinaryIO, file_size: int, max_bytes: int) -> None:
        self.cur = _Cursor(stream, file_size, max_bytes)

    def parse(self) -> GGUFHeader:
        cur = self.cur
        if cur.file_size < 24:
            if cur.file_size >= 4 and cur.take(4) != GGUF_MAGIC:
                raise GGUFFormatError("bad magic: not a GGUF file", 0)
            raise GGUFFormatError(f"truncated: {cur.file_size} bytes is shorter than a GGUF header", 0)
        magic = cur.take(4)
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"bad magic {magic!r}: not a GGUF file", 0)
        version = cur.u32()
        if version & 0xFFFF == 0 and version != 0:  # written big-endian
            cur.order = ">"
            version = int.from_bytes(version.to_bytes(4, "little"), "big")
        if version not in SUPPORTED_VERSIONS:
            raise GGUFFormatError(f"unsupported GGUF version {version}", 4)
        tensor_count = cur.u64()
        kv_count = cur.u64()
        # A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8+4+4+8.
        if kv_count > MAX_KV_COUNT or kv_count * 13 > cur.remaining():
            raise GGUFFormatError(f"absurd metadata count {kv_count} for a {cur.file_size}-byte file", 16)
        if tensor_count > MAX_TENSOR_COUNT or tensor_count * 24 > cur.remaining():
            raise GGUFFormatError(f"absurd tensor count {tensor_count} for a {cur.file_size}-byte file", 8)

        metadata: dict[str, Any] = {}
        arrays: dict[str, GGUFArrayInfo] = {}
        templates: dict[str, str] = {}
        for _ in range(kv_count):
            key_at = cur.pos
            key = self._string(KEPT_TEXT_CHARS * 4, what="key")
            if key in metadata or key in arrays:
                raise GGUFFormatError(f"duplicate metadata key {key!r}", key_at)
            vtype = cur.u32()
            keep = KEPT_TEMPLATE_CHARS if key.startswith("tokenizer.chat_template") else KEPT_TEXT_CHARS
            if vtype == TYPE_ARRAY:
                arrays[key] = self._array(depth=1)
            else:
                value = self._value(vtype, keep)
                if key.startswith("tokenizer.chat_template") and isinstance(value, str):
                    templates[key] = value
                    value = value[:KEPT_TEXT_CHARS]
                metadata[key] = value

        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(alignment, int)
            or isinstance(alignment, bool)
            or alignment <= 0
            or (alignment & (alignment - 1))
        ):
            raise GGUFFormatError(f"general.alignment {alignment!r} is not a positive power of two", cur.pos)

        tensors = self._tensor_infos(tensor_count)
        data_offset = -(-cur.pos // alignment) * alignment
        if data_offset > cur.file_size:
            raise GGUFFormatError("truncated: tensor data section starts beyond the end of the file", cur.pos)
        unknown = self._check_tensors(tensors, alignment, data_offset, cur.file_size)
        return GGUFHeader(
            version=version,
            byte_order="little" if cur.order == "<" else "big",
            tensor_count=tensor_count,
            kv_count=kv_count,
            metadata=metadata,
            arrays=arrays,
            chat_templates=templates,
            alignment=alignment,
            data_offset=data_offset,
            file_size=cur.file_size,
            bytes_read=cur.bytes_read,
            unknown_tensor_types=unknown,
        )

    def _string(self, keep: int, *, what: str = "string") -> str:
        cur = self.cur
        at = cur.pos
        length = cur.u64()
        if length > MAX_STRING_BYTES:
            raise GGUFFormatError(f"{what} length {length} exceeds the {MAX_STRING_BYTES}-byte cap", at)
        if length > cur.remaining():
            raise GGUFFormatError(f"{what} length {length} runs past the end of the file", at)
        if length > keep * 4:  # keep at most `keep` characters (≤ 4 bytes each); skip the rest unread
            data = cur.take(keep * 4)
            cur.skip(length - keep * 4)
        else:
            data = cur.take(length)
        text = data.decode("utf-8", errors="replace")
        return text[:keep]

    def _value(self, vtype: int, keep: int) -> Any:
        if vtype == TYPE_STRING:
            return self._string(keep)
        scalar = _SCALARS.get(vtype)
        if scalar is None:
            raise GGUFFormatError(f"unknown metadata value type {vtype}", self.cur.pos - 4)
        return self.cur.unpack(*scalar)

    def _array(self, depth: int) -> GGUFArrayInfo:
        cur = self.cur
        at = cur.pos
        etype = cur.u32()
        count = cur.u64()
        if count > MAX_ARRAY_LENGTH:
            raise GGUFFormatError(f"array length {count} exceeds the {MAX_ARRAY_LENGTH} cap", at)
        info = GGUFArrayInfo(TYPE_NAMES.get(etype, str(etype)), count)
        if etype == TYPE_ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFFormatError(f"arrays nested deeper than {MAX_ARRAY_DEPTH}", at)
            if count * 12 > cur.remaining():
                raise GGUFFormatError(f"array of {count} arrays runs past the end of the file", at)
            for _ in range(count):
                self._array(depth + 1)
            return info
        if etype == TYPE_STRING:
            if count * 8 > cur.remaining():
                raise GGUFFormatError(f"array of {count} strings runs past the end of the file", at)
            for i in range(count):
                if i < KEPT_ARRAY_ITEMS:
                    info.head.append(self._string(64))
                else:
                    self._skip_string()
            return info
        scalar = _SCALARS.get(etype)
        if scalar is None:
            raise GGUFFormatError(f"unknown array element type {etype}", at)
        code, size = scalar
        if count * size > cur.remaining():
            raise GGUFFormatError(f"array of {count} × {size} bytes runs past the end of the file", at)
        head = min(count, KEPT_ARRAY_ITEMS)
        info.head = [cur.unpack(code, size) for _ in range(head)]
        cur.skip((count - head) * size)
        return info

    def _skip_string(self) -> None:
        cur = self.cur
        at = cur.pos
        length = cur.u64()
        if length > MAX_STRING_BYTES or length > cur.remaining():
            raise GGUFFormatError(f"string length {length} runs past the end of the file", at)
        cur.skip(length)

    def _tensor_infos(self, count: int) -> list[tuple[str, list[int], int, int, int]]:
        cur = self.cur
        out: list[tuple[str, list[int], int, int, int]] = []
        names: set[str] = set()
        for _ in range(count):
            at = cur.pos
            name = self._string(KEPT_TEXT_CHARS, what="tensor name")
            if name in names:
                raise GGUFFormatError(f"duplicate tensor name {name!r}", at)
            names.add(name)
            n_dims = cur.u32()
            if n_dims == 0 or n_dims > MAX_DIMS:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions", at)
            dims = [cur.u64() for _ in range(n_dims)]
            ggml_type = cur.u32()
            offset = cur.u64()
            out.append((name, dims, ggml_type, offset, at))
        return out

    @staticmethod
    def _check_tensors(
        tensors: list[tuple[str, list[int], int, int, int]], alignment: int, data_offset: int, file_size: int
    ) -> list[int]:
        sizes = GGML_BLOCK_SIZES
        data_size = file_size - data_offset
        unknown: set[int] = set()
        for name, dims, ggml_type, offset, at in tensors:
            if offset % alignment:
                raise GGUFFormatError(f"tensor {name!r} offset {offset} is not {alignment}-aligned", at)
            if offset > data_size:
                raise GGUFFormatError(f"tensor {name!r} starts beyond the end of the file", at)
            elements = 1
            for d in dims:
                elements *= d
            if elements > (1 << 62):
                raise GGUFFormatError(f"tensor {name!r} has an absurd element count", at)
            block = sizes.get(ggml_type)
            if block is None:
                unknown.add(ggml_type)
                continue
            block_elems, block_bytes = block
            if dims[0] % block_elems:
                raise GGUFFormatError(f"tensor {name!r} row size is not a multiple of its block size", at)
            nbytes = elements // block_elems * block_bytes
            if offset + nbytes > data_size:
                raise GGUFFormatError(f"truncated: tensor {name!r} data runs past the end of the file", at)
        return sorted(unknown)
