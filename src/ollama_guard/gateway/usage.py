"""Token usage in a relayed answer: the numbers the upstream reported, found anywhere in the answer
(stream or whole body) as it passes, never buffering it; and an estimate from what was relayed when
the answer carries none (`stages/account.py` decides what is charged)."""

from __future__ import annotations

import re

# Usage numbers, wherever they sit in an answer: Ollama's final object (`prompt_eval_count`,
# `eval_count`, written before a `logprobs` array that may be megabytes long), OpenAI's `usage`
# (`prompt_tokens`, `completion_tokens`, `total_tokens`), Anthropic's (`input_tokens`,
# `output_tokens`). Generated text cannot fake one: inside a JSON string its quotes are escaped.
_USAGE = re.compile(
    rb'"(total_tokens|eval_count|prompt_eval_count|output_tokens|input_tokens|completion_tokens|prompt_tokens)"'
    rb"\s*:\s*(\d{1,12})"
)
_OVERLAP = 96  # a usage field split across two chunks is found in the seam


class TokenCounter:
    """Finds the usage numbers anywhere in a relayed answer (stream or whole body), scanning each
    chunk as it passes — nothing is buffered — and counts what was relayed, for answers without them.

    The last value of each field wins (a stream's final object carries the totals). When no usage
    was found — above all when the client hung up before the final chunk — the request is charged
    its reservation, or what was relayed if that is more: one token per NDJSON line (Ollama streams
    one line per generated piece) or per SSE event.
    """

    __slots__ = ("done_seen", "events", "found", "lines", "partial", "relayed", "seam")

    def __init__(self) -> None:
        self.found: dict[bytes, int] = {}
        self.seam = b""
        self.events = 0
        self.lines = 0
        self.partial = False  # the relayed bytes end inside a line
        self.relayed = 0
        self.done_seen = False  # an SSE stream's closing `data: [DONE]`

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        found = self.found
        if self.seam:
            joined = self.seam + chunk[:_OVERLAP]
            for match in _USAGE.finditer(joined):
                if match.end() > len(self.seam):  # not already seen whole in the previous chunk
                    found[match.group(1)] = int(match.group(2))
        if b'_count"' in chunk or b'_tokens"' in chunk:
            for match in _USAGE.finditer(chunk):
                found[match.group(1)] = int(match.group(2))
        self.seam = chunk[-_OVERLAP:] if len(chunk) >= _OVERLAP else (self.seam + chunk)[-_OVERLAP:]
        self.relayed += len(chunk)
        self.lines += chunk.count(b"\n")
        self.partial = not chunk.endswith(b"\n")
        if b"data:" in chunk:
            self.events += chunk.count(b"data:")
        if b"[DONE]" in chunk or b"[DONE]" in self.seam:
            self.done_seen = True

    def usage(self) -> int | None:
        """The token count the upstream reported, if it did."""
        found = self.found
        if b"total_tokens" in found:
            return found[b"total_tokens"]
        if b"eval_count" in found or b"prompt_eval_count" in found:
            return found.get(b"eval_count", 0) + found.get(b"prompt_eval_count", 0)
        if b"output_tokens" in found or b"input_tokens" in found:
            return found.get(b"output_tokens", 0) + found.get(b"input_tokens", 0)
        if b"completion_tokens" in found or b"prompt_tokens" in found:
            return found.get(b"completion_tokens", 0) + found.get(b"prompt_tokens", 0)
        return None

    def relayed_estimate(self, sse: bool) -> int:
        """Tokens that what was relayed must at least have cost (no usage numbers seen)."""
        if not self.relayed:
            return 0
        if sse and self.events:
            if self.done_seen:
                # a complete stream without a usage block (OpenAI streams without
                # stream_options.include_usage): one event per generated piece, a final chunk, [DONE]
                return max(self.events - 2, 1)
            return self.events  # cut short: every relayed event carried a piece
        return max(self.lines + (1 if self.partial else 0), 1)

    def total(self, sse: bool, reserved: int = 0) -> int:
        """What to charge: the reported usage, else the larger of the reservation and the estimate."""
        reported = self.usage()
        if reported is not None:
            return reported
        return max(reserved, self.relayed_estimate(sse))
