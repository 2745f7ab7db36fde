"""Ollama's application lines (``log/slog`` and older Go ``log``): their time, ``server config``,
``Listening on``, transfers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, tzinfo

from ollama_guard.ollama.logformat.golang import go_unquote
from ollama_guard.ollama.logformat.times import parse_rfc3339

_SLOG_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
_GOLOG_TIME = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? ")


def slog_fields(message: str) -> dict[str, str]:
    """``key=value`` pairs of a slog TextHandler line, values unquoted."""
    out: dict[str, str] = {}
    for m in _SLOG_PAIR.finditer(message):
        value = m.group(2)
        out.setdefault(m.group(1), go_unquote(value) if value.startswith('"') else value)
    return out


def app_line_time(message: str, tz: tzinfo) -> datetime | None:
    """The time of a slog (``time=…`` with zone) or Go ``log`` (``2024/05/01 10:00:00``, local) line."""
    if message.startswith("time="):
        end = message.find(" ")
        return parse_rfc3339(message[5 : end if end > 0 else None])
    m = _GOLOG_TIME.match(message)
    if m:
        try:
            return datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=tz)  # type: ignore[misc]
        except ValueError:
            return None
    return None


_ENV_RE = re.compile(r'server config"? env=("(?:[^"\\]|\\.)*")')
_ENV_KEY = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*):")
_ENV_KEY_AT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:")


def parse_env_map(text: str) -> dict[str, str]:
    """Go's ``fmt`` rendering of a ``map[string]string``/``map[string]any``: ``map[K:V K2:[a b] …]``.

    Values may contain colons (URLs) and, inside ``[…]`` lists, spaces; keys are identifiers.
    """
    body = text.strip()
    if body.startswith("map[") and body.endswith("]"):
        body = body[4:-1]
    out: dict[str, str] = {}
    pos = 0
    n = len(body)
    while pos < n:
        while pos < n and body[pos] == " ":
            pos += 1
        m = _ENV_KEY_AT.match(body, pos)
        if m is None:
            break
        key = m.group(0)[:-1]
        pos = m.end()
        if pos < n and body[pos] == "[":
            depth = 0
            start = pos
            while pos < n:
                if body[pos] == "[":
                    depth += 1
                elif body[pos] == "]":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
            if pos < n and body[pos] != " ":  # "[::]:11434" — a bracketed host, not a list
                nxt = _ENV_KEY.search(body, pos)
                pos = nxt.start() if nxt else n
            out[key] = body[start:pos].strip()
        else:
            nxt = _ENV_KEY.search(body, pos)
            end = nxt.start() if nxt else n
            out[key] = body[pos:end].strip()
            pos = end
    return out


def parse_list_value(value: str) -> list[str]:
    """``[a b c]`` → ``["a", "b", "c"]``; a bare value → a one-item list (comma-separated is split too)."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        return [item for item in v[1:-1].split() if item]
    return [item.strip() for item in v.split(",") if item.strip()]


def server_config_env(message: str) -> dict[str, str] | None:
    """The environment map of a ``server config`` line, or None when the line is not one."""
    found = server_config(message)
    return found[0] if found is not None else None


_ENV_CUT_RE = re.compile(r'server config"? env="(.*)$')


def server_config(message: str) -> tuple[dict[str, str], bool] | None:
    """(environment map, whether the line is whole) of a ``server config`` line; None when it is not one.

    A line cut short — a terminal or pager that truncated it, a paste that wrapped it — keeps the
    settings before the cut; the last one, whose value may be cut, is dropped.
    """
    if "server config" not in message:
        return None
    m = _ENV_RE.search(message)
    if m is not None:
        return parse_env_map(go_unquote(m.group(1))), True
    m = _ENV_CUT_RE.search(message)
    if m is None:
        return None
    body = m.group(1).rstrip("\\")
    body = body[4:] if body.startswith("map[") else body
    env = parse_env_map(go_unquote('"' + body + '"'))
    if env:
        env.pop(next(reversed(env)))
    return env, False


_LISTENING_RE = re.compile(r"Listening on (\S+) \(version ([^)\s]+)\)")


def parse_listening(message: str) -> tuple[str, str] | None:
    """``Listening on ADDR (version V)`` → (ADDR, V)."""
    m = _LISTENING_RE.search(message)
    return (m.group(1), m.group(2)) if m else None


_TRANSFER_RE = re.compile(
    r"\b(uploading|downloading) ([0-9a-f]{6,64}) in (\d+) (\d+(?:\.\d+)?) ?([KMGTPE]?i?B) part\(s\)"
)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15, "EB": 10**18,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@dataclass(frozen=True, slots=True)
class Transfer:
    direction: str  # "upload" | "download"
    digest_prefix: str
    parts: int
    approx_bytes: int  # parts × part size, as printed (rounded by Ollama's HumanBytes)


def parse_transfer(message: str) -> Transfer | None:
    m = _TRANSFER_RE.search(message)
    if m is None:
        return None
    parts = int(m.group(3))
    size = float(m.group(4)) * _SIZE_UNITS.get(m.group(5), 1)
    return Transfer("upload" if m.group(1) == "uploading" else "download", m.group(2), parts,
                    int(parts * size))
