"""The parallel hasher: right digests, progress adds up, never follows symlinks or blocks on a FIFO."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ollama_guard.verify.hashing import sha256_file, sha256_files


def test_digests_match_hashlib_across_chunk_boundaries(tmp_path: Path) -> None:
    sizes = [0, 1, 4095, 65536, 3 * 65536 + 7, 1_000_003]
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    seen: list[int] = []
    results = sha256_files(paths, workers=3, chunk_size=65536, on_bytes=seen.append)
    assert set(results) == set(paths)
    for path in paths:
        data = path.read_bytes()
        assert results[path].sha256 == hashlib.sha256(data).hexdigest()
        assert results[path].size == len(data)
        assert results[path].error is None
    assert sum(seen) == sum(sizes)


def test_symlinks_and_special_files_are_not_read(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    link = tmp_path / "link"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert sha256_file(link).sha256 is None and sha256_file(link).error
    result = sha256_file(fifo)  # must return at once, not wait for a writer
    assert result.sha256 is None and result.error == "not a regular file"
    assert sha256_file(tmp_path / "absent").error


def test_single_worker_path(tmp_path: Path) -> None:
    path = tmp_path / "one"
    path.write_bytes(b"abc")
    assert sha256_files([path], workers=1)[path].sha256 == hashlib.sha256(b"abc").hexdigest()
    assert sha256_files([]) == {}
