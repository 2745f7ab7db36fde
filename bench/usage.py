"""What reading token counts costs the gateway per relayed answer (`gateway/usage.TokenCounter`).

The counter follows the JSON structure of every relayed byte (so that generated content can never pass
for a count). Measured against `json.loads` of the same bytes in the same run (C, the cheapest way to
read the structure whole — which the gateway cannot use: it never holds a whole stream):

* a native NDJSON stream of short lines (one per generated token), fed a line at a time;
* a non-streamed answer with a long `logprobs` array (the counts before it), fed in 64 KiB chunks;
* a /v1 SSE stream with a final usage chunk.

Run: `python bench/usage.py [--lines N] [--logprobs N]`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import token_accounting


def _best(work: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def _feed(route: str, pieces: list[bytes]) -> Callable[[], object]:
    def run() -> int | None:
        counter = TokenCounter(token_accounting(route))
        for piece in pieces:
            counter.feed(piece)
        return counter.usage()

    return run


def _loads(pieces: list[bytes], prefix: bytes = b"") -> Callable[[], object]:
    def run() -> None:
        for piece in pieces:
            for line in piece.split(b"\n"):
                line = line.removeprefix(prefix)
                if line.startswith(b"{"):
                    json.loads(line)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--logprobs", type=int, default=20_000)
    args = parser.parse_args()

    line = {"model": "llama3.2", "created_at": "2026-12-07T06:00:00Z", "message": {"role": "assistant"},
            "done": False}
    lines = [json.dumps({**line, "message": {"role": "assistant", "content": f"w{i}"}}).encode() + b"\n"
             for i in range(args.lines)]
    lines.append(b'{"model":"llama3.2","done":true,"prompt_eval_count":5,"eval_count":%d}\n' % args.lines)
    entry = {"token": "x", "logprob": -0.25, "top_logprobs": [{"token": "y", "logprob": -2.5}] * 5}
    body = json.dumps({"model": "llama3.2", "message": {"role": "assistant", "content": "x"}, "done": True,
                       "prompt_eval_count": 3, "eval_count": 9, "logprobs": [entry] * args.logprobs}).encode()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    events = [b"data: " + json.dumps({"id": "c", "choices": [{"delta": {"content": f"w{i}"}}]}).encode()
              + b"\n\n" for i in range(args.lines)]
    events.append(b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,'
                  b'"total_tokens":14}}\n\ndata: [DONE]\n\n')

    cases = [  # name, route, what the counter is fed, what json.loads reads, SSE prefix, size
        ("native stream", "POST /api/chat", lines, lines, b"", f"{len(lines)} lines"),
        ("logprobs body", "POST /api/chat", chunks, [body], b"", f"{len(body) / 1e6:.1f} MB"),
        ("/v1 SSE stream", "POST /v1/chat/completions", events, events, b"data: ", f"{len(events)} events"),
    ]
    print(f"{'case':<16} {'size':>14} {'counter':>12} {'json.loads':>12} {'ratio':>7}")
    for name, route, pieces, whole, prefix, size in cases:
        assert _feed(route, pieces)() is not None, name
        ours, base = _best(_feed(route, pieces)), _best(_loads(whole, prefix))
        total = sum(len(p) for p in pieces)
        print(f"{name:<16} {size:>14} {total / ours / 1e6:>8.1f} MB/s {total / base / 1e6:>7.1f} MB/s "
              f"{ours / base:>6.2f}x   ({ours / len(pieces) * 1e6:.2f} µs per piece)")


if __name__ == "__main__":
    main()
