"""The gateway's route allowlist: which catalog endpoints it serves, and how each is handled.

Routes are looked up by the *raw* request path (exact, case-sensitive, no decoding or normalisation —
see `ollama_guard.ollama.endpoints`). A route missing here is refused by the `route` stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ollama_guard.ollama.endpoints import ENDPOINTS, Endpoint, match_endpoint_params

RoleName = Literal["read", "inference", "admin"]
BodyKind = Literal["none", "json", "blob"]
ListingKind = Literal["tags", "ps", "v1models"]
EgressKind = Literal["pull", "push", "create"]


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
    def body_class(self) -> str:
        """The catalog's `request_body` (control, document, prompt, blob, none): sizes the body limit."""
        return self.endpoint.request_body

    @property
    def label(self) -> str:
        return self.endpoint.key


# Routes the gateway serves, by catalog key; the body kind comes from the catalog's `request_body`.
# Routes missing here (removed ones, multipart /v1/audio/transcriptions whose model the gateway
# cannot check) are refused.
_ROUTE_OVERRIDES: dict[str, dict[str, Any]] = {
    "GET /": {},
    "HEAD /": {},
    "GET /api/version": {},
    "HEAD /api/version": {},
    "GET /api/status": {},
    "GET /api/tags": {"listing": "tags"},
    "HEAD /api/tags": {"listing": "tags"},  # its Content-Length is the filtered listing's
    "GET /api/ps": {"listing": "ps"},
    "POST /api/show": {},
    "GET /v1/models": {"listing": "v1models"},
    "GET /v1/models/{model}": {},
    "GET /api/experimental/model-recommendations": {},
    "POST /api/generate": {"long_running": True},
    "POST /api/chat": {"long_running": True},
    "POST /api/embed": {"long_running": True},
    "POST /api/embeddings": {"long_running": True},
    "POST /v1/chat/completions": {"long_running": True},
    "POST /v1/completions": {"long_running": True},
    "POST /v1/embeddings": {"long_running": True},
    "POST /v1/responses": {"long_running": True},
    "POST /v1/messages": {"long_running": True},
    "POST /api/pull": {"egress": "pull", "long_running": True},
    "POST /api/push": {"egress": "push", "long_running": True},
    "POST /api/create": {"egress": "create", "long_running": True},
    "POST /api/copy": {},
    "DELETE /api/delete": {},
    "HEAD /api/blobs/{digest}": {},
    "POST /api/blobs/{digest}": {},
    "POST /api/me": {"cloud": True},
    "POST /api/signout": {"cloud": True},
    "DELETE /api/user/keys/{key}": {"cloud": True},
    "POST /api/experimental/web_search": {"cloud": True, "long_running": True},
    "POST /api/experimental/web_fetch": {"cloud": True, "long_running": True},
}

# how the gateway handles each kind of request body of the catalog (None: it cannot judge it)
_BODY_KIND: dict[str, BodyKind | None] = {
    "none": "none", "control": "json", "document": "json", "prompt": "json", "blob": "blob",
    "multipart": None,
}


def _build_routes() -> tuple[dict[tuple[str, str], Route], dict[str, Route]]:
    static: dict[tuple[str, str], Route] = {}
    by_key: dict[str, Route] = {}
    for ep in ENDPOINTS:
        if ep.removed is not None or ep.key not in _ROUTE_OVERRIDES:
            continue
        extra = dict(_ROUTE_OVERRIDES[ep.key])
        body = _BODY_KIND[ep.request_body]
        if body is None:
            raise ValueError(f"the gateway cannot judge the {ep.request_body} body of {ep.key}")
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
