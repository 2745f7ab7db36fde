"""Go's value syntax as it appears in the log: ``time.Duration`` strings and double-quoted string literals."""

from __future__ import annotations

import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN (what Go prints)
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU (also accepted by Go)
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SIMPLE_UNITS = (("µs", 1e-6), ("ms", 1e-3), ("ns", 1e-9), ("us", 1e-6), ("μs", 1e-6), ("s", 1.0))
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_RE = r"(?:-?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|0)"


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.Duration`` string (``1h2m3.5s``, ``971.777µs``, ``0s``); None if invalid."""
    s = text.strip()
    for suffix, unit in _SIMPLE_UNITS:  # the common one-unit forms, without the regex
        if s.endswith(suffix):
            number = s[: -len(suffix)]
            digits = number.replace(".", "", 1)
            if digits and digits.isascii() and digits.isdigit():
                return float(number) * unit
            break
    negative = s.startswith("-")
    if negative:
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        return None
    return -total if negative else total


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)


def go_unquote(literal: str) -> str:
    """The string a Go double-quoted literal (``strconv.Quote`` / ``%#v`` / slog) stands for.

    ``\\xHH`` escapes are raw bytes in Go; runs of them are decoded as UTF-8 (invalid bytes become
    U+FFFD) so the result is always text.
    """
    body = literal[1:-1] if len(literal) >= 2 and literal[0] == literal[-1] == '"' else literal
    if "\\" not in body:
        return body
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(body):
        out += body[pos : m.start()].encode("utf-8", "surrogatepass")
        esc = m.group(1)
        if esc[0] == "x":
            out.append(int(esc[1:], 16))
        elif esc[0] in "uU" and len(esc) > 1:
            code = int(esc[1:], 16)
            out += chr(code).encode("utf-8", "surrogatepass") if code <= 0x10FFFF else b"\xef\xbf\xbd"
        elif len(esc) == 3 and esc.isdigit():
            out.append(int(esc, 8) & 0xFF)
        else:
            out += _SIMPLE_ESCAPES.get(esc, esc).encode("utf-8", "surrogatepass")
        pos = m.end()
    out += body[pos:].encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "replace")


def go_quote(text: str) -> str:
    """``strconv.Quote`` (what gin's ``%#v`` prints for the path): the inverse of ``go_unquote``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF or code == 0xFFFD:
            out.append("\\ufffd")
        elif not ch.isprintable() and code >= 0x80:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
