"""Caps on the request options that decide how much memory a request holds on the Ollama server:
`options.num_ctx` (context window: KV-cache size) and `keep_alive` (how long the model then stays
loaded; negative = forever). Off unless `max_num_ctx` / `max_keep_alive` are configured; they apply
to keys below the admin role. A request over a cap, or with a value Ollama would read differently
from us, is refused — never rewritten, so Ollama reads exactly the body that was judged.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ollama_guard.gateway.refusal import Refusal

_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration_seconds(text: str) -> float:
    """Go's `time.ParseDuration` in seconds (`5m`, `1h30m`, `-1s`, `0`). Raises ValueError."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def keep_alive_seconds(value: Any) -> float:
    """How long Ollama keeps the model loaded for this `keep_alive` (inf = forever). Raises ValueError
    for a value Ollama would reject."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("keep_alive must be a duration or a number of seconds")
    seconds = go_duration_seconds(value) if isinstance(value, str) else float(value)
    return math.inf if seconds < 0 else seconds


def check_option_caps(body: Any, max_num_ctx: int | None, max_keep_alive: float | None) -> None:
    """Refusal (403 `option-limit`, or 400 for a value that is not a number/duration) when the body
    asks for more than the caps allow. `body` is a judged JSON body (`.get(field)`)."""
    if max_num_ctx is not None:
        options = body.get("options")
        if isinstance(options, dict) and "num_ctx" in options:
            num_ctx = options["num_ctx"]
            if isinstance(num_ctx, bool) or not isinstance(num_ctx, int | float):
                raise Refusal(400, "options.num_ctx must be a number", "malformed-body")
            if num_ctx > max_num_ctx:
                raise Refusal(
                    403, f"options.num_ctx above this gateway's limit of {max_num_ctx}", "option-limit"
                )
    if max_keep_alive is not None:
        value = body.get("keep_alive")
        if value is None:
            return
        try:
            seconds = keep_alive_seconds(value)
        except ValueError as exc:
            raise Refusal(400, f"invalid keep_alive: {exc}", "malformed-body") from None
        if seconds > max_keep_alive:
            raise Refusal(
                403, f"keep_alive above this gateway's limit of {max_keep_alive:g} s", "option-limit"
            )
