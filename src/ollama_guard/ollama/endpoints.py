"""Ollama's HTTP API as data: every route a released Ollama has served, current and removed.

Source: ``server/routes.go`` ``GenerateRoutes()`` at every release tag of github.com/ollama/ollama up to
v0.33.0-rc2 (snapshot fb3076099). ``since`` is the first release tag serving the route and ``removed`` the
first release that no longer does. Ollama's router (gin) does not answer HEAD for a GET route, so the
HEAD variants are listed separately, and only where Ollama registers them. The ``/api/load`` and
``/api/unload`` prototypes never shipped in a release and are not listed.

Classes (``Endpoint.classes``):

* ``read`` — returns information, changes nothing (may leak inventory or paths);
* ``compute`` — loads a model / runs inference (GPU, RAM, time);
* ``admin`` — changes the model store or account state;
* ``outbound`` — makes the server contact a registry or ollama.com;
* ``account`` — concerns the server's ollama.com identity.

``request_body`` is what a request carries (``REQUEST_BODIES``), so a proxy can size its limits per
route: ``control`` — a small JSON object naming a model and a few flags (bytes to kilobytes);
``document`` — JSON that may hold a template, system prompt, license or message list (kilobytes to
a megabyte); ``prompt`` — prompts, message histories and base64 images (up to megabytes);
``multipart`` — a form upload; ``blob`` — raw model data (gigabytes); ``none`` — no body.

``role`` is the least gateway role that may call the route (the product contract's roles ``read`` <
``inference`` < ``admin``); routes that act on the server's ollama.com account or spend its quota are
``admin``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ollama_guard.ollama.versions import OllamaVersion, parse_version

EndpointClass = Literal["read", "compute", "admin", "outbound", "account"]
StreamKind = Literal["ndjson", "sse"]
Role = Literal["read", "inference", "admin"]
RequestBody = Literal["none", "control", "document", "prompt", "multipart", "blob"]

ENDPOINT_CLASSES: frozenset[str] = frozenset({"read", "compute", "admin", "outbound", "account"})
ROLES: tuple[str, ...] = ("read", "inference", "admin")


@dataclass(frozen=True)
class Endpoint:
    """One route: method + path template (``{name}`` matches exactly one non-empty path segment)."""

    method: str
    path: str
    classes: frozenset[str]
    model_fields: tuple[str, ...] = ()
    stream: StreamKind | None = None
    since: str = "0.0.1"
    removed: str | None = None
    note: str = ""
    role: Role = "admin"
    request_body: RequestBody = "none"

    @property
    def key(self) -> str:
        """``"POST /api/pull"``."""
        return f"{self.method} {self.path}"

    @property
    def is_admin(self) -> bool:
        return "admin" in self.classes

    @property
    def is_compute(self) -> bool:
        return "compute" in self.classes

    @property
    def is_outbound(self) -> bool:
        return "outbound" in self.classes

    @property
    def is_read_only(self) -> bool:
        return self.classes == frozenset({"read"})

    @property
    def is_current(self) -> bool:
        return self.removed is None

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.segments if _is_param(s))

    def served_by(self, version: OllamaVersion | str) -> bool:
        """Whether an Ollama of this version serves the route (dev builds ``0.0.0`` count as newest)."""
        v = parse_version(version)
        if v < parse_version(self.since):
            return False
        return self.removed is None or v < parse_version(self.removed)

    def match(self, method: str, raw_path: str) -> dict[str, str] | None:
        """The raw (still percent-encoded) path parameters if this route matches exactly, else None."""
        if method != self.method:
            return None
        parts = raw_path.split("/")
        template = self.segments
        if len(parts) != len(template):
            return None
        params: dict[str, str] = {}
        for want, got in zip(template, parts, strict=True):
            if _is_param(want):
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


def _is_param(segment: str) -> bool:
    return len(segment) > 2 and segment.startswith("{") and segment.endswith("}")


def _ep(
    method: str,
    path: str,
    classes: Iterable[str],
    *,
    role: Role,
    model_fields: tuple[str, ...] = (),
    stream: StreamKind | None = None,
    since: str,
    removed: str | None = None,
    note: str = "",
) -> Endpoint:
    cls = frozenset(classes)
    unknown = cls - ENDPOINT_CLASSES
    if unknown:  # a data error in this module, caught by the tests
        raise ValueError(f"unknown endpoint class {sorted(unknown)} for {method} {path}")
    body = REQUEST_BODIES.get(f"{method} {path}", "none")
    return Endpoint(method, path, cls, model_fields, stream, since, removed, note, role, body)


# What each route's request body carries (routes not listed take none). Ollama reads every JSON body
# whole (gin's ShouldBindJSON) and sets no size limit of its own.
REQUEST_BODIES: dict[str, RequestBody] = {
    "POST /api/show": "control",
    "POST /api/pull": "control",
    "POST /api/push": "control",
    "DELETE /api/delete": "control",
    "POST /api/copy": "control",
    "POST /api/experimental/web_search": "control",
    "POST /api/experimental/web_fetch": "control",
    "POST /api/experimental/aliases": "control",
    "DELETE /api/experimental/aliases": "control",
    "POST /api/create": "document",
    "POST /api/generate": "prompt",
    "POST /api/chat": "prompt",
    "POST /api/embed": "prompt",
    "POST /api/embeddings": "prompt",
    "POST /v1/chat/completions": "prompt",
    "POST /v1/completions": "prompt",
    "POST /v1/embeddings": "prompt",
    "POST /v1/responses": "prompt",
    "POST /v1/messages": "prompt",
    "POST /v1/images/generations": "prompt",
    "POST /v1/images/edits": "prompt",
    "POST /v1/audio/transcriptions": "multipart",
    "POST /api/blobs/{digest}": "blob",
}


_R, _C, _A, _X, _ACC = "read", "compute", "admin", "outbound", "account"

ENDPOINTS: tuple[Endpoint, ...] = (
    # --- General -------------------------------------------------------------------------------------
    _ep("GET", "/", [_R], role="read", since="0.0.1", note='"Ollama is running" (fingerprint)'),
    _ep("HEAD", "/", [_R], role="read", since="0.0.13"),
    _ep("GET", "/api/version", [_R], role="read", since="0.1.14", note='{"version": "…"}'),
    _ep("HEAD", "/api/version", [_R], role="read", since="0.1.14"),
    _ep(
        "GET",
        "/api/status",
        [_R],
        role="read",
        since="0.16.2",
        note='{"cloud": {"disabled": bool, "source": …}} reveals whether cloud passthrough is enabled',
    ),
    # --- Model store ---------------------------------------------------------------------------------
    _ep("GET", "/api/tags", [_R], role="read", since="0.0.6", note="lists every local model (inventory)"),
    _ep("HEAD", "/api/tags", [_R], role="read", since="0.0.20"),
    _ep(
        "POST",
        "/api/show",
        [_R],
        role="read",
        model_fields=("model", "name"),
        since="0.0.18",
        note="modelfile, template, system prompt, license; FROM line leaks the models path. "
        "'name' is deprecated; Ollama uses 'model' when non-empty, else 'name'",
    ),
    _ep(
        "POST",
        "/api/pull",
        [_A, _X],
        role="admin",
        model_fields=("model", "name"),
        stream="ndjson",
        since="0.0.5",
        note="downloads from the registry named in the model (host[:port], optional http:// or https://); "
        "'insecure' allows plain HTTP; Ollama uses 'model' when non-empty, else 'name'",
    ),
    _ep(
        "POST",
        "/api/push",
        [_A, _X],
        role="admin",
        model_fields=("model", "name"),
        stream="ndjson",
        since="0.0.6",
        note="uploads every blob of the model to the registry named in the model name (exfiltration)",
    ),
    _ep(
        "POST",
        "/api/create",
        [_A, _C, _X],
        role="admin",
        model_fields=("model", "name", "from"),
        stream="ndjson",
        since="0.0.6",
        note="writes/overwrites a model; JSON fields since 0.5.5 (before: 'modelfile' text and server-side "
        "'path'); quantize uses compute; 'from' may name a model to pull",
    ),
    _ep(
        "DELETE",
        "/api/delete",
        [_A],
        role="admin",
        model_fields=("model", "name"),
        since="0.0.11",
        note="removes the manifest and unreferenced blobs",
    ),
    _ep(
        "POST",
        "/api/copy",
        [_A],
        role="admin",
        model_fields=("source", "destination"),
        since="0.0.12",
        note="destination may name a foreign registry (staging for push)",
    ),
    _ep(
        "HEAD",
        "/api/blobs/{digest}",
        [_R],
        role="admin",
        since="0.1.10",
        note="blob existence oracle; 400 for a malformed digest since 0.1.34, 404 before",
    ),
    _ep(
        "POST",
        "/api/blobs/{digest}",
        [_A],
        role="admin",
        since="0.1.10",
        note="raw upload into blobs/ (first step of create-based attacks)",
    ),
    # --- Account (ollama.com identity of the server) ---------------------------------------------------
    _ep(
        "POST",
        "/api/me",
        [_R, _X, _ACC],
        role="admin",
        since="0.12.0",
        note="asks ollama.com with the server key; leaks the account e-mail or hostname + public key",
    ),
    _ep(
        "POST",
        "/api/signout",
        [_A, _X, _ACC],
        role="admin",
        since="0.12.1",
        note="disconnects the server key from ollama.com",
    ),
    _ep(
        "DELETE",
        "/api/user/keys/{key}",
        [_A, _X, _ACC],
        role="admin",
        since="0.12.0",
        note="deprecated alias of /api/signout",
    ),
    # --- Experimental --------------------------------------------------------------------------------
    _ep(
        "POST",
        "/api/experimental/web_search",
        [_X, _ACC],
        role="admin",
        since="0.18.0",
        note="proxied to ollama.com, signed with the server key (spends the owner's quota)",
    ),
    _ep(
        "POST",
        "/api/experimental/web_fetch",
        [_X, _ACC],
        role="admin",
        since="0.18.0",
        note="proxied to ollama.com, signed with the server key (spends the owner's quota)",
    ),
    _ep("GET", "/api/experimental/model-recommendations", [_R], role="read", since="0.22.1"),
    _ep(
        "GET",
        "/api/experimental/aliases",
        [_R],
        role="read",
        since="0.15.5",
        removed="0.18.0",
        note="lists model aliases",
    ),
    _ep(
        "POST",
        "/api/experimental/aliases",
        [_A],
        role="admin",
        model_fields=("alias", "target"),
        since="0.15.5",
        removed="0.18.0",
        note="creates an alias that redirects one model name to another",
    ),
    _ep(
        "DELETE",
        "/api/experimental/aliases",
        [_A],
        role="admin",
        model_fields=("alias",),
        since="0.15.5",
        removed="0.18.0",
    ),
    # --- Inference -----------------------------------------------------------------------------------
    _ep("GET", "/api/ps", [_R], role="read", since="0.1.38", note="models loaded now (activity)"),
    _ep(
        "POST",
        "/api/generate",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="ndjson",
        since="0.0.1",
        note="empty prompt loads the model, keep_alive 0 unloads it; ':cloud' models go to ollama.com",
    ),
    _ep(
        "POST",
        "/api/chat",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="ndjson",
        since="0.1.14",
        note="':cloud' models go to ollama.com",
    ),
    _ep("POST", "/api/embed", [_C], role="inference", model_fields=("model",), since="0.2.6"),
    _ep(
        "POST",
        "/api/embeddings",
        [_C],
        role="inference",
        model_fields=("model",),
        since="0.0.14",
        note="deprecated by /api/embed",
    ),
    # --- OpenAI compatible ---------------------------------------------------------------------------
    _ep(
        "POST",
        "/v1/chat/completions",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="sse",
        since="0.1.24",
        note="SSE only with \"stream\": true; ':cloud' models are proxied to ollama.com "
        "(zstd request bodies accepted)",
    ),
    _ep(
        "POST",
        "/v1/completions",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="sse",
        since="0.2.0",
        note='SSE only with "stream": true',
    ),
    _ep("POST", "/v1/embeddings", [_C], role="inference", model_fields=("model",), since="0.2.6"),
    _ep("GET", "/v1/models", [_R], role="read", since="0.2.0", note="OpenAI-shaped model list"),
    _ep(
        "GET",
        "/v1/models/{model}",
        [_R],
        role="read",
        since="0.2.0",
        note="the model name is the path segment (one segment only; ':cloud' names go to ollama.com)",
    ),
    _ep(
        "POST",
        "/v1/responses",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="sse",
        since="0.13.3",
        note="OpenAI Responses API",
    ),
    _ep(
        "POST",
        "/v1/audio/transcriptions",
        [_C],
        role="inference",
        model_fields=("model",),
        since="0.20.0",
        note="multipart/form-data body; 'model' is a form field",
    ),
    _ep(
        "POST",
        "/v1/images/generations",
        [_C],
        role="inference",
        model_fields=("model",),
        since="0.14.3",
        removed="0.32.6",
    ),
    _ep(
        "POST",
        "/v1/images/edits",
        [_C],
        role="inference",
        model_fields=("model",),
        since="0.15.0",
        removed="0.32.6",
        note="multipart/form-data body",
    ),
    # --- Anthropic compatible ------------------------------------------------------------------------
    _ep(
        "POST",
        "/v1/messages",
        [_C],
        role="inference",
        model_fields=("model",),
        stream="sse",
        since="0.14.0",
        note='Anthropic Messages API; SSE with "stream": true',
    ),
)

CURRENT_ENDPOINTS: tuple[Endpoint, ...] = tuple(e for e in ENDPOINTS if e.removed is None)

_BY_METHOD: dict[str, tuple[Endpoint, ...]] = {}
for _e in ENDPOINTS:
    _BY_METHOD[_e.method] = (*_BY_METHOD.get(_e.method, ()), _e)


def _strip_query(raw_path: str) -> str:
    # The query string is not part of the path; nothing else is normalised.
    return raw_path.split("?", 1)[0]


def match_endpoint_params(
    method: str, raw_path: str, *, include_removed: bool = True
) -> tuple[Endpoint, dict[str, str]] | None:
    """The catalog route that `method` + `raw_path` hit, with its raw path parameters.

    Exact and case-sensitive: no decoding, no dot-segment or slash folding, no trailing-slash tolerance
    (``/api/tags/`` and ``/API/tags`` do not match). A query string after ``?`` is ignored. Parameters
    (``{digest}``, ``{model}``, ``{key}``) match one non-empty segment and are returned still
    percent-encoded.
    """
    path = _strip_query(raw_path)
    for endpoint in _BY_METHOD.get(method, ()):
        if not include_removed and endpoint.removed is not None:
            continue
        params = endpoint.match(method, path)
        if params is not None:
            return endpoint, params
    return None


def match_endpoint(method: str, raw_path: str, *, include_removed: bool = True) -> Endpoint | None:
    """The catalog route that `method` + `raw_path` hit exactly, or None (see match_endpoint_params)."""
    hit = match_endpoint_params(method, raw_path, include_removed=include_removed)
    return hit[0] if hit is not None else None


def endpoints_in(version: OllamaVersion | str) -> tuple[Endpoint, ...]:
    """The routes an Ollama of `version` serves (a ``0.0.0`` dev build gets the current set)."""
    v = parse_version(version)
    return tuple(e for e in ENDPOINTS if e.served_by(v))


def endpoint(method: str, path: str) -> Endpoint:
    """The catalog entry for an exact method and path template (KeyError if absent)."""
    for e in ENDPOINTS:
        if e.method == method and e.path == path:
            return e
    raise KeyError(f"{method} {path}")


def endpoints_with(cls: str, *, include_removed: bool = False) -> tuple[Endpoint, ...]:
    """Every route carrying a class (``admin``, ``compute``, …)."""
    if cls not in ENDPOINT_CLASSES:
        raise ValueError(f"unknown endpoint class {cls!r}")
    return tuple(e for e in ENDPOINTS if cls in e.classes and (include_removed or e.removed is None))


def role_allows(role: str, ep: Endpoint) -> bool:
    """Whether a gateway role (read < inference < admin) may call the route."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    return ROLES.index(role) >= ROLES.index(ep.role)
