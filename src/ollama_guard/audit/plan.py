"""A hardening plan being written: its steps and the files it writes (owner-only, never followed links)."""

from __future__ import annotations

import difflib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from ollama_guard.errors import GuardError
from ollama_guard.redact import redact_text


@dataclass
class Step:
    title: str
    body: str
    impact: str


@dataclass
class Plan:
    out: Path
    steps: list[Step] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    def write(self, relative: str, content: str | bytes, *, executable: bool = False) -> Path:
        """Write one plan file, readable by its owner only (the plan quotes the host's configuration)."""
        path = self.out / relative
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        mode = 0o700 if executable else 0o600
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            path.chmod(mode)  # also when --force rewrote an existing file
        except OSError as exc:
            raise GuardError(
                f"cannot write {path}: {exc.strerror or exc} (choose a writable --out directory)"
            ) from None
        self.written.append(path)
        return path

    def write_installable(
        self, logical: str, content: str | bytes, original: str | bytes | None = None
    ) -> str:
        rel = "files" + posixpath.join("/", logical)
        self.write(rel, content)
        if original is not None and isinstance(content, str) and isinstance(original, str):
            self.write(rel + ".diff", _diff(logical, original, content))
        return rel

    def write_patch_only(self, logical: str, content: str, original: str) -> str:
        """For a file that holds credentials: only the changed lines, as a patch (no copy of the file).

        The diff has no context lines, so no line the edit does not touch is written; the changed lines
        themselves are redacted too (if one held a credential, the patch says so and must be applied by
        hand).
        """
        rel = "files" + posixpath.join("/", logical) + ".diff"
        self.write(rel, _diff(logical, redact_text(original), redact_text(content), context=0))
        return rel


def _diff(logical: str, original: str, content: str, context: int = 3) -> str:
    return "".join(
        difflib.unified_diff(
            original.splitlines(keepends=True),
            content.splitlines(keepends=True),
            fromfile=f"a{logical}",
            tofile=f"b{logical}",
            n=context,
        )
    )
