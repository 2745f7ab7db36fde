"""The owner's clients (loopback, ``--trusted``) among the counted gin lines, and their requests per minute
(numpy)."""

from __future__ import annotations

import numpy as np

from ollama_guard.investigate.fastscan.block import BlockResult, FastConfig, decode

MAX_MINUTE_RUNS = 1 << 16  # runs of lines in one minute per block before counting by sorting instead
COARSE_SPAN = 20 * 3600  # a block spanning this long (seconds) is counted per quarter hour
COARSE_MINUTES = 15
_K1, _K2 = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F


def owner_clients(fast: FastConfig, data: bytes | bytearray, o: np.ndarray, ok: np.ndarray,
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


def per_minute(data: bytes | bytearray, stamp: np.ndarray, hour: np.ndarray, minute: np.ndarray,
                who: np.ndarray, owners: list[str], result: BlockResult) -> None:
    """Requests per (owner, minute) of the counted lines (``stamp``: offsets of their "YYYY/MM/DD -
    HH:MM" stamps; ``hour``, ``minute``: from ``layout.exact_layout``) — per quarter hour when the block spans
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
