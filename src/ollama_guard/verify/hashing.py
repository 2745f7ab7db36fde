"""SHA-256 of many large files at close to disk speed.

Each file is read sequentially in big chunks into one reused buffer (no per-chunk allocation) and fed to
hashlib, which releases the GIL while it hashes a large chunk; files are spread over a thread pool, the
biggest first, so several cores (and the disk's queue) are kept busy. Symlinks and non-regular files are
never followed or read: a blob that is not a plain file is reported as an error instead.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# Read size: 256 KiB-16 MiB are within ~5 % of each other; 4 MiB was as good as any on a warm cache (CPU
# per GiB) and best on a cold one (see docs/performance.md, "Verify").
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024

_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


@dataclass(frozen=True, slots=True)
class HashResult:
    """The outcome of hashing one file: its hex digest, or why it could not be read."""

    path: Path
    sha256: str | None
    size: int
    error: str | None = None


def default_workers() -> int:
    """One thread per core, at least 2 (overlaps one file's I/O with another's hashing), at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


def sha256_file(
    path: Path,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> HashResult:
    """Hash one regular file without following symlinks. Never raises for I/O problems."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        return HashResult(path, None, 0, _describe(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return HashResult(path, None, 0, "not a regular file")
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass  # advice only
        digest = hashlib.sha256()
        buffer = bytearray(chunk_size)
        view = memoryview(buffer)
        total = 0
        with open(fd, "rb", buffering=0, closefd=False) as stream:
            while True:
                n = stream.readinto(view)
                if not n:
                    break
                digest.update(view[:n])
                total += n
                if on_bytes is not None:
                    on_bytes(n)
        return HashResult(path, digest.hexdigest(), total)
    except OSError as exc:
        return HashResult(path, None, 0, _describe(exc))
    finally:
        os.close(fd)


def sha256_files(
    paths: Iterable[Path],
    *,
    workers: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_bytes: Callable[[int], None] | None = None,
) -> dict[Path, HashResult]:
    """Hash every path with a pool of `workers` threads; biggest files are started first.

    `on_bytes(n)` is called (from worker threads, serialised by a lock) after each chunk, for progress.
    """
    ordered = sorted(set(paths), key=_size_or_zero, reverse=True)
    if not ordered:
        return {}
    count = max(1, min(workers or default_workers(), len(ordered)))
    lock = threading.Lock()

    def report(n: int) -> None:
        if on_bytes is not None:
            with lock:
                on_bytes(n)

    callback = report if on_bytes is not None else None
    if count == 1:
        return {p: sha256_file(p, chunk_size=chunk_size, on_bytes=callback) for p in ordered}
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="verify-hash") as pool:
        results = pool.map(lambda p: sha256_file(p, chunk_size=chunk_size, on_bytes=callback), ordered)
        return {r.path: r for r in results}


def _size_or_zero(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
