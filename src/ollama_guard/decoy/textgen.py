"""Deterministic "generation": the same model and prompt always give the same text, split into token-sized
chunks, with token counts and timings that look like a small model on a laptop."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass

_WORDS = (
    "the model considers your question carefully and answers with a short explanation based on what it "
    "learned during training while local inference keeps data on this machine so responses arrive quickly "
    "because small quantized weights fit in memory and every token is sampled from a probability "
    "distribution shaped by temperature top k and top p settings that the request may override"
).split()

DEFAULT_MAX_TOKENS = 48
MIN_TOKENS = 12
# Nanoseconds per token for the simulated timings.
PROMPT_NS_PER_TOKEN = 180_000
EVAL_NS_PER_TOKEN = 14_000_000
LOAD_NS_COLD = 1_250_000_000
LOAD_NS_WARM = 18_000_000


def count_tokens(text: str) -> int:
    """A rough token count (about four characters per token, at least one per word)."""
    if not text:
        return 0
    return max(len(text.split()), math.ceil(len(text) / 4))


@dataclass(frozen=True)
class Completion:
    """Chunks to stream and the numbers Ollama reports with the final chunk."""

    chunks: list[str]
    done_reason: str
    prompt_eval_count: int
    eval_count: int

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def _rng(model: str, prompt: str) -> random.Random:
    seed = hashlib.sha256(f"{model}\x00{prompt}".encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def _sentence_tokens(rng: random.Random, count: int) -> list[str]:
    tokens: list[str] = []
    start_of_sentence = True
    for i in range(count):
        word = rng.choice(_WORDS)
        if start_of_sentence:
            word = word.capitalize()
        start_of_sentence = False
        token = word if i == 0 else " " + word
        if i == count - 1 or (i > 3 and rng.random() < 0.12):
            token += "."
            start_of_sentence = True
        tokens.append(token)
    return tokens


def complete(
    model: str,
    prompt: str,
    *,
    max_tokens: int | None = None,
    json_format: bool = False,
    prompt_overhead: int = 0,
) -> Completion:
    """Deterministic completion of `prompt` by `model`.

    `max_tokens` (num_predict / max_tokens) caps the output; when it cuts the text short the done reason
    is "length", otherwise "stop". `json_format` produces a JSON object as text.
    """
    rng = _rng(model, prompt)
    natural = MIN_TOKENS + rng.randrange(DEFAULT_MAX_TOKENS - MIN_TOKENS)
    limit = natural if max_tokens is None or max_tokens < 0 else min(natural, max_tokens)
    reason = "length" if max_tokens is not None and 0 <= max_tokens < natural else "stop"
    if json_format:
        words = _sentence_tokens(rng, max(limit, 1))
        text = json.dumps({"answer": "".join(words).strip()})
        chunks = [text[i : i + 8] for i in range(0, len(text), 8)] if limit > 0 else []
    else:
        chunks = _sentence_tokens(rng, limit) if limit > 0 else []
    return Completion(
        chunks=chunks,
        done_reason=reason,
        prompt_eval_count=count_tokens(prompt) + prompt_overhead,
        eval_count=len(chunks),
    )


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit-length vector for `text`."""
    rng = _rng(model, "embed\x00" + text)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]
