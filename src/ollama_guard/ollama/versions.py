"""Ollama version strings, parsed and ordered.

What Ollama reports (``GET /api/version``, the ``User-Agent`` of its registry requests, startup logs):

* releases ``0.6.5``; tags carry a ``v`` prefix (``v0.6.5``), which is accepted;
* pre-releases ``0.1.49-rc10``, ``0.4.0-ci1``, ``0.12.7-citest0``, ``0.10.2-int1`` — older than the release
  (``0.5.0-rc2 < 0.5.0``); the number after the letters compares numerically (``rc10 > rc2``);
* source builds use ``git describe --long --dirty`` (scripts/env.sh): ``0.5.7-3-gabc1234`` or
  ``0.5.7-rc1-0-gabc1234-dirty`` = N commits after that tag — ordered after the tag (distance 0 is the
  tag itself), before the next tag;
* ``0.0.0`` is the built-in default (``version/version.go``) of a build made without a version stamp, i.e. a
  developer build of an unknown commit.

Choice for ``0.0.0``: it is a *dev build* (``is_dev``) and sorts **after every real version**. Advisories
with a fixed version therefore do not match it, while the ones with no fix at all still do; commands
that report versions should say "unknown (dev build)" rather than "outdated". Build metadata after ``+``
is kept for display and ignored in comparisons, as in SemVer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

_VERSION_RE = re.compile(
    r"""
    [vV]?
    (?P<major>0|[1-9]\d{0,8})\.(?P<minor>0|[1-9]\d{0,8})\.(?P<patch>0|[1-9]\d{0,8})
    (?:-(?P<pre>[A-Za-z]+)\.?(?P<pre_num>\d{1,9})?(?![A-Za-z]))?
    (?:-(?P<distance>\d{1,9})-g(?P<commit>[0-9a-f]{4,40}))?
    (?P<dirty>-dirty)?
    (?:\+(?P<build>[0-9A-Za-z.-]+))?
    """,
    re.VERBOSE,
)


class InvalidVersion(ValueError):
    """The string is not an Ollama version."""


@total_ordering
@dataclass(frozen=True, eq=False)
class OllamaVersion:
    """An ordered Ollama version. Equal versions compare equal whatever their spelling (``v`` prefix,
    build metadata, commit hash)."""

    major: int
    minor: int
    patch: int
    prerelease: str | None = None  # letters of the pre-release label: "rc", "ci", "citest", …
    prerelease_number: int | None = None
    distance: int = 0  # commits after the tag (git describe)
    commit: str | None = None
    dirty: bool = False
    build: str | None = None
    original: str = field(default="", compare=False)

    @property
    def is_dev(self) -> bool:
        """``0.0.0``: an unstamped developer build; its real version is unknown."""
        return (self.major, self.minor, self.patch) == (0, 0, 0)

    @property
    def is_prerelease(self) -> bool:
        return self.prerelease is not None

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple[int, int, int, int, str, int, int]:
        if self.is_dev:
            # After every real version; all dev builds are equal to each other.
            return (1, 0, 0, 0, "", 0, 0)
        pre_rank = 1 if self.prerelease is None else 0
        return (
            0,
            self.major,
            self.minor,
            self.patch * 2 + pre_rank,
            (self.prerelease or "").lower(),
            self.prerelease_number if self.prerelease_number is not None else -1,
            self.distance,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OllamaVersion):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OllamaVersion):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease is not None:
            s += f"-{self.prerelease}"
            if self.prerelease_number is not None:
                s += str(self.prerelease_number)
        if self.commit is not None:
            s += f"-{self.distance}-g{self.commit}"
        if self.dirty:
            s += "-dirty"
        if self.build:
            s += f"+{self.build}"
        return s

    def __repr__(self) -> str:
        return f"OllamaVersion({str(self)!r})"


def parse_version(s: str | OllamaVersion) -> OllamaVersion:
    """Parse an Ollama version string. Raises InvalidVersion for anything else."""
    if isinstance(s, OllamaVersion):
        return s
    if not isinstance(s, str):
        raise InvalidVersion(f"version must be a string, not {type(s).__name__}")
    text = s.strip()
    m = _VERSION_RE.fullmatch(text)
    if m is None:
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise InvalidVersion(f"not an Ollama version: {shown!r} (expected e.g. 0.6.5, v0.5.0-rc2)")
    pre_num = m.group("pre_num")
    distance = m.group("distance")
    return OllamaVersion(
        major=int(m.group("major")),
        minor=int(m.group("minor")),
        patch=int(m.group("patch")),
        prerelease=m.group("pre"),
        prerelease_number=int(pre_num) if pre_num is not None else None,
        distance=int(distance) if distance is not None else 0,
        commit=m.group("commit"),
        dirty=m.group("dirty") is not None,
        build=m.group("build"),
        original=text,
    )


def try_parse_version(s: object) -> OllamaVersion | None:
    """parse_version, or None when `s` is not a version."""
    if not isinstance(s, str | OllamaVersion):
        return None
    try:
        return parse_version(s)
    except InvalidVersion:
        return None
