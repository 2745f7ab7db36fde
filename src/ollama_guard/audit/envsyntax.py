"""Config-file syntaxes that carry environment variables: systemd unit files, their `Environment=`
word lists, systemd `EnvironmentFile=` files and pam_env's `/etc/environment`.

Parsers return what the consuming program would end up with, plus the line each value came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "s": " ",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def valid_env_name(name: str) -> bool:
    return bool(_ENV_NAME.match(name))


@dataclass(frozen=True)
class UnitAssignment:
    """One `Key=Value` line of a unit file (continuation lines joined)."""

    section: str
    key: str
    value: str
    line: int
    text: str


def parse_unit_file(text: str) -> list[UnitAssignment]:
    """systemd's unit-file syntax: sections, `#`/`;` comments, backslash line continuation."""
    out: list[UnitAssignment] = []
    section = ""
    pending: list[str] = []
    start_line = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending:
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
                continue
            start_line = number
        elif line[:1] in ("#", ";"):
            continue  # comment lines inside a continuation are skipped
        if line.endswith("\\"):
            pending.append(line[:-1] + " ")
            continue
        pending.append(line)
        joined = "".join(pending)
        pending = []
        key, sep, value = joined.partition("=")
        if not sep:
            continue
        out.append(UnitAssignment(section, key.strip(), value.strip(), start_line, joined))
    return out


def _c_unescape(text: str, i: int) -> tuple[str, int]:
    """Decode the escape starting after a backslash at text[i]; returns (chars, next index)."""
    if i >= len(text):
        return "\\", i
    c = text[i]
    if c in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[c], i + 1
    if c == "x" and re.match(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
        return chr(int(text[i + 1 : i + 3], 16)), i + 3
    if c == "u" and re.match(r"[0-9a-fA-F]{4}", text[i + 1 : i + 5]):
        return chr(int(text[i + 1 : i + 5], 16)), i + 5
    if c == "U" and re.match(r"[0-9a-fA-F]{8}", text[i + 1 : i + 9]):
        return chr(int(text[i + 1 : i + 9], 16)), i + 9
    if re.match(r"[0-7]{3}", text[i : i + 3]):
        return chr(int(text[i : i + 3], 8)), i + 3
    return c, i + 1


def systemd_words(value: str) -> list[str] | None:
    """extract_first_word(…, EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) applied until the end.

    Quotes may open anywhere in a word (`VAR="a b"` is one word `VAR=a b`). Returns None when the
    value has an unterminated quote (systemd then ignores the whole line).
    """
    words: list[str] = []
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t\n\r":
            i += 1
        if i >= n:
            return words
        buf: list[str] = []
        quote = ""
        while i < n:
            c = value[i]
            if c == "\\":
                chars, i = _c_unescape(value, i + 1)
                buf.append(chars)
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    buf.append(c)
                i += 1
                continue
            if c in " \t\n\r":
                break
            if c in "\"'":
                quote = c
            else:
                buf.append(c)
            i += 1
        if quote:
            return None
        words.append("".join(buf).replace("%%", "%"))


def environment_assignments(value: str) -> list[tuple[str, str]] | None:
    """`Environment=` value → [(name, value)], dropping invalid assignments like systemd does.

    An empty list from an empty value means "reset"; None means the line is invalid and ignored.
    """
    words = systemd_words(value)
    if words is None:
        return None
    pairs: list[tuple[str, str]] = []
    for word in words:
        name, sep, val = word.partition("=")
        if sep and valid_env_name(name):
            pairs.append((name, val))
    return pairs


@dataclass(frozen=True)
class EnvFileEntry:
    name: str
    value: str
    line: int
    text: str


def parse_systemd_env_file(text: str) -> list[EnvFileEntry]:
    """An `EnvironmentFile=` file, read as systemd's env-file parser does.

    `KEY=VALUE` per line; `#`/`;` start a comment only at the start of a line; a value may be single-
    or double-quoted (quoted parts may be concatenated); unquoted values lose trailing spaces;
    a backslash escapes the next character and a trailing backslash continues the line.
    Names that are not valid environment names (e.g. `export FOO`) are ignored.
    """
    entries: list[EnvFileEntry] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        number = i + 1
        raw = lines[i]
        i += 1
        stripped = raw.lstrip()
        if not stripped or stripped[0] in "#;":
            continue
        key, sep, rest = stripped.partition("=")
        if not sep:
            continue
        name = key.strip()
        consumed = [raw]
        value, rest_lines = _env_value(rest, lines, i)
        consumed.extend(lines[i : i + rest_lines])
        i += rest_lines
        if valid_env_name(name):
            entries.append(EnvFileEntry(name, value, number, "\n".join(consumed)))
    return entries


def _env_value(rest: str, lines: list[str], next_index: int) -> tuple[str, int]:
    """Decode one env-file value; returns (value, number of extra lines consumed)."""
    out: list[str] = []
    extra = 0
    text = rest.lstrip(" \t")
    j = 0
    quote = ""
    trailing_ws = 0  # unquoted whitespace at the end, trimmed at the end of the value
    while True:
        if j >= len(text):
            if quote and next_index + extra < len(lines):
                out.append("\n")
                text = lines[next_index + extra]
                extra += 1
                j = 0
                continue
            break
        c = text[j]
        if quote == "'":
            if c == "'":
                quote = ""
            else:
                out.append(c)
            j += 1
            continue
        if quote == '"':
            if c == '"':
                quote = ""
                j += 1
                continue
            if c == "\\" and j + 1 < len(text):
                nxt = text[j + 1]
                out.append(nxt if nxt in '"\\`$' else "\\" + nxt)
                j += 2
                continue
            if c == "\\":  # backslash-newline inside double quotes joins lines
                if next_index + extra < len(lines):
                    text = lines[next_index + extra]
                    extra += 1
                    j = 0
                    continue
            out.append(c)
            j += 1
            continue
        if c in "'\"" and not out:
            quote = c
            trailing_ws = 0
            j += 1
            continue
        if c == "\\":
            if j + 1 < len(text):
                out.append(text[j + 1])
                j += 2
                trailing_ws = 0
                continue
            if next_index + extra < len(lines):  # line continuation
                text = lines[next_index + extra]
                extra += 1
                j = 0
                continue
            j += 1
            continue
        out.append(c)
        trailing_ws = trailing_ws + 1 if c in " \t" else 0
        j += 1
    value = "".join(out)
    if trailing_ws:
        value = value[:-trailing_ws]
    return value, extra


def parse_pam_environment(text: str) -> list[EnvFileEntry]:
    """/etc/environment as pam_env reads it: `KEY=VALUE`, optional `export `, `#` comments,
    one level of surrounding quotes removed."""
    entries: list[EnvFileEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        name, sep, value = line.partition("=")
        if not sep or not valid_env_name(name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries.append(EnvFileEntry(name, value, number, raw))
    return entries
