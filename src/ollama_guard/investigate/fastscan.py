"""Splits a block of log bytes into the lines that need the full parser and the bulk that does not.

Most of a busy server's log is gin lines from the owner (loopback) hitting read and inference
endpoints. No rule can fire on them, but the timeline wants their counts. This module finds them with
vectorised byte arithmetic (numpy) on gin's fixed column layout and only counts them; every other line
that could matter — gin lines from anyone else, from loopback on other endpoints or statuses, lines
that deviate from the exact layout (colours, IPv6, queries), and non-gin lines carrying one of the
markers the parser looks for — is handed to the parser with its line number, in order. Without numpy
(or with ``fast=None``) every line goes to the parser; the result is the same, only slower.

gin layout (no colours), offsets from ``[GIN] ``::

    [GIN] 2024/08/19 - 14:13:01 | 200 |     414.019µs |       127.0.0.1 | POST     "/api/chat"
    0     6                     28    34               50(+1 with µ)     68(+o)    79(+o) = opening quote
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from sys import intern
from typing import TYPE_CHECKING

from ollama_guard.investigate.events import LOOPBACK, TRUSTED
from ollama_guard.investigate.parse import gin_message
from ollama_guard.ollama.logformat import GinFields, parse_gin_fields
from ollama_guard.ollama.loglines import count_ollama_lines, is_ollama_line_bytes

if TYPE_CHECKING:
    import numpy as np
else:
    np = None  # numpy, imported by _load_numpy() when the fast path first runs (start-up time)
_NUMPY_TRIED = False

PAD = 160  # zero bytes after the data so fixed-offset gathers never leave the buffer
MARKERS = (b"server config", b"Listening on", b"part(s)", b"panic: ", b"fatal error: ", b"SIG",
           b"Main process exited", b"[running]:", b"OLLAMA_")  # OLLAMA_: a wrapped config line's rest
CRASH_MARKERS = (b"panic: ", b"fatal error: ", b"SIG", b"Main process exited", b"[running]:")
CONTEXT_BACK_LINES = 200  # how far back (in lines) a crash looks for the requests before it
CONTEXT_REQUESTS = 5
TRACE_LINES = 40
MAX_OWNER_BINS = 4_000_000
MAX_MINUTE_RUNS = 1 << 16  # runs of lines in one minute per block before counting by sorting instead
COARSE_SPAN = 20 * 3600  # a block spanning this long (seconds) is counted per quarter hour
COARSE_MINUTES = 15
GIN_RUN = 32_768  # gin lines whose columns are checked together (~3 MB of log: fits the CPU cache)

_K1, _K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


@dataclass
class FastConfig:
    """What the fast path may count instead of parsing: requests from the owner's clients (loopback and
    --trusted) on ``endpoints`` whose (client class, endpoint, status) can match no rule."""

    endpoints: tuple[tuple[str, str], ...]
    client_class: Callable[[str], str]
    is_quiet: Callable[[str, str, str, int], bool]  # (client, method, path, status)
    owner_classes: frozenset[str] = frozenset({LOOPBACK, TRUSTED})
    since_key: bytes | None = None  # "YYYY/MM/DD - HH:MM:SS" in the log's zone; older lines are dropped
    has_trusted: bool = True  # False: only loopback can be an owner (no --trusted networks)
    _quiet_cache: dict[tuple[str, int, int], bool] = field(default_factory=dict)

    def quiet(self, client: str, endpoint_index: int, status: int) -> bool:
        cls = self.client_class(client)
        key = (cls, endpoint_index, status)
        hit = self._quiet_cache.get(key)
        if hit is None:
            method, path = self.endpoints[endpoint_index]
            hit = self.is_quiet(client, method, path, status)
            self._quiet_cache[key] = hit
        return hit


class SlowLine(tuple):  # type: ignore[type-arg]
    """A line for the parser: ``SlowLine((index, text, context, request))``.

    ``index``: 0-based line index within the block; ``context``: for crash lines, the preceding gin
    lines (index, text); ``request``: a well-formed gin line already split in the scanner's process
    (its message and fields). A plain tuple underneath: blocks come back from the worker processes
    pickled, and a tuple subclass without a Python ``__new__`` unpickles at C speed (about a quarter of
    the cost of a dataclass or NamedTuple, per slow line, in the main process).
    """

    __slots__ = ()

    @property
    def index(self) -> int:
        return self[0]  # type: ignore[no-any-return]

    @property
    def text(self) -> str:
        return self[1]  # type: ignore[no-any-return]

    @property
    def context(self) -> list[tuple[int, str]] | None:
        return self[2]  # type: ignore[no-any-return]

    @property
    def request(self) -> tuple[str, GinFields] | None:
        return self[3]  # type: ignore[no-any-return]

    def __reduce__(self) -> tuple[type[SlowLine], tuple[tuple[object, ...]]]:
        return SlowLine, (tuple(self),)


@dataclass
class BlockResult:
    lines: int
    slow: list[SlowLine]
    # client → {(method, path, status): count} and the first/last gin timestamps counted for it
    counts: dict[str, dict[tuple[str, str, int], int]] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    dropped_before_since: int = 0  # well-formed gin lines older than --since (counted, not analysed)
    dropped_span: tuple[str, str] | None = None
    # lines not handed to the parser that are other Ollama output (ollama.loglines) / blank: the parser
    # counts the lines it sees itself, so every line is judged once, the same way on both paths
    other_recognised: int = 0
    other_blank: int = 0
    # client → {"YYYY/MM/DD - HH:MM": requests counted in that minute} (the timeline chart)
    minutes: dict[str, dict[str, int]] = field(default_factory=dict)


def _load_numpy() -> bool:
    """Import numpy on first use (it ships with the gguf dependency; without it the scanner degrades
    gracefully to the parser); True when it is there."""
    global np, _NUMPY_TRIED
    if np is None and not _NUMPY_TRIED:
        _NUMPY_TRIED = True
        # The scanner does no linear algebra: loading OpenBLAS with one thread instead of one per CPU
        # saves ~40-70 ms of numpy's import here. Read once when the library loads, so the variable is
        # restored right after (a value the user set is kept as it is).
        added = "OPENBLAS_NUM_THREADS" not in os.environ
        if added:
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
        try:
            import numpy
        except ImportError:  # pragma: no cover - exercised only where numpy is missing
            return False
        finally:
            if added:
                os.environ.pop("OPENBLAS_NUM_THREADS", None)
        np = numpy
    return np is not None


def available() -> bool:
    return _load_numpy()


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of an already sorted 1-D array (np.unique would import numpy.ma: start-up time)."""
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def decode(raw: bytes | bytearray | memoryview) -> str:
    return bytes(raw).decode("utf-8", "replace")


def all_lines(data: bytes) -> BlockResult:
    """The parser sees every line (slow path)."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return BlockResult(len(lines), [SlowLine((i, t, None, None)) for i, t in enumerate(lines)])


class _Table:
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


_TABLES: dict[tuple[tuple[str, str], ...], _Table] = {}
_SCRATCH: np.ndarray | None = None


def scan_block(
    data: bytes | bytearray, fast: FastConfig | None, padded: bool = False, length: int | None = None
) -> BlockResult:
    """Classify the lines of ``data`` (whole lines; the last may lack its newline).

    ``padded``: the log bytes are ``data[:length]`` (default: all but the last ``PAD`` bytes) and at
    least ``PAD`` zero bytes follow them.
    """
    if padded:
        n = length if length is not None else len(data) - PAD
    if fast is None or not _load_numpy():
        return all_lines(bytes(data[:n]) if padded else bytes(data))
    if not padded:
        data = bytes(data) + bytes(PAD)
        n = len(data) - PAD
    if n <= 0:
        return BlockResult(0, [])
    table = _TABLES.get(fast.endpoints)
    if table is None:
        table = _TABLES[fast.endpoints] = _Table(fast.endpoints)
    a = np.frombuffer(data, dtype=np.uint8)
    words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, offset=0, strides=(1,))
    body = a[:n]
    global _SCRATCH
    if _SCRATCH is None or len(_SCRATCH) < n:
        _SCRATCH = np.empty(max(n, 1 << 20), dtype=bool)  # reused: a fresh 32 MB array costs page faults
    is_nl = _SCRATCH[:n]
    np.equal(body, 10, out=is_nl)
    nl = np.flatnonzero(is_nl)
    ends_open = data[n - 1] != 10
    lines = len(nl) + (1 if ends_open else 0)
    line_end = np.append(nl, n) if ends_open else nl  # end offset (exclusive of "\n") per line
    result = BlockResult(lines, [])

    starts = np.empty(lines, dtype=np.int64)
    starts[0] = 0
    starts[1:] = line_end[:-1] + 1
    # gin lines: "[GIN] " right after the prefix every line of this log has (journald, docker -t, …);
    # lines with another prefix length are found by the marker search below and parsed
    is_gin = np.zeros(lines, dtype=bool)
    prefix = _dominant_prefix(data, starts, line_end)
    if prefix is not None:
        cand = starts + prefix
        is_gin = (words[cand] & np.uint64(_GIN_MASK)) == np.uint64(_GIN_WORD)
        is_gin &= cand + 6 <= line_end
    gline = np.flatnonzero(is_gin)
    g = starts[gline] + (prefix or 0)

    # the columns of each gin line, a run of lines at a time: every check gathers from the buffer, and a
    # run's bytes (~3 MB) stay in the CPU cache across the ~20 gathers instead of coming from memory
    close = line_end[gline] - 1  # the closing quote must end the line ("\r\n" is left to the parser)
    ok = np.empty(len(g), dtype=bool)
    ep = np.empty(len(g), dtype=np.int64)
    status = np.empty(len(g), dtype=np.int64)
    owner_of = np.empty(len(g), dtype=np.int64)
    hour_of = np.empty(len(g), dtype=np.uint64)
    minute_of = np.empty(len(g), dtype=np.int8)
    older = np.zeros(len(g), dtype=bool) if fast.since_key is not None else None
    owners: list[str] = []
    owner_index: dict[str, int] = {}
    for lo in range(0, len(g), GIN_RUN):
        run = slice(lo, lo + GIN_RUN)
        gr = g[run]
        ok_r, o_r, status[run], hour_of[run], minute_of[run] = _exact_layout(a, words, gr)
        close_r = close[run]
        ok_r &= a[close_r] == 34
        ep_r = _endpoint_index(table, words, o_r, close_r - (o_r + 80), ok_r)
        ok_r &= ep_r >= 0
        ep[run] = ep_r
        ok[run] = ok_r
        if older is not None:
            # --since: well-formed gin lines that are older are dropped (timestamps compare as text)
            assert fast.since_key is not None
            older[run] = _older_than(data, gr, fast.since_key)
            ok_r = ok_r & ~older[run]
        # the owner's clients (loopback, --trusted) on quiet (endpoint, status) pairs are only counted
        run_owners, run_owner_of = _owner_clients(fast, data, o_r, ok_r, words[o_r + 52], words[o_r + 59])
        if run_owners:
            to_global = np.array([owner_index.setdefault(c, len(owner_index)) for c in run_owners] + [-1],
                                 dtype=np.int64)
            run_owner_of = to_global[run_owner_of]  # -1 indexes the trailing -1
            owners = list(owner_index)
        owner_of[run] = run_owner_of

    keep = np.ones(len(g), dtype=bool)
    if older is not None:
        dropped = np.flatnonzero(ok & older)
        keep = ~(ok & older)
        result.dropped_before_since = len(dropped)
        if len(dropped):
            result.dropped_span = (decode(data[g[dropped[0]] + 6 : g[dropped[0]] + 27]),
                                   decode(data[g[dropped[-1]] + 6 : g[dropped[-1]] + 27]))
        ok &= ~older
    ok &= owner_of >= 0
    fast_idx = np.flatnonzero(ok)
    if len(fast_idx):
        n_ep = len(fast.endpoints)
        code = (owner_of[fast_idx] * n_ep + ep[fast_idx]) * 1000 + status[fast_idx]
        if len(owners) * n_ep * 1000 <= MAX_OWNER_BINS:
            tally = np.bincount(code)
            codes = np.flatnonzero(tally)
            counts = tally[codes]
        else:
            codes, counts = np.unique(code, return_counts=True)
        loud = []
        for c, cnt in zip(codes.tolist(), counts.tolist(), strict=True):
            st = c % 1000
            owner, epi = divmod(c // 1000, n_ep)
            client = owners[owner]
            if fast.quiet(client, epi, st):
                method, path = fast.endpoints[epi]
                bucket = result.counts.setdefault(client, {})
                bucket[(method, path, st)] = bucket.get((method, path, st), 0) + cnt
            else:
                loud.append(c)
        if loud:
            loud_lines = np.isin(code, np.array(loud, dtype=np.int64))
            ok[fast_idx[loud_lines]] = False
            fast_idx = fast_idx[~loud_lines]
        if len(fast_idx):
            # each owner's first and last counted line: group the lines by owner, keeping their order
            who = owner_of[fast_idx]
            order = np.argsort(who.astype(np.int16) if len(owners) < 1 << 15 else who, kind="stable")
            bounds = np.concatenate(([0], np.cumsum(np.bincount(who, minlength=len(owners))))).tolist()
            for k, client in enumerate(owners):
                if bounds[k + 1] > bounds[k]:
                    f = int(g[fast_idx[order[bounds[k]]]])
                    last = int(g[fast_idx[order[bounds[k + 1] - 1]]])
                    result.first[client] = decode(data[f + 6 : f + 27])
                    result.last[client] = decode(data[last + 6 : last + 27])
            _per_minute(data, g[fast_idx] + 6, hour_of[fast_idx], minute_of[fast_idx], who, owners, result)

    slow_gin = gline[~ok & keep]
    marked = _marker_lines(data, starts, line_end, is_gin, result)
    _collect(data, nl, line_end, is_gin, gline, slow_gin, marked, result)
    return result


def _per_minute(data: bytes | bytearray, stamp: np.ndarray, hour: np.ndarray, minute: np.ndarray,
                who: np.ndarray, owners: list[str], result: BlockResult) -> None:
    """Requests per (owner, minute) of the counted lines (``stamp``: offsets of their "YYYY/MM/DD -
    HH:MM" stamps; ``hour``, ``minute``: from ``_exact_layout``) — per quarter hour when the block spans
    COARSE_SPAN or more (the chart of such a log has bins of 15 minutes or wider, all multiples of 15).
    A log is in time order, so the slot changes between runs of lines: each line gets its run's number,
    and (run, owner) pairs are counted at once; an input whose times jump back and forth line after line
    is counted by sorting instead, without a Python loop per line."""
    step = COARSE_MINUTES if _span_seconds(data, int(stamp[0]), int(stamp[-1])) >= COARSE_SPAN else 1
    slot = minute // np.int8(step) if step > 1 else minute
    change = np.empty(len(stamp), dtype=bool)
    change[0] = True
    np.not_equal(hour[1:], hour[:-1], out=change[1:])
    change[1:] |= slot[1:] != slot[:-1]
    run_first = np.flatnonzero(change)
    n_owners = len(owners)
    if len(run_first) <= MAX_MINUTE_RUNS:
        code = (np.cumsum(change) - 1) * n_owners + who
        tally = np.bincount(code)
        codes = np.flatnonzero(tally)
        counts = tally[codes]
        firsts = run_first[codes // n_owners]
    else:  # times out of order: one key per (slot, owner), a representative line for each
        key = ((hour << np.uint64(6)) | slot.astype(np.uint64)) * np.uint64(n_owners) + who.astype(np.uint64)
        _, firsts, counts = np.unique(key, return_index=True, return_counts=True)
        codes = who[firsts]
    out = result.minutes
    hours: dict[int, str] = {}
    for c, first, n in zip(codes.tolist(), firsts.tolist(), counts.tolist(), strict=True):
        at = int(stamp[first])
        text = hours.get(at)
        if text is None:
            text = hours[at] = decode(data[at : at + 16])  # "YYYY/MM/DD - HH:"
        key = f"{text}{int(slot[first]) * step:02d}"
        bucket = out.setdefault(owners[c % n_owners], {})
        bucket[key] = bucket.get(key, 0) + n


def _span_seconds(data: bytes | bytearray, first: int, last: int) -> float:
    from datetime import datetime

    try:
        a = datetime.strptime(decode(data[first : first + 21]), "%Y/%m/%d - %H:%M:%S")
        b = datetime.strptime(decode(data[last : last + 21]), "%Y/%m/%d - %H:%M:%S")
    except ValueError:
        return 0.0
    return abs((b - a).total_seconds())


_GIN_WORD = int.from_bytes(b"[GIN] ", "little")
_GIN_MASK = (1 << 48) - 1
MAX_PREFIX = PAD - 90


def _dominant_prefix(data: bytes | bytearray, starts: np.ndarray, line_end: np.ndarray) -> int | None:
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


def _exact_layout(
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


def _endpoint_index(table: _Table, words: np.ndarray, o: np.ndarray, plen: np.ndarray,
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


def _older_than(data: bytes | bytearray, g: np.ndarray, since_key: bytes) -> np.ndarray:
    be = np.ndarray(shape=(len(data) - 7,), dtype=">u8", buffer=data, offset=0, strides=(1,))
    key = since_key + b"\0\0\0"
    s = [int.from_bytes(key[k : k + 8], "big") for k in (0, 8, 16)]
    t0, t1 = be[g + 6], be[g + 14]
    t2 = be[g + 22] & np.uint64(0xFFFFFFFFFF000000)
    return (t0 < s[0]) | ((t0 == s[0]) & ((t1 < s[1]) | ((t1 == s[1]) & (t2 < s[2]))))


def _owner_clients(fast: FastConfig, data: bytes | bytearray, o: np.ndarray, ok: np.ndarray,
                   w0_all: np.ndarray, w1_all: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct owner clients among the ``ok`` lines, and per line the index of its client in that
    list (-1: not an owner, or not ``ok``). Clients are told apart by their 15-byte address column."""
    owner_of = np.full(len(o), -1, dtype=np.int64)
    owners: list[str] = []
    # loopback first: almost all lines of a busy owner, compared directly (w0_all, w1_all: the words at
    # o + 52 and o + 59, i.e. bytes 0..7 and 7..14 of the 15-byte column)
    for column in (b"      127.0.0.1", b"            ::1"):
        client = column.decode().strip()
        if fast.client_class(client) not in fast.owner_classes:
            continue
        same = ok & (w0_all == np.uint64(int.from_bytes(column[:8], "little")))
        same &= w1_all == np.uint64(int.from_bytes(column[7:15], "little"))
        if same.any():
            owner_of[same] = len(owners)
            owners.append(client)
    idx = np.flatnonzero(ok & (owner_of < 0))
    if not len(idx) or not fast.has_trusted:
        return owners, owner_of
    w0 = w0_all[idx]
    w1 = w1_all[idx]  # bytes 7..14 of the column (overlapping the first word by one byte)
    with np.errstate(over="ignore"):
        h = w0 * np.uint64(_K1) ^ w1 * np.uint64(_K2)
    order = np.argsort(h, kind="stable")
    hs = h[order]
    new = np.ones(len(hs), dtype=bool)
    new[1:] = hs[1:] != hs[:-1]
    keys = hs[new]
    first_line = idx[order[new]]
    key_of = np.searchsorted(keys, h)
    owner_code = np.full(len(keys), -1, dtype=np.int64)
    for k, line in enumerate(first_line.tolist()):
        base = int(o[line])
        column = bytes(data[base + 52 : base + 67])
        client = column.decode("ascii", "replace").strip()
        if column[:1] in (b" ", b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9") and (
            fast.client_class(client) in fast.owner_classes
        ):
            owner_code[k] = len(owners)
            owners.append(client)
    owner_of[idx] = owner_code[key_of]
    # two different columns with the same hash would be counted as one client: verify
    if (owner_code >= 0).any():
        for k in np.flatnonzero(owner_code >= 0).tolist():
            members = idx[key_of == k]
            ref = first_line[k]
            same = (w0_all[members] == w0_all[ref]) & (w1_all[members] == w1_all[ref])
            owner_of[members[~same]] = -1
    return owners, owner_of


def _marker_lines(data: bytes | bytearray, line_start: np.ndarray, line_end: np.ndarray,
                  is_gin: np.ndarray, result: BlockResult) -> list[int]:
    """Indices of the non-gin lines containing one of MARKERS. The non-gin lines are copied into one
    compact buffer first, so the marker searches do not walk over the (much larger) gin traffic.
    Also counts, into ``result``, the non-gin lines that are Ollama output or blank (``_collect``
    takes back those it hands to the parser)."""
    other = np.flatnonzero(~is_gin)
    if not len(other):
        return []
    first = line_start[other]
    length = line_end[other] - first
    a = np.frombuffer(data, dtype=np.uint8)
    result.other_blank = int(np.count_nonzero((length == 0) | ((length == 1) & (a[first] == 13))))
    breaks = np.flatnonzero(np.diff(other) != 1)
    run_first = np.concatenate(([other[0]], other[breaks + 1]))
    run_last = np.concatenate((other[breaks], [other[-1]]))
    starts = np.where(run_first > 0, line_end[np.maximum(run_first - 1, 0)] + 1, 0)
    ends = line_end[run_last] + 1  # include the newline (or one pad byte after an open last line)
    spans = list(zip(starts.tolist(), ends.tolist(), strict=True))
    compact = b"".join([data[s:e] for s, e in spans])
    result.other_recognised = count_ollama_lines(compact)
    hits: list[int] = []
    for marker in (*MARKERS, b"[GIN] "):
        pos = compact.find(marker)
        while pos >= 0:
            hits.append(pos)
            pos = compact.find(marker, pos + 1)
    if not hits:
        return []
    offsets = np.cumsum([0] + [e - s for s, e in spans])
    hit_arr = np.array(sorted(set(hits)), dtype=np.int64)
    run = np.searchsorted(offsets, hit_arr, side="right") - 1
    original = starts[run] + (hit_arr - offsets[run])
    lines = _sorted_unique(np.searchsorted(line_end, original))  # hits and line ends are both sorted
    return [int(li) for li in lines.tolist() if not is_gin[li]]


def _collect(data: bytes | bytearray, nl: np.ndarray, line_end: np.ndarray, is_gin: np.ndarray,
             gline: np.ndarray, slow_gin: np.ndarray, marked: list[int], result: BlockResult) -> None:
    """Copy out the slow lines in order: gin lines left to the parser, marker lines, and the Go trace
    after each crash line (until the next gin line), with the gin lines just before a crash as context."""
    total = len(line_end)
    extra: set[int] = set()
    crash_lines: set[int] = set()
    for li in marked:
        s0 = int(line_end[li - 1]) + 1 if li else 0
        seg = data[s0 : int(line_end[li])]
        if any(m in seg for m in CRASH_MARKERS):
            crash_lines.add(li)
            for nxt in range(li + 1, min(li + 1 + TRACE_LINES, total)):
                if is_gin[nxt]:
                    break
                extra.add(nxt)
    chosen = _sorted_unique(np.sort(np.concatenate((slow_gin, np.array(sorted(set(marked) | extra),
                                                                       dtype=np.int64)), axis=None)))
    if not len(chosen):
        return
    begins = np.where(chosen > 0, line_end[np.maximum(chosen - 1, 0)] + 1, 0).tolist()
    finishes = line_end[chosen].tolist()
    for li, s0, e0 in zip(chosen.tolist(), begins, finishes, strict=True):
        raw = data[s0:e0]
        text = raw.decode("utf-8", "replace")
        if not is_gin[li]:  # the parser judges this line itself: take it back from the bulk counts
            if raw in (b"", b"\r"):
                result.other_blank -= 1
            elif is_ollama_line_bytes(raw):
                result.other_recognised -= 1
        if li not in crash_lines:
            request = None
            msg = gin_message(text)
            if msg is not None:
                fields = parse_gin_fields(msg)
                if fields is not None:
                    stamp, status, latency, client, method, path, query = fields
                    # shared strings: pickled once per block, and cheaper dictionary keys afterwards
                    request = (msg, (stamp, status, latency, intern(client), intern(method),
                                     intern(path), intern(query)))
            result.slow.append(SlowLine((li, text, None, request)))
        else:
            ctx: list[tuple[int, str]] = []
            for k in range(li - 1, max(-1, li - 1 - CONTEXT_BACK_LINES), -1):
                ks = int(line_end[k - 1]) + 1 if k else 0
                segment = data[ks : int(line_end[k])]
                if b"[GIN] " in segment:
                    ctx.append((k, segment.decode("utf-8", "replace")))
                    if len(ctx) == CONTEXT_REQUESTS:
                        break
            result.slow.append(SlowLine((li, text, ctx[::-1], None)))
