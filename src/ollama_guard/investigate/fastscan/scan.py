"""``scan_block``: a block of log bytes → the owner's quiet gin lines counted, every other line for the
parser.

The steps, in order: split into lines; find the gin lines (``layout``); check their exact column layout
and endpoint, a run of lines at a time; drop those older than ``--since``; count the owner's clients on
quiet (endpoint, status) pairs (``owners``); hand every other line that could matter to the parser
(``lines``). numpy is imported on first use; without it every line goes to the parser.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ollama_guard.investigate.fastscan.block import PAD, BlockResult, FastConfig, all_lines, decode

if TYPE_CHECKING:
    import numpy as np

    from ollama_guard.investigate.fastscan.layout import Table
else:
    np = None  # numpy, imported by _load_numpy() when the fast path first runs (start-up time)
_NUMPY_TRIED = False

MAX_OWNER_BINS = 4_000_000
GIN_RUN = 32_768  # gin lines whose columns are checked together (~3 MB of log: fits the CPU cache)


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


_TABLES: dict[tuple[tuple[str, str], ...], Table] = {}
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
    from ollama_guard.investigate.fastscan.layout import (
        GIN_MASK,
        GIN_WORD,
        Table,
        dominant_prefix,
        endpoint_index,
        exact_layout,
        older_than,
    )
    from ollama_guard.investigate.fastscan.lines import collect, marker_lines
    from ollama_guard.investigate.fastscan.owners import owner_clients, per_minute

    table = _TABLES.get(fast.endpoints)
    if table is None:
        table = _TABLES[fast.endpoints] = Table(fast.endpoints)
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
    prefix = dominant_prefix(data, starts, line_end)
    if prefix is not None:
        cand = starts + prefix
        is_gin = (words[cand] & np.uint64(GIN_MASK)) == np.uint64(GIN_WORD)
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
        ok_r, o_r, status[run], hour_of[run], minute_of[run] = exact_layout(a, words, gr)
        close_r = close[run]
        ok_r &= a[close_r] == 34
        ep_r = endpoint_index(table, words, o_r, close_r - (o_r + 80), ok_r)
        ok_r &= ep_r >= 0
        ep[run] = ep_r
        ok[run] = ok_r
        if older is not None:
            # --since: well-formed gin lines that are older are dropped (timestamps compare as text)
            assert fast.since_key is not None
            older[run] = older_than(data, gr, fast.since_key)
            ok_r = ok_r & ~older[run]
        # the owner's clients (loopback, --trusted) on quiet (endpoint, status) pairs are only counted
        run_owners, run_owner_of = owner_clients(fast, data, o_r, ok_r, words[o_r + 52], words[o_r + 59])
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
            per_minute(data, g[fast_idx] + 6, hour_of[fast_idx], minute_of[fast_idx], who, owners, result)

    slow_gin = gline[~ok & keep]
    marked = marker_lines(data, starts, line_end, is_gin, result)
    collect(data, nl, line_end, is_gin, gline, slow_gin, marked, result)
    return result
