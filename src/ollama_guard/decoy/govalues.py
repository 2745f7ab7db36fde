"""Values Ollama refuses after the JSON itself parsed, with Go's and Ollama's words:

* `images` are `[]api.ImageData` (`[]byte`): encoding/json decodes them with base64.StdEncoding and
  returns its error as is — `illegal base64 data at input byte 4`;
* an `int` field takes only an integer literal that fits int64 — `json: cannot unmarshal number 1.5 into
  Go struct field GenerateRequest.context of type int` (the literal as sent);
* `options` are checked by api.Options.FromMap when the runner is scheduled — `option "temperature" must
  be of type float32` — and Ollama answers 500 (handleScheduleError's default case).
"""

from __future__ import annotations

from typing import Any

_B64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
INT64 = (-(1 << 63), (1 << 63) - 1)


class LiteralFloat(float):
    """A JSON number that had a fraction or exponent, with the literal as sent (for Go's messages)."""

    literal: str

    def __new__(cls, text: str) -> LiteralFloat:
        value = super().__new__(cls, float(text))
        value.literal = text
        return value


def number_literal(value: int | float) -> str:
    return value.literal if isinstance(value, LiteralFloat) else repr(value)


def fits_go_int(value: Any) -> bool:
    """An integer literal within int64 (what strconv.ParseInt(lit, 10, 64) accepts)."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64[0] <= value <= INT64[1]


def go_base64_error(text: str) -> str | None:
    """base64.StdEncoding.Decode's error for `text` (None when it decodes): Go's decodeQuantum, with
    \\r and \\n skipped and '=' padding required."""
    src = text.encode("utf-8", "surrogatepass")
    n = len(src)
    si = 0
    while si < n:
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return None
                return f"illegal base64 data at input byte {si - j}"
            c = src[si]
            si += 1
            if c in _B64:
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:
                return f"illegal base64 data at input byte {si - 1}"
            if j in (0, 1):
                return f"illegal base64 data at input byte {si - 1}"
            if j == 2:
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    return f"illegal base64 data at input byte {n}"
                if src[si] != 0x3D:
                    return f"illegal base64 data at input byte {si - 1}"
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                return f"illegal base64 data at input byte {si}"
            return None
    return None


# api.Options fields by JSON name → FromMap's kind (the union over the emulated versions).
OPTION_KINDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "num_ctx",
            "num_batch",
            "num_gpu",
            "main_gpu",
            "num_thread",
            "num_keep",
            "seed",
            "num_predict",
            "top_k",
            "repeat_last_n",
            "mirostat",
            "num_gqa",
        ),
        "integer",
    ),
    **dict.fromkeys(
        (
            "low_vram",
            "f16_kv",
            "logits_all",
            "vocab_only",
            "use_mmap",
            "use_mlock",
            "numa",
            "penalize_newline",
            "embedding_only",
        ),
        "boolean",
    ),
    **dict.fromkeys(
        (
            "top_p",
            "min_p",
            "tfs_z",
            "typical_p",
            "temperature",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
            "mirostat_tau",
            "mirostat_eta",
            "rope_frequency_base",
            "rope_frequency_scale",
        ),
        "float32",
    ),
    "stop": "array",
}


def options_error(options: dict[str, Any] | None) -> str | None:
    """api.Options.FromMap's error for request options (None when they are accepted; unknown names are
    only logged by Ollama)."""
    for key, value in (options or {}).items():
        kind = OPTION_KINDS.get(key)
        if kind is None or value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind in ("integer", "float32") and not number:
            return f'option "{key}" must be of type {kind}'
        if kind == "boolean" and not isinstance(value, bool):
            return f'option "{key}" must be of type boolean'
        if kind == "array":
            if not isinstance(value, list):
                return f'option "{key}" must be of type array'
            if not all(isinstance(item, str) for item in value):
                return f'option "{key}" must be of an array of strings'
    return None
