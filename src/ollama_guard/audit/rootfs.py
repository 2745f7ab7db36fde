"""Reading a filesystem that may be mounted somewhere else (`--root DIR`) as if it were `/`.

Every path the audit reads is a *logical* path (as the audited system sees it, e.g. `/etc/environment`);
`RootFS` maps it under the root and resolves symlinks so that absolute link targets stay inside the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

_MAX_LINKS = 40
_MAX_READ = 4 * 1024 * 1024


class RootFS:
    """A view of the filesystem rooted at `root` (`/` for the live host)."""

    def __init__(self, root: Path, *, live: bool) -> None:
        self.root = root
        self.live = live

    def host_path(self, logical: str | PurePosixPath) -> Path:
        """Where `logical` lives on this machine, with symlinks resolved inside the root."""
        parts = [p for p in PurePosixPath("/", str(logical)).parts[1:] if p not in ("", ".")]
        resolved: list[str] = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = self.root.joinpath(*resolved, part)
            if candidate.is_symlink() and hops < _MAX_LINKS:
                hops += 1
                target = PurePosixPath(os.readlink(candidate))
                if target.is_absolute():
                    resolved = []
                    parts = list(target.parts[1:]) + parts
                else:
                    parts = list(target.parts) + parts
                continue
            resolved.append(part)
        return self.root.joinpath(*resolved)

    def exists(self, logical: str | PurePosixPath) -> bool:
        return self.host_path(logical).exists()

    def is_file(self, logical: str | PurePosixPath) -> bool:
        return self.host_path(logical).is_file()

    def is_dir(self, logical: str | PurePosixPath) -> bool:
        return self.host_path(logical).is_dir()

    def read_text(self, logical: str | PurePosixPath) -> str | None:
        """The file's text (UTF-8, undecodable bytes replaced), or None when it cannot be read."""
        data = self.read_bytes(logical)
        return None if data is None else data.decode("utf-8", errors="replace")

    def read_bytes(self, logical: str | PurePosixPath) -> bytes | None:
        path = self.host_path(logical)
        try:
            if not path.is_file():
                return None
            with path.open("rb") as fh:
                return fh.read(_MAX_READ)
        except OSError:
            return None

    def stat(self, logical: str | PurePosixPath) -> os.stat_result | None:
        try:
            return self.host_path(logical).stat()
        except OSError:
            return None

    def listdir(self, logical: str | PurePosixPath) -> list[str]:
        try:
            return sorted(os.listdir(self.host_path(logical)))
        except OSError:
            return []

    def children(self, logical: str | PurePosixPath, *, dirs_only: bool = False) -> Iterator[str]:
        """Logical paths of the entries of a directory, sorted by name."""
        base = PurePosixPath("/", str(logical))
        for name in self.listdir(base):
            child = str(base / name)
            if dirs_only and not self.is_dir(child):
                continue
            yield child

    def display(self, logical: str | PurePosixPath) -> str:
        """The logical path as shown to users (always the path on the audited system)."""
        return str(PurePosixPath("/", str(logical)))


def mode_string(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"
