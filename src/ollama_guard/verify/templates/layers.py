"""The prompt-shaping parts of a model, checked: Ollama `template` layers (Go), GGUF
`tokenizer.chat_template*` (Jinja), `system` and `messages` layers (prose) and `params` (Modelfile
PARAMETERs: `stop` strings judged as prose, `num_ctx` and friends at absurd values). Files are read to
the end: up to `WHOLE_BYTES` at once, beyond that in windows (bounded memory), and an oversized template
is itself high."""

from __future__ import annotations

import json
from pathlib import Path

from ollama_guard.findings import Severity
from ollama_guard.verify.templates.detector import OVERLAP, WINDOW, Kind, check
from ollama_guard.verify.templates.judge import Evidence, Verdict, judge_text

WHOLE_BYTES = 8 * 1024 * 1024
LAYER_KINDS: dict[str, Kind] = {"template": "go", "prompt": "go", "system": "system", "messages": "system"}
# Modelfile parameters with sane ranges (Ollama's api/types.go Options); outside them is sabotage or a DoS
RANGES = {
    "num_ctx": (256, 1_048_576),
    "num_predict": (-2, 1_048_576),
    "num_batch": (1, 65_536),
    "num_keep": (-1, 1_048_576),
    "repeat_last_n": (-1, 1_048_576),
    "temperature": (0.0, 5.0),
    "num_thread": (0, 1024),
    "num_gpu": (-1, 100_000),
}
COMMON_WORDS = frozenset(
    {
        "the",
        "a",
        "an",
        "and",
        "is",
        "to",
        "of",
        "i",
        "you",
        "it",
        "in",
        "that",
        "yes",
        "no",
        ".",
        ",",
        " ",
        "\n",
        "http",
        "https",
        "password",
        "key",
    }
)


def read_layer(path: Path, kind: Kind) -> tuple[str, Verdict]:
    """The layer's text (first window only when huge) and its verdict, reading the whole file."""
    size = path.stat().st_size
    if size <= WHOLE_BYTES:
        text = path.read_bytes().decode("utf-8", errors="replace")
        return text, check(text, kind)
    verdict = Verdict(kind)
    verdict.add(
        Evidence(
            "oversized-template",
            Severity.HIGH,
            1,
            1,
            "",
            "",
            f"{size} bytes; real templates and prompts are a few KB",
        )
    )
    first = ""
    with path.open("rb") as handle:
        carry = b""
        line = 1
        while True:
            chunk = handle.read(WINDOW)
            if not chunk:
                break
            text = (carry + chunk).decode("utf-8", errors="replace")
            first = first or text[:WINDOW]
            judge_text(kind, text, verdict, line=line)
            line += chunk.count(b"\n")
            carry = chunk[-OVERLAP:]
    return first, verdict


def messages_text(raw: str) -> str:
    try:
        items = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(items, list):
        return raw
    return "\n".join(str(m.get("content", "")) for m in items if isinstance(m, dict))


def check_params(raw: str) -> Verdict:
    """Modelfile parameters: prose in `stop` strings, extremes of the numeric options."""
    verdict = Verdict("params")
    try:
        params = json.loads(raw)
    except ValueError:
        verdict.add(Evidence("malformed-params", Severity.MEDIUM, 1, 1, raw[:200], "", "not JSON"))
        return verdict
    if not isinstance(params, dict):
        return verdict
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        if key in RANGES:
            low, high = RANGES[key]
            for item in values:
                if isinstance(item, int | float) and not isinstance(item, bool) and not low <= item <= high:
                    verdict.add(
                        Evidence(
                            "parameter-extreme",
                            Severity.MEDIUM,
                            1,
                            1,
                            f"{key} {item}",
                            "",
                            f"{key} outside {low}…{high}: exhausts memory or breaks output",
                        )
                    )
        for item in values:
            if not isinstance(item, str):
                continue
            if key == "stop" and item.strip().lower() in COMMON_WORDS:
                verdict.add(
                    Evidence(
                        "stop-common-word",
                        Severity.MEDIUM,
                        1,
                        1,
                        f"stop {item!r}",
                        "",
                        "a stop sequence that is an ordinary word cuts every answer short",
                    )
                )
            judge_text("system", item, verdict)
    return verdict


__all__ = ["LAYER_KINDS", "check_params", "messages_text", "read_layer"]
