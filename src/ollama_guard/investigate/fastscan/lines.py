"""The lines handed to the parser: gin lines the fast path cannot count, marker lines, crash traces with
context (numpy)."""

from __future__ import annotations

from sys import intern

import numpy as np

from ollama_guard.investigate.fastscan.block import BlockResult, SlowLine
from ollama_guard.investigate.parse import CONTEXT_REQUESTS, TRACE_LINES, gin_message
from ollama_guard.ollama.logformat import parse_gin_fields
from ollama_guard.ollama.loglines import count_ollama_lines, is_ollama_line_bytes

MARKERS = (b"server config", b"Listening on", b"part(s)", b"panic: ", b"fatal error: ", b"SIG",
           b"Main process exited", b"[running]:", b"OLLAMA_")  # OLLAMA_: a wrapped config line's rest
CRASH_MARKERS = (b"panic: ", b"fatal error: ", b"SIG", b"Main process exited", b"[running]:")
CONTEXT_BACK_LINES = 200  # how far back (in lines) a crash looks for the requests before it


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of an already sorted 1-D array (np.unique would import numpy.ma: start-up time)."""
    if len(values) < 2:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def marker_lines(data: bytes | bytearray, line_start: np.ndarray, line_end: np.ndarray,
                  is_gin: np.ndarray, result: BlockResult) -> list[int]:
    """Indices of the non-gin lines containing one of MARKERS. The non-gin lines are copied into one
    compact buffer first, so the marker searches do not walk over the (much larger) gin traffic.
    Also counts, into ``result``, the non-gin lines that are Ollama output or blank (``collect``
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


def collect(data: bytes | bytearray, nl: np.ndarray, line_end: np.ndarray, is_gin: np.ndarray,
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
