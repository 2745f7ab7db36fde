"""Filter model listings (`/api/tags`, `/api/ps`, `/v1/models`) down to the models a key may use.

A listing entry is kept only when its name parses and its canonical name matches the key's patterns
(and it is not a cloud model while cloud use is off). Anything unexpected in the upstream answer
(not JSON, wrong shape) yields an empty listing rather than the unfiltered one.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from ollama_guard.gateway.patterns import ModelMatcher, parse_cached
from ollama_guard.gateway.routes import ListingKind
from ollama_guard.ollama.names import InvalidModelName


def _allowed(name: Any, matcher: ModelMatcher, allow_cloud: bool) -> bool:
    if not isinstance(name, str) or not name:
        return False
    try:
        parsed = parse_cached(name)
    except InvalidModelName:
        return False
    if parsed.is_cloud and not allow_cloud:
        return False
    return matcher(parsed.canonical())


def _entry_allowed(entry: Any, fields: tuple[str, ...], matcher: ModelMatcher, allow_cloud: bool) -> bool:
    if not isinstance(entry, dict):
        return False
    names = [entry.get(f) for f in fields if entry.get(f) is not None]
    return bool(names) and all(_allowed(n, matcher, allow_cloud) for n in names)


MAX_DECODED_LISTING = 16 * 1024 * 1024


def decode_listing(body: bytes, encoding: bytes | None) -> bytes:
    """The listing's bytes without any Content-Encoding: gzip/deflate are decoded up to
    MAX_DECODED_LISTING bytes; anything else (unknown coding, corrupt or oversized data) becomes
    b"" — which filters to an empty listing, never to the unfiltered one."""
    if encoding is None:
        return body
    codings = [c.strip().lower() for c in encoding.split(b",") if c.strip()]
    for coding in reversed(codings):  # applied in order, so undone in reverse
        if coding == b"identity":
            continue
        if coding in (b"gzip", b"x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif coding == b"deflate":
            wbits = zlib.MAX_WBITS
        else:
            return b""
        try:
            inflater = zlib.decompressobj(wbits)
            body = inflater.decompress(body, MAX_DECODED_LISTING)
            if inflater.unconsumed_tail or not inflater.eof:
                return b""  # larger than the bound, or truncated
        except zlib.error:
            return b""
    return body


_CACHE_SIZE = 128
_cache: dict[tuple[str, bytes, ModelMatcher, bool], bytes] = {}


def filter_listing(kind: ListingKind, body: bytes, matcher: ModelMatcher, allow_cloud: bool) -> bytes:
    """The listing with every entry the key may not see removed (re-serialised as compact JSON).

    Results are cached by (upstream answer, key's compiled patterns): the model list rarely changes,
    so repeated listings cost a dictionary lookup.
    """
    cache_key = (kind, body, matcher, allow_cloud)  # the matcher itself (kept alive), not its id
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    result = _filter(kind, body, matcher, allow_cloud)
    if len(_cache) >= _CACHE_SIZE:
        _cache.pop(next(iter(_cache)))
    _cache[cache_key] = result
    return result


def _filter(kind: ListingKind, body: bytes, matcher: ModelMatcher, allow_cloud: bool) -> bytes:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if kind == "v1models":
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            return b'{"object":"list","data":[]}'
        document["data"] = [e for e in document["data"] if _entry_allowed(e, ("id",), matcher, allow_cloud)]
    else:
        if not isinstance(document, dict) or not isinstance(document.get("models"), list):
            return b'{"models":[]}'
        document["models"] = [
            e for e in document["models"] if _entry_allowed(e, ("name", "model"), matcher, allow_cloud)
        ]
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
