"""Go's encoding/json scanner (scanner.go) and json.Decoder's framing (stream.go), as Ollama's request
decoding meets them through gin's ShouldBindJSON (`json.NewDecoder(body).Decode(&req)`):

* a syntax error is worded as Go words it: ``invalid character 'b' looking for beginning of object key
  string``, ``invalid character '}' after decimal point in numeric literal``, ``exceeded max depth``;
* a body that ends inside the first value is ``unexpected EOF``; an empty (all-space) body is io.EOF;
* the Decoder stops at the end of the first value: whatever follows it is never read (``{}garbage`` is
  fine).

`scan_first_value` runs in Python only over the structure: string contents are skipped with a regular
expression, so a large string costs C speed; callers bound the element count beforehand.
"""

from __future__ import annotations

import re

MAX_NESTING_DEPTH = 10000  # encoding/json maxNestingDepth

EOF = "EOF"
UNEXPECTED_EOF = "unexpected EOF"

_SPACE = frozenset(b" \t\r\n")
_DIGITS = frozenset(b"0123456789")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = frozenset(b'bfnrt\\/"')
_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_LITERALS = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}


class GoSyntaxError(ValueError):
    """A body Go's Decoder refuses; str() is Go's err.Error() text."""


def quote_char(c: int) -> str:
    """encoding/json quoteChar: the offending byte as Go shows it in an error."""
    if c == 0x27:
        return "'\\''"
    if c == 0x22:
        return "'\"'"
    ch = chr(c)  # Go's string(byte) is the rune U+00XX
    if ch == "\\":
        return "'\\\\'"
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    if ch in named:
        return f"'{named[ch]}'"
    if c < 0x20 or c == 0x7F:
        return f"'\\x{c:02x}'"
    if 0x80 <= c <= 0xA0 or c == 0xAD:  # not printable in Go (C1 controls, no-break space, soft hyphen)
        return f"'\\u{c:04x}'"
    return f"'{ch}'"


def _error(c: int, context: str) -> GoSyntaxError:
    return GoSyntaxError(f"invalid character {quote_char(c)} {context}")


def scan_first_value(data: bytes) -> int:
    """Index just past the first JSON value in `data` (Decoder semantics; trailing bytes ignored).

    Raises GoSyntaxError with Go's message, or with "unexpected EOF" when the data ends inside the
    value, or with "EOF" when there is nothing but white space.
    """
    n = len(data)
    i = 0
    while i < n and data[i] in _SPACE:
        i += 1
    if i == n:
        raise GoSyntaxError(EOF)
    stack: list[int] = []  # 0: object key expected, 1: object value done, 2: array value done
    OBJ_KEY, OBJ_VALUE, ARR_VALUE = 0, 1, 2
    while True:
        # --- a value starts at i (stateBeginValue), after optional space ---
        while i < n and data[i] in _SPACE:
            i += 1
        if i >= n:
            raise GoSyntaxError(UNEXPECTED_EOF)
        c = data[i]
        if c == 0x7B or c == 0x5B:  # { [
            if len(stack) >= MAX_NESTING_DEPTH:
                raise GoSyntaxError("exceeded max depth")
            i += 1
            while i < n and data[i] in _SPACE:
                i += 1
            if i >= n:
                raise GoSyntaxError(UNEXPECTED_EOF)
            if c == 0x7B:
                if data[i] == 0x7D:  # {}
                    i += 1
                    done = True
                else:
                    if data[i] != 0x22:
                        raise _error(data[i], "looking for beginning of object key string")
                    stack.append(OBJ_KEY)
                    i = _string(data, i)
                    done = False
            else:
                if data[i] == 0x5D:  # []
                    i += 1
                    done = True
                else:
                    stack.append(ARR_VALUE)
                    continue  # the element begins here
        elif c == 0x22:
            i = _string(data, i)
            done = True
        elif c == 0x2D or c in _DIGITS:
            i = _number(data, i)
            done = True
        elif c in _LITERALS:
            i = _literal(data, i, _LITERALS[c])
            done = True
        else:
            raise _error(c, "looking for beginning of value")
        # --- after a value or an object key (stateEndValue) ---
        while True:
            if not stack:
                return i
            while i < n and data[i] in _SPACE:
                i += 1
            if i >= n:
                raise GoSyntaxError(UNEXPECTED_EOF)
            c = data[i]
            top = stack[-1]
            if top == OBJ_KEY and not done:
                if c != 0x3A:
                    raise _error(c, "after object key")
                stack[-1] = OBJ_VALUE
                i += 1
                break  # a value follows
            if top == OBJ_VALUE:
                if c == 0x2C:
                    stack[-1] = OBJ_KEY
                    i += 1
                    while i < n and data[i] in _SPACE:
                        i += 1
                    if i >= n:
                        raise GoSyntaxError(UNEXPECTED_EOF)
                    if data[i] != 0x22:
                        raise _error(data[i], "looking for beginning of object key string")
                    i = _string(data, i)
                    done = False
                    continue
                if c == 0x7D:
                    stack.pop()
                    i += 1
                    done = True
                    continue
                raise _error(c, "after object key:value pair")
            # ARR_VALUE
            if c == 0x2C:
                i += 1
                break
            if c == 0x5D:
                stack.pop()
                i += 1
                done = True
                continue
            raise _error(c, "after array element")


def _string(data: bytes, i: int) -> int:
    """data[i] is the opening quote; returns the index after the closing one."""
    n = len(data)
    i += 1
    while True:
        i = _STRING_RUN.match(data, i).end()  # type: ignore[union-attr]
        if i >= n:
            raise GoSyntaxError(UNEXPECTED_EOF)
        c = data[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            if i + 1 >= n:
                raise GoSyntaxError(UNEXPECTED_EOF)
            e = data[i + 1]
            if e in _ESCAPES:
                i += 2
                continue
            if e != 0x75:
                raise _error(e, "in string escape code")
            for k in range(4):
                if i + 2 + k >= n:
                    raise GoSyntaxError(UNEXPECTED_EOF)
                if data[i + 2 + k] not in _HEX:
                    raise _error(data[i + 2 + k], "in \\u hexadecimal character escape")
            i += 6
            continue
        raise _error(c, "in string literal")


def _number(data: bytes, i: int) -> int:
    n = len(data)

    def at(k: int) -> int:
        if k >= n:
            raise GoSyntaxError(UNEXPECTED_EOF)
        return data[k]

    if data[i] == 0x2D:
        i += 1
        c = at(i)
        if c not in _DIGITS:
            raise _error(c, "in numeric literal")
    if data[i] == 0x30:
        i += 1
    else:
        while i < n and data[i] in _DIGITS:
            i += 1
    if i < n and data[i] == 0x2E:
        i += 1
        c = at(i)
        if c not in _DIGITS:
            raise _error(c, "after decimal point in numeric literal")
        while i < n and data[i] in _DIGITS:
            i += 1
    if i < n and data[i] in (0x65, 0x45):
        i += 1
        if at(i) in (0x2B, 0x2D):
            i += 1
        c = at(i)
        if c not in _DIGITS:
            raise _error(c, "in exponent of numeric literal")
        while i < n and data[i] in _DIGITS:
            i += 1
    return i


def _literal(data: bytes, i: int, word: bytes) -> int:
    for k in range(1, len(word)):
        if i + k >= len(data):
            raise GoSyntaxError(UNEXPECTED_EOF)
        if data[i + k] != word[k]:
            expecting = chr(word[k])
            raise _error(data[i + k], f"in literal {word.decode()} (expecting '{expecting}')")
    return i + len(word)
