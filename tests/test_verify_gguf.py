"""The bounded GGUF header reader: agrees with the gguf package on real files, rejects crafted headers
quickly and without reading (or allocating) much."""

from __future__ import annotations

import re
import struct
import time
import tracemalloc
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_guard.verify.gguf_inspect import GGML_BLOCK_SIZES, GGUFFormatError, is_gguf, read_gguf_header

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_gguf(
    path: Path, *, template: str | None = CHATML, tokens: int = 300, alignment: int | None = None
) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_uint32("llama.context_length", 2048)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_token_list([f"tok{i}" for i in range(tokens)])
    writer.add_array("tokenizer.ggml.scores", [0.5] * tokens)
    writer.add_tensor("token_embd.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    writer.add_tensor("output.weight", np.ones((4, 32), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def header_bytes(*, version: int = 3, tensors: int = 0, kvs: int = 0, magic: bytes = b"GGUF") -> bytes:
    return magic + struct.pack("<IQQ", version, tensors, kvs)


def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def test_reads_real_file_like_the_gguf_package(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    header = read_gguf_header(path)
    reference = gguf.GGUFReader(str(path))
    assert header.version == 3
    assert header.kv_count == len(reference.fields) - 3  # the reader adds GGUF.version/tensor_count/kv_count
    assert header.tensor_count == len(reference.tensors) == 2
    assert header.data_offset == reference.data_offset
    assert header.alignment == reference.alignment == 32
    assert header.chat_templates["tokenizer.chat_template"] == CHATML
    assert header.metadata["general.architecture"] == "llama"
    assert header.metadata["llama.context_length"] == 2048
    assert header.arrays["tokenizer.ggml.tokens"].count == 300
    assert header.arrays["tokenizer.ggml.tokens"].head[:2] == ["tok0", "tok1"]
    assert header.summary()["general.name"] == "tiny-test"
    assert is_gguf(path)


def test_custom_alignment_and_data_offset(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", alignment=64)
    header = read_gguf_header(path)
    assert header.alignment == 64
    assert header.data_offset == gguf.GGUFReader(str(path)).data_offset


def _expect_malformed(path: Path, fragment: str) -> GGUFFormatError:
    with pytest.raises(GGUFFormatError) as info:
        read_gguf_header(path)
    assert re.search(fragment, info.value.reason), info.value.reason
    return info.value


def test_bad_magic_and_version(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(header_bytes(magic=b"GGML") + b"\0" * 64)
    _expect_malformed(tmp_path / "a", "magic")
    (tmp_path / "b").write_bytes(header_bytes(version=7) + b"\0" * 64)
    _expect_malformed(tmp_path / "b", "version 7")
    (tmp_path / "c").write_bytes(b"GGUF\x03\x00")
    _expect_malformed(tmp_path / "c", "truncated")
    assert not is_gguf(tmp_path / "a")


def test_absurd_counts_are_rejected_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge-kv"
    path.write_bytes(header_bytes(kvs=2**60) + b"\0" * 4096)
    tracemalloc.start()
    started = time.perf_counter()
    err = _expect_malformed(path, "absurd metadata count")
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 2 * 1024 * 1024
    assert err.offset == 16
    path2 = tmp_path / "huge-tensors"
    path2.write_bytes(header_bytes(tensors=2**40) + b"\0" * 4096)
    _expect_malformed(path2, "absurd tensor count")


def test_string_longer_than_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(header_bytes(kvs=1) + struct.pack("<Q", 2**62) + b"general.name" + b"\0" * 64)
    _expect_malformed(path, "cap")
    path.write_bytes(header_bytes(kvs=1) + struct.pack("<Q", 10_000) + b"general.name" + b"\0" * 64)
    _expect_malformed(path, "past the end of the file")


def test_array_claiming_more_elements_than_the_file_holds(tmp_path: Path) -> None:
    kv = gguf_string(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 20_000_000)
    path = tmp_path / "arr"
    path.write_bytes(header_bytes(kvs=1) + kv + b"\0" * 1024)
    tracemalloc.start()
    started = time.perf_counter()
    _expect_malformed(path, "strings runs past the end")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < 2 * 1024 * 1024


def test_truncated_real_file(tmp_path: Path) -> None:
    full = write_gguf(tmp_path / "full.gguf", tokens=2000).read_bytes()
    header = read_gguf_header(tmp_path / "full.gguf")
    cut_kv = tmp_path / "cut-kv"
    cut_kv.write_bytes(full[:2000])  # inside the token array
    _expect_malformed(cut_kv, "truncated|past the end of the file")
    cut_data = tmp_path / "cut-data"
    cut_data.write_bytes(full[: header.data_offset + 100])  # tensor data missing
    _expect_malformed(cut_data, "runs past the end of the file")


def test_duplicate_keys_unknown_types_and_bad_alignment(tmp_path: Path) -> None:
    kv = gguf_string(b"general.name") + struct.pack("<I", 8) + gguf_string(b"x")
    dup = tmp_path / "dup"
    dup.write_bytes(header_bytes(kvs=2) + kv + kv + b"\0" * 64)
    _expect_malformed(dup, "duplicate metadata key")
    bad_type = tmp_path / "type"
    bad_type.write_bytes(header_bytes(kvs=1) + gguf_string(b"k") + struct.pack("<I", 99) + b"\0" * 64)
    _expect_malformed(bad_type, "unknown metadata value type 99")
    align = tmp_path / "align"
    align.write_bytes(
        header_bytes(kvs=1) + gguf_string(b"general.alignment") + struct.pack("<II", 4, 48) + b"\0" * 64
    )
    _expect_malformed(align, "power of two")


def test_misaligned_tensor_offset(tmp_path: Path) -> None:
    tensor = gguf_string(b"w") + struct.pack("<IQQIQ", 2, 32, 1, 0, 7)
    path = tmp_path / "t"
    path.write_bytes(header_bytes(tensors=1) + tensor + b"\0" * 512)
    _expect_malformed(path, "not 32-aligned")


def test_header_cap_bounds_bytes_read(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", tokens=20_000)
    header = read_gguf_header(path)
    assert header.bytes_read <= path.stat().st_size
    with pytest.raises(GGUFFormatError, match="safety cap"):
        read_gguf_header(path, max_header_bytes=4096)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_fail_cleanly_and_fast(tmp_path: Path, data: st.DataObject) -> None:
    base = tmp_path / "base.gguf"
    if not base.exists():
        write_gguf(base, tokens=40)
    raw = bytearray(base.read_bytes())
    limit = min(len(raw), 1200)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, limit - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw))))
    mutated = tmp_path / "mut.gguf"
    mutated.write_bytes(bytes(raw if cut is None else raw[:cut]))
    started = time.perf_counter()
    try:
        header = read_gguf_header(mutated)
    except GGUFFormatError:
        pass
    else:
        assert header.bytes_read <= mutated.stat().st_size
    assert time.perf_counter() - started < 1.0


def test_block_size_table_matches_the_gguf_package() -> None:
    from gguf.constants import GGML_QUANT_SIZES

    reference = {int(k): (int(v[0]), int(v[1])) for k, v in GGML_QUANT_SIZES.items()}
    assert {k: reference[k] for k in GGML_BLOCK_SIZES if k in reference} == GGML_BLOCK_SIZES
