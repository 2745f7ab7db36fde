"""What a key may do: the route allowlist, role checks, model patterns and the egress policy.

Everything here is pure and precompiled: routes are looked up by the *raw* request path (exact,
case-sensitive, no decoding or normalisation — see `ollama_guard.ollama.endpoints`), model names are
compared by Ollama's canonical form (`host/namespace/model:tag`, lower-cased), and each key's pattern
list is compiled once and cached.

Model patterns (`ApiKey.models`):

* ``*`` allows every model.
* A pattern without ``*``/``?`` is a model name with Ollama's defaults: ``llama3`` means
  ``registry.ollama.ai/library/llama3:latest`` (exactly what Ollama itself would use), so it does not
  allow ``llama3:70b``.
* A glob (``*``, ``?``, ``[...]``) gets the same host/namespace defaults part by part, and a glob
  without a tag covers every tag: ``llama3:*`` = every tag of llama3, ``qwen*`` = every tag of every
  library model starting with qwen, ``library/*`` = the whole default library, ``hf.co/*/*`` =
  everything from hf.co. Wildcards never cross a ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from ollama_guard.ollama.endpoints import ENDPOINTS, Endpoint, match_endpoint_params
from ollama_guard.ollama.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    InvalidModelName,
    ModelName,
    is_valid_digest,
    parse_model_name,
)

RoleName = Literal["read", "inference", "admin"]
BodyKind = Literal["none", "json", "blob"]
ListingKind = Literal["tags", "ps", "v1models"]
EgressKind = Literal["pull", "push", "create"]


class Refusal(Exception):
    """A request the gateway answers itself (never forwarded): HTTP status, client message, audit reason."""

    def __init__(self, status: int, message: str, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Route:
    """One allowed route with everything the request path needs to know about it."""

    endpoint: Endpoint
    role: RoleName
    body: BodyKind
    model_fields: tuple[str, ...]
    listing: ListingKind | None = None
    egress: EgressKind | None = None
    cloud: bool = False  # needs allow_cloud (acts on / spends the server's ollama.com account)
    long_running: bool = False  # watch for client disconnects while waiting for the upstream

    @property
    def label(self) -> str:
        return self.endpoint.key


# Routes the gateway serves, by catalog key. Routes missing here (removed ones, multipart
# /v1/audio/transcriptions whose model the gateway cannot check) are refused.
_ROUTE_OVERRIDES: dict[str, dict[str, Any]] = {
    "GET /": {},
    "HEAD /": {},
    "GET /api/version": {},
    "HEAD /api/version": {},
    "GET /api/status": {},
    "GET /api/tags": {"listing": "tags"},
    "HEAD /api/tags": {},
    "GET /api/ps": {"listing": "ps"},
    "POST /api/show": {"body": "json"},
    "GET /v1/models": {"listing": "v1models"},
    "GET /v1/models/{model}": {},
    "GET /api/experimental/model-recommendations": {},
    "POST /api/generate": {"body": "json", "long_running": True},
    "POST /api/chat": {"body": "json", "long_running": True},
    "POST /api/embed": {"body": "json", "long_running": True},
    "POST /api/embeddings": {"body": "json", "long_running": True},
    "POST /v1/chat/completions": {"body": "json", "long_running": True},
    "POST /v1/completions": {"body": "json", "long_running": True},
    "POST /v1/embeddings": {"body": "json", "long_running": True},
    "POST /v1/responses": {"body": "json", "long_running": True},
    "POST /v1/messages": {"body": "json", "long_running": True},
    "POST /api/pull": {"body": "json", "egress": "pull", "long_running": True},
    "POST /api/push": {"body": "json", "egress": "push", "long_running": True},
    "POST /api/create": {"body": "json", "egress": "create", "long_running": True},
    "POST /api/copy": {"body": "json"},
    "DELETE /api/delete": {"body": "json"},
    "HEAD /api/blobs/{digest}": {},
    "POST /api/blobs/{digest}": {"body": "blob"},
    "POST /api/me": {"cloud": True},
    "POST /api/signout": {"cloud": True},
    "DELETE /api/user/keys/{key}": {"cloud": True},
    "POST /api/experimental/web_search": {"body": "json", "cloud": True, "long_running": True},
    "POST /api/experimental/web_fetch": {"body": "json", "cloud": True, "long_running": True},
}

def _build_routes() -> tuple[dict[tuple[str, str], Route], dict[str, Route]]:
    static: dict[tuple[str, str], Route] = {}
    by_key: dict[str, Route] = {}
    for ep in ENDPOINTS:
        if ep.removed is not None or ep.key not in _ROUTE_OVERRIDES:
            continue
        extra = dict(_ROUTE_OVERRIDES[ep.key])
        body: BodyKind = extra.pop("body", "none")
        route = Route(endpoint=ep, role=ep.role, body=body, model_fields=ep.model_fields, **extra)
        by_key[ep.key] = route
        if "{" not in ep.path:
            static[(ep.method, ep.path)] = route
    return static, by_key


_STATIC_ROUTES, ROUTES_BY_KEY = _build_routes()


def find_route(method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None:
    """The allowed route for an exact method + raw path (no query), with its raw path parameters."""
    route = _STATIC_ROUTES.get((method, raw_path))
    if route is not None:
        return route, {}
    hit = match_endpoint_params(method, raw_path, include_removed=False)
    if hit is None:
        return None
    ep, params = hit
    route = ROUTES_BY_KEY.get(ep.key)
    if route is None:
        return None
    return route, params


# --- roles ------------------------------------------------------------------------------------------
_ROLE_RANK = {"read": 0, "inference": 1, "admin": 2}


def role_allows(key_role: str, needed: str) -> bool:
    return _ROLE_RANK.get(str(key_role), -1) >= _ROLE_RANK[needed]


# --- model names ------------------------------------------------------------------------------------
@lru_cache(maxsize=8192)
def parse_cached(raw: str) -> ModelName:
    """parse_model_name with a cache (raises InvalidModelName)."""
    return parse_model_name(raw)


def model_from_body(value: Any, field: str) -> ModelName | None:
    """The model a body field names; None when absent/empty. Refusal(400) when not a valid name."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refusal(400, f"field {field!r} must be a string", "malformed-body")
    try:
        return parse_cached(value)
    except InvalidModelName as exc:
        raise Refusal(400, f"invalid model name in {field!r}: {exc}", "invalid-model-name") from None


def model_from_path(raw_segment: str) -> ModelName:
    if "%" in raw_segment:
        raise Refusal(400, "percent-encoded model names are not accepted", "invalid-model-name")
    try:
        return parse_cached(raw_segment)
    except InvalidModelName as exc:
        raise Refusal(400, f"invalid model name: {exc}", "invalid-model-name") from None


ModelMatcher = Callable[[str], bool]


def allow_all(_canonical: str) -> bool:
    return True


def _allow_none(_canonical: str) -> bool:
    return False


def _glob_part(part: str) -> str:
    """Regex for one name part: ``*`` → any run, ``?`` → one character, ``[...]``/``[!...]`` → a
    class; nothing ever matches ``/``."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1 : end]
                negate = body.startswith("!")
                if negate:
                    body = body[1:]
                escaped = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
                out.append(f"(?!/)[^{escaped}]" if negate else f"[{escaped}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _pattern_regex(pattern: str) -> str | None:
    """Regex source matching canonical names for one pattern (None if the pattern is unusable)."""
    text = pattern.strip().lower()
    if not text:
        return None
    if not any(c in text for c in "*?["):
        try:
            return re.escape(parse_model_name(text).canonical())
        except InvalidModelName:
            return None
    if text.rfind(":") > text.rfind("/"):
        base, tag = text.rsplit(":", 1)
    else:
        base, tag = text, "*"  # a glob without a tag covers every tag
    parts = base.split("/")
    if len(parts) == 1:
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
    elif len(parts) == 3:
        host, namespace, model = parts
    else:
        return None
    if not all((host, namespace, model, tag)):
        return None
    return f"{_glob_part(host)}/{_glob_part(namespace)}/{_glob_part(model)}:{_glob_part(tag)}"


@lru_cache(maxsize=4096)
def compile_model_patterns(patterns: tuple[str, ...]) -> ModelMatcher:
    """One matcher for a key's pattern list (cached per distinct list). An empty list allows nothing;
    GW-STATE stores "no restriction" as ``("*",)``."""
    if any(p.strip() == "*" for p in patterns):
        return allow_all
    sources = [s for s in (_pattern_regex(p) for p in patterns) if s is not None]
    if not sources:
        return _allow_none
    compiled = re.compile("|".join(f"(?:{s})" for s in sources))

    @lru_cache(maxsize=1024)
    def matches(canonical: str) -> bool:
        return compiled.fullmatch(canonical) is not None

    return matches


def pattern_is_valid(pattern: str) -> bool:
    """Whether a model pattern can ever match (for `keys create` validation)."""
    return pattern.strip() == "*" or _pattern_regex(pattern) is not None


def key_model_matcher(models: Iterable[str] | None) -> ModelMatcher:
    """Matcher for ApiKey.models: None or empty tuple → every model (no restriction stored)."""
    patterns = tuple(models or ())
    if not patterns:
        return allow_all
    return compile_model_patterns(patterns)


# --- egress -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EgressPolicy:
    pull_registries: frozenset[str]
    push_registries: frozenset[str]
    allow_insecure: bool
    allow_cloud: bool

    def check_pull(self, name: ModelName, field: str) -> None:
        if name.registry not in self.pull_registries:
            raise Refusal(
                403, f"pulling from registry {name.registry!r} is not allowed", "registry-not-allowed"
            )
        if name.scheme == "http" and not self.allow_insecure:
            raise Refusal(403, "plain-HTTP registries are not allowed", "insecure-not-allowed")

    def check_push(self, name: ModelName, field: str) -> None:
        if name.registry not in self.push_registries:
            raise Refusal(
                403, f"pushing to registry {name.registry!r} is not allowed", "registry-not-allowed"
            )
        if name.scheme == "http" and not self.allow_insecure:
            raise Refusal(403, "plain-HTTP registries are not allowed", "insecure-not-allowed")

    def check_insecure(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, bool):
            raise Refusal(400, "field 'insecure' must be a boolean", "malformed-body")
        if value and not self.allow_insecure:
            raise Refusal(403, "insecure registry access is not allowed", "insecure-not-allowed")


def check_digest(raw_segment: str) -> str:
    if not is_valid_digest(raw_segment):
        raise Refusal(400, "invalid digest (expected sha256:<64 hex digits>)", "invalid-digest")
    return raw_segment
