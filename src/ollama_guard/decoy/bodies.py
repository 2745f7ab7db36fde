"""Request bodies decoded like Ollama (gin's ShouldBindJSON into a Go struct).

Field names match the way Go's encoding/json does (exact, then case-insensitive with Unicode simple
folding; last key wins; null leaves a field alone), via `ollama_guard.ollama.gojson`. A value of the wrong
JSON type gives Go's error text ("json: cannot unmarshal string into Go struct field
GenerateRequest.stream of type bool"), an empty body "missing request body".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ollama_guard.decoy.govalues import LiteralFloat, fits_go_int, go_base64_error, number_literal
from ollama_guard.ollama.gojson import go_view
from ollama_guard.ollama.gojson_scan import EOF, GoSyntaxError, scan_first_value

# Field kinds → (JSON types accepted, Go type name for error messages).
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "string"),
    "bool": ((bool,), "bool"),
    "int": ((int, float), "int"),
    "float": ((int, float), "float64"),
    "object": ((dict,), "map[string]interface {}"),
    "strings": ((list,), "[]string"),
    "images": ((list,), "[]api.ImageData"),
    "ints": ((list,), "[]int"),
    "messages": ((list,), "[]api.Message"),
    "list": ((list,), "[]interface {}"),
    "any": ((object,), "interface {}"),
    "duration": ((str, int, float), "*api.Duration"),
    "files": ((dict,), "map[string]string"),
}
_NULLABLE_KINDS = frozenset(
    {"images", "bool", "object", "strings", "ints", "messages", "list", "any", "duration", "files"}
)


MAX_JSON_ELEMENTS = 250_000  # values in one body (an upper bound counted from the raw bytes)
TOO_LARGE_TEXT = "http: request body too large"  # Go's http.MaxBytesError text


class BadRequest(Exception):
    """Ends a request with an Ollama-shaped error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large() -> BadRequest:
    """What Ollama's MaxBytesReader answers (gin binds the body, Ollama returns err.Error() with 400)."""
    return BadRequest(400, TOO_LARGE_TEXT)


def check_elements(raw: bytes) -> None:
    """Refuse bodies with more JSON values than MAX_JSON_ELEMENTS before parsing them (separators and
    openers counted over the raw bytes, which can only overestimate)."""
    if (
        len(raw) > MAX_JSON_ELEMENTS
        and raw.count(b",") + raw.count(b"[") + raw.count(b"{") > MAX_JSON_ELEMENTS
    ):
        raise too_large()


@dataclass(frozen=True)
class Struct:
    """A Go request struct: its name (for error messages) and field name → kind."""

    name: str
    fields: dict[str, str]


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _number_error(struct: Struct, field: str, value: Any, go_type: str) -> BadRequest:
    """A number literal an int field cannot take: Go quotes the literal."""
    return BadRequest(
        400,
        f"json: cannot unmarshal number {number_literal(value)} into Go struct field "
        f"{struct.name}.{field} of type {go_type}",
    )


def _type_error(struct: Struct, field: str, value: Any, go_type: str) -> BadRequest:
    return BadRequest(
        400,
        f"json: cannot unmarshal {_json_type_name(value)} into Go struct field "
        f"{struct.name}.{field} of type {go_type}",
    )


# Element checks for container kinds: (items of the value to check, element test, Go element type).
_ELEMENTS: dict[str, tuple[Any, Any, str]] = {
    "strings": (lambda v: v, lambda x: isinstance(x, str), "string"),
    "images": (lambda v: v, lambda x: isinstance(x, str), "api.ImageData"),
    "files": (lambda v: v.values(), lambda x: isinstance(x, str), "string"),
    "ints": (lambda v: v, lambda x: isinstance(x, int) and not isinstance(x, bool), "int"),
    "messages": (lambda v: v, lambda x: isinstance(x, dict), "api.Message"),
}


def _check(struct: Struct, field: str, kind: str, value: Any) -> None:
    accepted, go_type = _KINDS[kind]
    is_bool = isinstance(value, bool)
    if not isinstance(value, accepted) or (is_bool and kind in ("int", "float", "duration")):
        raise _type_error(struct, field, value, go_type)
    if kind == "int" and not fits_go_int(value):
        raise _number_error(struct, field, value, go_type)
    if kind == "ints":
        for item in value:
            if isinstance(item, int | float) and not isinstance(item, bool) and not fits_go_int(item):
                raise _number_error(struct, field, item, "int")
    images = value if kind == "images" else []
    if kind == "messages":
        images = [
            i for m in value if isinstance(m, dict) and isinstance(m.get("images"), list) for i in m["images"]
        ]
    for item in images:
        if isinstance(item, str) and (problem := go_base64_error(item)) is not None:
            raise BadRequest(400, problem)
    if kind in _ELEMENTS:
        items, test, element_type = _ELEMENTS[kind]
        for item in items(value):
            if not test(item):
                raise _type_error(struct, field, item, element_type)
    if kind == "duration" and isinstance(value, str):
        try:
            parse_go_duration(value)
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None


def decode(raw: bytes, struct: Struct) -> dict[str, Any]:
    """The struct's fields as Go would decode them (absent fields are missing from the dict): Go's
    Decoder reads the first JSON value and ignores what follows; syntax errors carry Go's texts."""
    check_elements(raw)
    try:
        end = scan_first_value(raw)
    except GoSyntaxError as exc:
        if str(exc) == EOF:  # Ollama: errors.Is(err, io.EOF)
            raise BadRequest(400, "missing request body") from None
        raise BadRequest(400, str(exc)) from None
    first = raw[:end].strip(b" \t\r\n")
    if first == b"null":
        return {}
    if first[:1] != b"{":
        kind = {"[": "array", '"': "string", "t": "bool", "f": "bool"}.get(chr(first[0]), "number")
        raise BadRequest(400, f"json: cannot unmarshal {kind} into Go value of type api.{struct.name}")
    pairs = _object_pairs(first)
    nullable = [f for f, k in struct.fields.items() if k in _NULLABLE_KINDS]
    view = go_view(pairs, struct.fields.keys(), nullable=nullable)
    result: dict[str, Any] = {}
    for field, value in view.items():
        if value is None:
            continue
        _check(struct, field, struct.fields[field], value)
        result[field] = value
    return result


def _object_pairs(first: bytes) -> list[tuple[str, Any]]:
    """The (key, value) pairs of a syntactically valid JSON object, decoded as Go decodes strings
    (invalid UTF-8 and lone surrogate escapes become U+FFFD)."""
    text = first.decode("utf-8", errors="replace")
    top: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        top.append(pairs)
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=hook, parse_float=LiteralFloat)
    except RecursionError:  # Go allows 10000 levels; Python's parser stops near 1000
        raise BadRequest(400, "exceeded max depth") from None
    except ValueError as exc:  # numbers Python cannot hold; Go would name the field
        raise BadRequest(400, f"json: {exc}") from None
    pairs = top[-1]
    if "\\u" in text:
        pairs = [(_go_string(k), _go_strings(v)) for k, v in pairs]
    return pairs


def _go_string(s: str) -> str:
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if not s.isascii() else s


def _go_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, list):
        return [_go_strings(v) for v in value]
    if isinstance(value, dict):
        return {_go_string(k): _go_strings(v) for k, v in value.items()}
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration → seconds (`5m`, `1h30m`, `-1s`, `0`)."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    body = s.lstrip("+-")
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _DURATION_PART.match(body, pos)
        if not match:
            if re.match(r"(\d+(?:\.\d*)?|\.\d+)$", body[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if total * 1e9 > _MAX_INT64:  # Go's ParseDuration refuses what does not fit an int64 of nanoseconds
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


_MAX_INT64 = (1 << 63) - 1


def _go_float_to_int(value: float) -> int:
    """Go's int(float64) on amd64: out-of-range values (and NaN) become math.MinInt64."""
    if not math.isfinite(value) or not -(2.0**63) <= value < 2.0**63:
        return -(1 << 63)
    return int(value)


def _wrap_int64(n: int) -> int:
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def keep_alive_seconds(value: Any, default: float) -> float:
    """Ollama's keep_alive: a duration string or a number of seconds; negative = forever (inf)."""
    if value is None:
        return default
    if isinstance(value, str):
        seconds = parse_go_duration(value)
        return float("inf") if seconds < 0 else seconds
    number = float(value)
    if number < 0:
        return float("inf")
    # api.Duration.UnmarshalJSON: time.Duration(int(t) * int(time.Second)), overflow wrapping as Go's
    # int64 does (so 1e300 becomes 0: unload at once, as Ollama does, instead of a crash).
    nanoseconds = _wrap_int64(_go_float_to_int(number) * 1_000_000_000)
    return max(nanoseconds, 0) / 1e9


GENERATE = Struct(
    "GenerateRequest",
    {
        "model": "string",
        "prompt": "string",
        "suffix": "string",
        "system": "string",
        "template": "string",
        "context": "ints",
        "stream": "bool",
        "raw": "bool",
        "format": "any",
        "keep_alive": "duration",
        "images": "images",
        "options": "object",
        "think": "any",
    },
)
CHAT = Struct(
    "ChatRequest",
    {
        "model": "string",
        "messages": "messages",
        "stream": "bool",
        "format": "any",
        "keep_alive": "duration",
        "tools": "list",
        "options": "object",
        "think": "any",
    },
)
EMBED = Struct(
    "EmbedRequest",
    {
        "model": "string",
        "input": "any",
        "keep_alive": "duration",
        "truncate": "bool",
        "options": "object",
        "dimensions": "int",
    },
)
EMBEDDINGS = Struct(
    "EmbeddingRequest",
    {
        "model": "string",
        "prompt": "string",
        "keep_alive": "duration",
        "options": "object",
    },
)
SHOW = Struct(
    "ShowRequest",
    {
        "model": "string",
        "name": "string",
        "system": "string",
        "template": "string",
        "verbose": "bool",
        "options": "object",
    },
)
PULL = Struct(
    "PullRequest",
    {
        "model": "string",
        "name": "string",
        "insecure": "bool",
        "username": "string",
        "password": "string",
        "stream": "bool",
    },
)
PUSH = Struct("PushRequest", dict(PULL.fields))
DELETE = Struct("DeleteRequest", {"model": "string", "name": "string"})
COPY = Struct("CopyRequest", {"source": "string", "destination": "string"})
CREATE = Struct(
    "CreateRequest",
    {
        "model": "string",
        "name": "string",
        "stream": "bool",
        "quantize": "string",
        "quantization": "string",
        "from": "string",
        "files": "files",
        "adapters": "files",
        "template": "string",
        "license": "any",
        "system": "string",
        "parameters": "object",
        "messages": "messages",
        "modelfile": "string",
        "path": "string",
    },
)
