"""gin's exact column layout, checked as 64-bit little-endian words gathered at fixed offsets (numpy).

Offsets from ``[GIN] `` (``g``) and from ``o`` (``g``, or ``g + 1`` when the latency holds the two-byte
"µ"); see the package's docstring for the layout. Also: the endpoint table, the dominant prefix before
``[GIN] `` and the ``--since`` comparison.
"""

from __future__ import annotations

import numpy as np

from ollama_guard.investigate.fastscan.block import PAD


class Table:
    """The endpoints the fast path knows, grouped by path length, as 64-bit words (method column
    ``"POST    "`` and path + closing quote, zero-padded) for vectorised comparison."""

    def __init__(self, endpoints: tuple[tuple[str, str], ...]) -> None:
        self.by_length: dict[int, list[tuple[int, int, list[int]]]] = {}
        for index, (method, path) in enumerate(endpoints):
            mword = int.from_bytes(method.encode().ljust(7)[:7] + b" ", "little")
            body = path.encode() + b'"'
            if len(body) > 24:
                continue
            words = [int.from_bytes(body[k : k + 8].ljust(8, b"\0"), "little")
                     for k in range(0, len(body), 8)]
            self.by_length.setdefault(len(body) - 1, []).append((index, mword, words))



GIN_WORD = int.from_bytes(b"[GIN] ", "little")
GIN_MASK = (1 << 48) - 1
MAX_PREFIX = PAD - 90


def dominant_prefix(data: bytes | bytearray, starts: np.ndarray, line_end: np.ndarray) -> int | None:
    """The most common offset of "[GIN] " within a line, from a sample of lines spread over the block."""
    step = max(1, len(starts) // 64)
    seen: dict[int, int] = {}
    for s0, e0 in zip(starts[::step].tolist(), line_end[::step].tolist(), strict=True):
        pos = data.find(b"[GIN] ", s0, e0)
        if 0 <= pos - s0 <= MAX_PREFIX:
            seen[pos - s0] = seen.get(pos - s0, 0) + 1
    return max(seen, key=lambda k: seen[k]) if seen else None


def _word_check(spec: dict[int, int]) -> tuple[int, int]:
    """(mask, value) testing the given byte positions (0..7) of a little-endian 64-bit word."""
    mask = value = 0
    for pos, byte in spec.items():
        mask |= 0xFF << (8 * pos)
        value |= byte << (8 * pos)
    return mask, value


_SP, _BAR, _SLASH, _DASH, _COLON, _QUOTE = 32, 124, 47, 45, 58, 34
# words read at g+6, g+14, g+22, g+30 (g = the "[" of "[GIN] ") and at o+66, o+74
_CHECK_G6 = _word_check({4: _SLASH, 7: _SLASH})  # "2024/08/"
_CHECK_G14 = _word_check({2: _SP, 3: _DASH, 4: _SP, 7: _COLON})  # "19 - 14:"
_CHECK_G22 = _word_check({2: _COLON, 5: _SP, 6: _BAR, 7: _SP})  # "13:01 | "
_CHECK_G30 = _word_check({3: _SP, 4: _BAR, 5: _SP})  # "200 |   "
_CHECK_O66 = _word_check({1: _SP, 2: _BAR, 3: _SP})  # "1 | POST"
_CHECK_O74 = _word_check({3: _SP, 4: _SP, 5: _QUOTE})  # "   \"/ap"


def _test(word: np.ndarray, check: tuple[int, int]) -> np.ndarray:
    return (word & np.uint64(check[0])) == np.uint64(check[1])


def exact_layout(
    a: np.ndarray, words: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which gin lines have gin's exact uncoloured layout, the offset base ``o`` of their columns after
    the latency (``g`` or ``g + 1`` when the latency holds the two-byte "µ"), and their status."""
    w6, w14, w22 = words[g + 6], words[g + 14], words[g + 22]
    ok = _test(w6, _CHECK_G6) & _test(w14, _CHECK_G14) & _test(w22, _CHECK_G22)
    w30 = words[g + 30]
    ok &= _test(w30, _CHECK_G30)
    # three ASCII digits: high nibbles 3, and adding 6 to each low nibble must not carry
    ok &= (w30 & np.uint64(0xF0F0F0)) == np.uint64(0x303030)
    ok &= ((w30 + np.uint64(0x060606)) & np.uint64(0xF0F0F0)) == np.uint64(0x303030)
    lo = (w30 & np.uint64(0x0F0F0F)).astype(np.int64)
    status = (lo & 0xF) * 100 + ((lo >> 8) & 0xF) * 10 + (lo >> 16)
    w46 = words[g + 46]  # bytes 46..53: the "|" after the latency is at 50, or 51 after a "µ"
    at50 = ((w46 >> np.uint64(32)) & np.uint64(0xFF)) == np.uint64(_BAR)
    at51 = ((w46 >> np.uint64(40)) & np.uint64(0xFF)) == np.uint64(_BAR)
    ok &= at50 | at51
    o = g + (~at50 & at51)
    ok &= _test(words[o + 66], _CHECK_O66) & _test(words[o + 74], _CHECK_O74)
    # the hour (the low nibbles of "YYYY/MM/DD - HH", exactly, in one word) and the minute, for the
    # chart's counts per minute; computed here while the words are in the CPU cache
    hour = (w6 & np.uint64(0x000F0F000F0F0F0F)) | ((w14 & np.uint64(0x000F0F0000000F0F)) << np.uint64(4))
    minute = (w22 & np.uint64(0xF)).astype(np.int8) * np.int8(10) + (
        (w22 >> np.uint64(8)) & np.uint64(0xF)).astype(np.int8)
    return ok, o, status, hour, minute


def endpoint_index(table: Table, words: np.ndarray, o: np.ndarray, plen: np.ndarray,
                    ok: np.ndarray) -> np.ndarray:
    """Index into ``FastConfig.endpoints`` of each line's (method, path), or -1."""
    ep = np.full(len(o), -1, dtype=np.int64)
    idx = np.flatnonzero(ok & (plen >= 0) & (plen <= 32))
    if not len(idx):
        return ep
    lengths = plen[idx].astype(np.int16)
    order = np.argsort(lengths, kind="stable")  # radix sort for 16-bit keys
    bounds = np.concatenate(([0], np.cumsum(np.bincount(lengths, minlength=34))))
    for length, entries in table.by_length.items():
        sel = idx[order[bounds[length] : bounds[length + 1]]]
        if not len(sel):
            continue
        base = o[sel]
        mword = words[base + 70]
        path_words = []
        for k in range(0, length + 1, 8):
            w = words[base + 80 + k]
            nbytes = min(8, length + 1 - k)
            if nbytes < 8:
                w = w & np.uint64((1 << (8 * nbytes)) - 1)
            path_words.append(w)
        for index, method_word, expected in entries:
            hit = mword == np.uint64(method_word)
            for w, e in zip(path_words, expected, strict=True):
                hit &= w == np.uint64(e)
            ep[sel[hit]] = index
    return ep


def older_than(data: bytes | bytearray, g: np.ndarray, since_key: bytes) -> np.ndarray:
    be = np.ndarray(shape=(len(data) - 7,), dtype=">u8", buffer=data, offset=0, strides=(1,))
    key = since_key + b"\0\0\0"
    s = [int.from_bytes(key[k : k + 8], "big") for k in (0, 8, 16)]
    t0, t1 = be[g + 6], be[g + 14]
    t2 = be[g + 22] & np.uint64(0xFFFFFFFFFF000000)
    return (t0 < s[0]) | ((t0 == s[0]) & ((t1 < s[1]) | ((t1 == s[1]) & (t2 < s[2]))))
