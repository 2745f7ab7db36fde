"""Splits a block of log bytes into the lines that need the full parser and the bulk that does not.

Most of a busy server's log is gin lines from the owner (loopback) hitting read and inference
endpoints. No rule can fire on them, but the timeline wants their counts. This package finds them with
vectorised byte arithmetic (numpy) on gin's fixed column layout and only counts them; every other line
that could matter — gin lines from anyone else, from loopback on other endpoints or statuses, lines
that deviate from the exact layout (colours, IPv6, queries), and non-gin lines carrying one of the
markers the parser looks for — is handed to the parser with its line number, in order. Without numpy
(or with ``fast=None``) every line goes to the parser; the result is the same, only slower.

gin layout (no colours), offsets from ``[GIN] ``::

    [GIN] 2024/08/19 - 14:13:01 | 200 |     414.019µs |       127.0.0.1 | POST     "/api/chat"
    0     6                     28    34               50(+1 with µ)     68(+o)    79(+o) = opening quote

The package: ``block`` (what a scan returns: ``BlockResult``, ``SlowLine``; ``FastConfig``), ``scan``
(``scan_block``: the steps in order), ``layout`` (gin's columns as 64-bit words), ``owners`` (the owner's
clients and their requests per minute) and ``lines`` (the lines handed to the parser, crash context).
The numpy modules are imported only when the fast path first runs.
"""

from ollama_guard.investigate.fastscan.block import PAD, BlockResult, FastConfig, SlowLine, all_lines, decode
from ollama_guard.investigate.fastscan.scan import GIN_RUN, MAX_OWNER_BINS, available, scan_block

__all__ = [
    "GIN_RUN",
    "MAX_OWNER_BINS",
    "PAD",
    "BlockResult",
    "FastConfig",
    "SlowLine",
    "all_lines",
    "available",
    "decode",
    "scan_block",
]
