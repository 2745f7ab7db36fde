"""Request bodies decoded like Ollama (gin's ShouldBindJSON into a Go struct).

Field names match the way Go's encoding/json does (exact, then case-insensitive with Unicode simple
folding; last key wins; null leaves a field alone), via `ollama_guard.ollama.gojson`. A value of the wrong
JSON type gives Go's error text ("json: cannot unmarshal string into Go struct field
GenerateRequest.stream of type bool"), an empty body "missing request body".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ollama_guard.ollama.gojson import BodyError, go_view, parse_body

# Field kinds → (JSON types accepted, Go type name for error messages).
_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "string"),
    "bool": ((bool,), "bool"),
    "int": ((int, float), "int"),
    "float": ((int, float), "float64"),
    "object": ((dict,), "map[string]interface {}"),
    "strings": ((list,), "[]string"),
    "ints": ((list,), "[]int"),
    "messages": ((list,), "[]api.Message"),
    "list": ((list,), "[]interface {}"),
    "any": ((object,), "interface {}"),
    "duration": ((str, int, float), "*api.Duration"),
    "files": ((dict,), "map[string]string"),
}
_NULLABLE_KINDS = frozenset(
    {"bool", "object", "strings", "ints", "messages", "list", "any", "duration", "files"}
)


class BadRequest(Exception):
    """Ends a request with an Ollama-shaped error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def _type_error(struct: Struct, field: str, value: Any, go_type: str) -> BadRequest:
    return BadRequest(
        400,
        f"json: cannot unmarshal {_json_type_name(value)} into Go struct field "
        f"{struct.name}.{field} of type {go_type}",
    )


# Element checks for container kinds: (items of the value to check, element test, Go element type).
_ELEMENTS: dict[str, tuple[Any, Any, str]] = {
    "strings": (lambda v: v, lambda x: isinstance(x, str), "string"),
    "files": (lambda v: v.values(), lambda x: isinstance(x, str), "string"),
    "ints": (lambda v: v, lambda x: isinstance(x, int) and not isinstance(x, bool), "int"),
    "messages": (lambda v: v, lambda x: isinstance(x, dict), "api.Message"),
}


def _check(struct: Struct, field: str, kind: str, value: Any) -> None:
    accepted, go_type = _KINDS[kind]
    is_bool = isinstance(value, bool)
    if not isinstance(value, accepted) or (is_bool and kind in ("int", "float", "duration")):
        raise _type_error(struct, field, value, go_type)
    if kind == "int" and isinstance(value, float) and not value.is_integer():
        raise _type_error(struct, field, value, go_type)
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
    """The struct's fields as Go would decode them (absent fields are missing from the dict)."""
    stripped = raw.strip(b" \t\r\n")
    if not stripped:
        raise BadRequest(400, "missing request body")
    if stripped == b"null":
        return {}
    try:
        pairs = parse_body(raw)
    except BodyError as exc:
        message = str(exc)
        if "must be a JSON object" in message:
            kind = {"[": "array", '"': "string", "t": "bool", "f": "bool"}.get(chr(stripped[0]), "number")
            message = f"json: cannot unmarshal {kind} into Go value of type api.{struct.name}"
        raise BadRequest(400, message) from None
    nullable = [f for f, k in struct.fields.items() if k in _NULLABLE_KINDS]
    view = go_view(pairs, struct.fields.keys(), nullable=nullable)
    result: dict[str, Any] = {}
    for field, value in view.items():
        if value is None:
            continue
        _check(struct, field, struct.fields[field], value)
        result[field] = value
    return result


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
    return sign * total


def keep_alive_seconds(value: Any, default: float) -> float:
    """Ollama's keep_alive: a duration string or a number of seconds; negative = forever (inf)."""
    if value is None:
        return default
    seconds = parse_go_duration(value) if isinstance(value, str) else float(value)
    return float("inf") if seconds < 0 else seconds


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
        "images": "strings",
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
