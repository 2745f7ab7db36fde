"""Credential redaction for everything read from a host: command lines, environments, config lines.

Evidence is redacted where it is captured (the audit's sources build their records through these
functions), so no report renderer, plan file or log line can leak what was never kept. The rules err on
the side of hiding too much: a redacted path is a nuisance, a leaked password is an incident.

What is redacted:
- URL userinfo (`postgresql://user:pw@db/x` → `postgresql://[redacted]@db/x`), in any text;
- the value of any variable, key or flag whose name looks like a credential (`*PASSWORD*`, `*SECRET*`,
  `*TOKEN*`, `*KEY*`, `*CREDENTIAL*`, `*AUTH*`, `PASS`, `PWD`, …) in `NAME=value`, `NAME: value`,
  `"name": "value"`, `--name value` and `--name=value` forms;
- `Authorization:`/`Bearer`/`Basic` credentials, and tokens with a well-known shape (our own `og_…` keys,
  `sk-…`, `ghp_…`, `hf_…`, `AKIA…`, `xox?-…`) wherever they appear.

What is kept: everything else, notably addresses, ports and paths (e.g. OLLAMA_HOST's bind address).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[redacted]"

# Substrings that make a name a credential's name (matched case-insensitively, `-`/`.` as `_`).
_SENSITIVE_PARTS = (
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "PRIVATE",
    "SIGNATURE",
)
# Whole segments only (PASS in BYPASS or PWD for the working directory are not credentials).
_SENSITIVE_SEGMENTS = frozenset({"PASS", "PW", "PWD", "DSN", "SIG"})
_NOT_SENSITIVE = frozenset({"PWD", "OLDPWD"})
# Counts, not credentials: `--tokens-per-day`, `max_tokens`, `num_keys`.
_COUNT_WORDS = re.compile(r"TOKENS|KEYS")

# A URL's scheme, only where a word starts (bounded: hostile input must not make this quadratic).
_SCHEME = re.compile(r"(?i)(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://")
_WORD_END = re.compile(r"[\s\"'`]")
_AUTH_SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Digest|Token|ApiKey)([ \t]+)[^\s\"'`]+")
_SHAPED_TOKENS = re.compile(
    r"\bog_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}"
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{30,}"
    r"|\bhf_[A-Za-z0-9]{30,}"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bglpat-[A-Za-z0-9_-]{20,}"
)
# NAME followed by = or : (optionally quoted names, as in JSON/YAML/TOML/INI/env files).
# The name must start a word (the lookbehind keeps this linear on long identifier-like runs).
_ASSIGNMENT = re.compile(
    r"(?P<pre>[\"']?)(?<![A-Za-z0-9_.-])(?P<name>-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)(?P=pre)"
    r"(?P<sep>[ \t]*[=:][ \t]*)"
)
# A flag followed by its value as the next word (`--password hunter2`).
_FLAG_SPACE = re.compile(r"(?<![^\s\"'])(?P<name>--?[A-Za-z][A-Za-z0-9_.-]*)(?P<sep>[ \t]+)(?=[^\s-])")
# A bare value: its first word, then following words that are not `name=`/`name:` (the next setting).
_BARE_VALUE = re.compile(r"\S*(?:[ \t]+[^\s\"'=:]+(?=[ \t\r\n]|$))*")
_REST_OF_LINE = re.compile(r"[^\r\n]*")


def is_sensitive_name(name: str) -> bool:
    """True when a variable, key or flag with this name holds a credential."""
    norm = name.strip().strip("-\"'").upper().replace("-", "_").replace(".", "_")
    if not norm or norm in _NOT_SENSITIVE:
        return False
    squeezed = _COUNT_WORDS.sub("", norm).replace("TOKENIZ", "")  # tokenizer settings are not tokens
    if any(part in squeezed for part in _SENSITIVE_PARTS):
        return True
    return any(seg in _SENSITIVE_SEGMENTS for seg in re.split(r"[_\W]+", norm))


def _end_of_quoted(text: str, start: int, quote: str) -> int:
    """Index just past the closing `quote` at or after `start` (backslash escapes), or len(text)."""
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i + 1
        i += 1
    return len(text)


def _end_of_value(text: str, start: int, opening_quote: str, colon: bool = False) -> tuple[int, int]:
    """(value end, end of what to replace) for a value starting at `start`.

    Inside a quoted assignment (`"NAME=value"`) the value runs to the closing quote; a quoted value
    runs to its closing quote; after `NAME:` (a header, YAML) a bare value runs to the end of the line;
    after `NAME=` it is its first word plus following words that do not look like the next assignment
    (`PASSWORD=a b` in env files). When in doubt, more is hidden, never less.
    """
    if opening_quote:
        end = _end_of_quoted(text, start, opening_quote)
        close = end - 1 if end <= len(text) and text[end - 1 : end] == opening_quote else end
        return close, close
    if start < len(text) and text[start] in "\"'`":
        end = _end_of_quoted(text, start + 1, text[start])
        return end, end
    m = (_REST_OF_LINE if colon else _BARE_VALUE).match(text, start)
    end = m.end() if m else start
    # A trailing flag (`--other`) starts the next argument, not the value.
    words = text[start:end].split(" ")
    while len(words) > 1 and words[-1].startswith("-"):
        words.pop()
    end = start + len(" ".join(words))
    return end, end


def redact_text(text: str) -> str:
    """`text` with every credential it contains replaced by [redacted]."""
    if not text:
        return text
    text = _redact_userinfo(text)
    text = _SHAPED_TOKENS.sub(REDACTED, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _redact_assignments(text)
    return _redact_space_flags(text)


def _redact_userinfo(text: str) -> str:
    """`scheme://user:pw@host` → `scheme://[redacted]@host`.

    The userinfo runs to the *last* `@` of the word, so a raw `@` or `/` in a password cannot end it
    early (at worst a path's `@` hides more than needed). One pass over the text.
    """
    out: list[str] = []
    pos = 0
    scanned = 0  # words up to here hold no '@' after their scheme
    for m in _SCHEME.finditer(text):
        start = m.end()
        if m.start() < max(pos, scanned):
            continue
        stop = _WORD_END.search(text, start)
        end = stop.start() if stop else len(text)
        at = text.rfind("@", start, end)
        if at < 0:
            scanned = end
            continue
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = at
    out.append(text[pos:])
    return "".join(out)


def _redact_assignments(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _ASSIGNMENT.finditer(text):
        if m.start() < pos or not is_sensitive_name(m.group("name")):
            continue
        value_start = m.end()
        before = text[m.start() - 1] if m.start() > 0 and not m.group("pre") else ""
        opening = before if before in "\"'" else ""
        if text.startswith("//", value_start):  # `scheme://` is a URL, not an assignment
            continue
        colon = ":" in m.group("sep")
        _value_end, end = _end_of_value(text, value_start, opening, colon)
        if end <= value_start:
            continue
        value = text[value_start:end]
        if value.strip("\"'") == "":  # an empty credential is worth seeing: there is none
            continue
        out.append(text[pos:value_start])
        if value[:1] in "\"'`" and not opening:
            out.append(f"{value[0]}{REDACTED}{value[0]}")
        else:
            out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_space_flags(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _FLAG_SPACE.finditer(text):
        if m.start() < pos or not is_sensitive_name(m.group("name")):
            continue
        start = m.end()
        if text.startswith(REDACTED, start):
            continue
        if text[start] in "\"'`":
            end = _end_of_quoted(text, start + 1, text[start])
        else:
            end = start
            while end < len(text) and not text[end].isspace():
                end += 1
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def redact_value(name: str, value: str) -> str:
    """The value of variable `name` as it may be shown: hidden entirely when the name is a credential's."""
    if is_sensitive_name(name):
        return REDACTED if value else value
    return redact_text(value)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {name: redact_value(name, value) for name, value in env.items()}


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line, word by word: `--password X`, `--token=X`, `NAME=X` and URLs are redacted."""
    words = list(argv)
    out: list[str] = []
    hide_next = False
    for word in words:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        if word.startswith("-") and len(word) > 1:
            name, sep, value = word.partition("=")
            if sep:
                out.append(f"{name}={redact_value(name, value)}")
                continue
            if is_sensitive_name(name):
                hide_next = True
            out.append(redact_text(word))
            continue
        name, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            out.append(f"{name}={redact_value(name, value)}")
            continue
        out.append(redact_text(word))
    return out


def redact_command(argv: Iterable[str], limit: int | None = None) -> str:
    """A command line joined for display (redacted before it is cut to `limit` characters)."""
    text = " ".join(redact_argv(argv))
    return text if limit is None else text[:limit]


def contains_credential(text: str) -> bool:
    """True when redaction would change `text` (it holds something that looks like a credential)."""
    return redact_text(text) != text
