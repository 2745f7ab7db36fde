"""How Ollama (Go ``encoding/json``) reads a JSON request body, so the gateway sees the same values.

Go facts (encoding/json ``decode.go``/``fold.go``, Go 1.21 and later; Ollama builds with Go 1.26):

* An object key selects a struct field by exact name first, otherwise case-insensitively: both sides
  are folded with ``foldName`` — ASCII letters upper-cased, every other rune replaced by the smallest
  rune of its Unicode *simple case folding* orbit (``unicode.SimpleFold``). So ``"MODEL"``, ``"Model"``
  and ``"model"`` all set ``model``; ``"ſtream"`` (U+017F long s) sets ``stream``; ``"\\u212a"``
  (Kelvin sign) folds like ``k``. ``İ`` (U+0130) and ``ı`` (U+0131) fold only to themselves.
* Keys are processed in order; a later key for the same field overwrites the earlier value. A JSON
  ``null`` has no effect on a string/number/bool field (it only resets pointer, slice, map and
  interface fields). Object values decoded into the same map or struct field are *merged*, not
  replaced — callers that care should refuse bodies where :func:`ambiguous_fields` is non-empty.
* Go replaces invalid UTF-8 and lone ``\\uD800``-style surrogates with U+FFFD instead of failing, which
  would let the gateway and Ollama disagree about a string. :func:`parse_body` therefore **rejects**
  them, and also rejects ``NaN``/``Infinity`` (Python accepts them, Go does not), trailing data after
  the object (Go's stream decoder would ignore it) and nesting deeper than ``max_depth``.

Case folding tables come from Python's ``unicodedata`` (Unicode 14 on Python 3.11; Go 1.26 uses 15.0 —
the two agree on every cased letter both know).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Sequence
from functools import cache
from typing import Any

_MAX_FOLD_SCAN = 0x20000  # every cased letter lives in planes 0 and 1
# Upper/lower mappings that are Turkic-only or full (not simple) case foldings; Go keeps these apart.
_NO_SIMPLE_FOLD = frozenset({0x0130, 0x0131})


class BodyError(ValueError):
    """The request body is not a JSON object that Ollama would read the way we do."""


@cache
def _fold_table() -> dict[int, int]:
    """Non-ASCII code point → smallest code point of its simple-case-folding orbit (only entries that
    differ from the code point itself, plus ASCII letters reached from non-ASCII ones)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:
            parent[x], x = root, parent[x]
        return root

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            lo, hi = (ra, rb) if ra < rb else (rb, ra)
            parent[hi] = lo
            parent.setdefault(lo, lo)

    for cp in range(0x80, _MAX_FOLD_SCAN):
        if cp in _NO_SIMPLE_FOLD or 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        for mapped in (ch.lower(), ch.upper()):
            if len(mapped) == 1 and mapped != ch and ord(mapped) not in _NO_SIMPLE_FOLD:
                union(cp, ord(mapped))
    table: dict[int, int] = {}
    for cp in list(parent):
        root = find(cp)
        if root != cp:
            table[cp] = root
    # ASCII letters fold to their upper case (the orbit minimum), so map lower-case ASCII reached
    # through a non-ASCII member (e.g. U+017F → 's') to the upper-case letter.
    for cp, root in list(table.items()):
        if 0x61 <= root <= 0x7A:
            table[cp] = root - 0x20
    return table


def go_fold_rune(ch: str) -> str:
    """The fold key of one character (Go's foldRune, ASCII upper-cased)."""
    cp = ord(ch)
    if cp < 0x80:
        return ch.upper() if "a" <= ch <= "z" else ch
    return chr(_fold_table().get(cp, cp))


def go_fold(s: str) -> str:
    """Fold key of a JSON key: two keys reach the same Go struct field iff their fold keys are equal."""
    if s.isascii():
        return s.upper()
    return "".join(go_fold_rune(ch) for ch in s)


def _check_nested(value: Any, depth: int, max_depth: int, strings: bool) -> None:
    """Reject nesting deeper than max_depth and (if `strings`) lone surrogates, iteratively.

    `depth` is the depth `value` sits at; only containers are pushed on the work stack.
    """
    if isinstance(value, str):
        if strings:
            _check_str(value)
        return
    if not isinstance(value, dict | list):
        return
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, depth)]
    while stack:
        item, d = stack.pop()
        if d > max_depth:
            raise BodyError(f"JSON nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            if strings:
                for k in item:
                    _check_str(k)
            children: Iterable[Any] = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, d + 1))
            elif strings and isinstance(child, str):
                _check_str(child)


def _check_str(s: str) -> None:
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError("JSON string contains an unpaired surrogate escape") from None


def _reject_constant(name: str) -> Any:
    raise BodyError(f"invalid JSON value {name}")


# a JSON string from its opening quote, possessive so that a failed match costs one pass
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)


def count_values(raw: bytes, cap: int) -> int:
    """How many JSON values (object members, array items, containers) `raw` holds at most — the
    count of `{`, `[` and `,` outside strings. Raises BodyError as soon as the count passes `cap`,
    before anything is built from the body; scanning stops there, so a huge body costs no more than
    `cap` values' worth of work."""
    bound = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    if bound <= cap:
        return bound  # strings included, already within the cap
    count, pos, size = 0, 0, len(raw)
    while pos < size:
        quote = raw.find(b'"', pos)
        end = size if quote < 0 else quote
        count += raw.count(b",", pos, end) + raw.count(b"{", pos, end) + raw.count(b"[", pos, end)
        if count > cap:
            raise BodyError(f"JSON body has more than {cap} values")
        if quote < 0:
            break
        string = _STRING.match(raw, quote)
        if string is None:
            break  # unterminated string: the parser reports it
        pos = string.end()
    return count


def parse_body(raw: bytes, *, max_depth: int = 32, max_values: int | None = None) -> list[tuple[str, Any]]:
    """The top-level object's (key, value) pairs in order, duplicates kept.

    Nested objects are returned as dicts (last duplicate wins). Raises BodyError for an empty body,
    invalid UTF-8 (including a BOM), invalid JSON, NaN/Infinity, unpaired surrogate escapes, trailing
    data, a top-level value that is not an object, nesting deeper than `max_depth` (the top-level
    object is depth 1) or more than `max_values` values (`count_values`, checked before parsing).
    """
    if isinstance(raw, str):
        raise TypeError("parse_body takes bytes")
    if max_values is not None:
        count_values(raw, max_values)
    try:
        text = bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip(" \t\r\n"):
        raise BodyError("missing request body")

    top: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        top.append(pairs)  # the outermost object is completed last
        return dict(pairs)

    try:
        value = json.loads(text, object_pairs_hook=hook, parse_constant=_reject_constant)
    except BodyError:
        raise
    except json.JSONDecodeError as exc:
        raise BodyError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise BodyError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # e.g. integer with too many digits
        raise BodyError(f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BodyError(f"request body must be a JSON object, not {_json_type(value)}")
    pairs = top[-1]
    # A lone surrogate can only come from a \uD800–\uDFFF escape (the bytes were strict UTF-8).
    strings = "\\ud" in text or "\\uD" in text
    for k, v in pairs:
        if strings:
            _check_str(k)
        _check_nested(v, 2, max_depth, strings)
    if max_depth < 1:
        raise BodyError(f"JSON nested deeper than {max_depth} levels")
    return pairs


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def _field_lookup(fields: Iterable[str]) -> tuple[set[str], dict[str, str]]:
    exact: set[str] = set()
    folded: dict[str, str] = {}
    for name in fields:
        exact.add(name)
        folded.setdefault(go_fold(name), name)  # first folded match takes precedence, as in Go
    return exact, folded


def go_field_for(key: str, fields: Iterable[str]) -> str | None:
    """The struct field (from `fields`, Go json tag names) that Go would decode `key` into."""
    exact, folded = _field_lookup(fields)
    return key if key in exact else folded.get(go_fold(key))


def go_view(
    pairs: Sequence[tuple[str, Any]],
    fields: Iterable[str],
    *,
    nullable: Collection[str] = (),
) -> dict[str, Any]:
    """For each struct field, the value Go would end up with: the last key that folds to it wins.

    A ``null`` leaves a field untouched unless the field is listed in `nullable` (Go pointer, slice,
    map or interface fields, e.g. ``stream``), where it resets the field to None. Fields no key sets
    are absent from the result.
    """
    exact, folded = _field_lookup(fields)
    view: dict[str, Any] = {}
    for key, value in pairs:
        name = key if key in exact else folded.get(go_fold(key))
        if name is None:
            continue
        if value is None and name not in nullable:
            continue
        view[name] = value
    return view


def ambiguous_fields(pairs: Sequence[tuple[str, Any]], fields: Iterable[str]) -> set[str]:
    """Fields that more than one key in the body reaches (duplicates or case/fold variants)."""
    exact, folded = _field_lookup(fields)
    seen: dict[str, int] = {}
    for key, _ in pairs:
        name = key if key in exact else folded.get(go_fold(key))
        if name is not None:
            seen[name] = seen.get(name, 0) + 1
    return {name for name, count in seen.items() if count > 1}


def keys_folding_to(pairs: Sequence[tuple[str, Any]], field: str) -> list[str]:
    """Every key in the body that Go would decode into `field` (in order)."""
    target = go_fold(field)
    return [k for k, _ in pairs if k == field or go_fold(k) == target]
