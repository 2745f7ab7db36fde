"""Prefixes that log collectors add before Ollama's own text (journald, ``docker logs -t``, Docker Desktop)
and ANSI colours."""

from __future__ import annotations

import re
from datetime import datetime

from ollama_guard.ollama.logformat.times import parse_rfc3339

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# journald short/short-precise: "Aug 07 13:30:29 host ollama[17408]: " — the month localised ("janv.",
# "Mär", "1月", "11월"), the host left out by `--no-hostname` or a paste ("Sep 24 08:27:48 ollama[1940]: ")
_JOURNAL_SHORT = (
    r" ?(?:[^\W\d_]{3,5}\.?|\d{1,2}[^\W\d_]) {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)? (?:[^\s:]+ )?"
    r"[^\s:\[]+(?:\[\d+\])?: "
)
# journald short-iso: "2024-08-07T13:30:29+0200 host ollama[17408]: "
_JOURNAL_ISO = (
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d) \S+ [^\s:\[]+(?:\[\d+\])?: "
)
# docker logs -t: RFC 3339 (nano) UTC timestamp and one space
_DOCKER_TS = r"(?P<docker>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) "
# Docker Desktop's log view: "2024-08-27 19:10:09 "
_DESKTOP_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "

PREFIX_RE = re.compile(rf"(?:{_JOURNAL_ISO}|{_JOURNAL_SHORT}|{_DOCKER_TS}|{_DESKTOP_TS})+")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text) if "\x1b" in text else text


def split_prefix(text: str) -> tuple[str, datetime | None]:
    """The message without collector prefixes, and the prefix's absolute time when it has one
    (``docker logs -t`` and our journald export carry UTC times; the other prefixes have no zone)."""
    m = PREFIX_RE.match(text)
    if m is None:
        return text, None
    stamp = None
    if m.group("docker"):
        stamp = parse_rfc3339(m.group("docker"))
    return text[m.end() :], stamp
