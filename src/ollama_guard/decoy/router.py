"""Route table with gin's matching rules: exact segments, `:param` segments, 405 for a known path with the
wrong method, 404 otherwise, and gin's trailing-slash redirect (301 for GET, 307 for other methods)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ollama_guard.decoy.http import Request, Send

if TYPE_CHECKING:
    from ollama_guard.decoy.state import DecoyState

# gin keeps one route tree per method, in the order methods were first registered; Ollama registers
# HEAD / first, then GET, POST and DELETE. 405 responses list allowed methods in that order.
METHOD_TREE_ORDER = ("HEAD", "GET", "POST", "DELETE")

Handler = Callable[["DecoyState", Request, Send], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Handler
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "segments", tuple(self.pattern.strip("/").split("/")) if self.pattern != "/" else ()
        )

    def match(self, path: str) -> dict[str, str] | None:
        parts = tuple(path.strip("/").split("/")) if path != "/" else ()
        if path != "/" and (not path.startswith("/") or path.endswith("/")):
            return None
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith(":"):
                if not got:
                    return None
                params[want[1:]] = got
            elif want != got:
                return None
        return params


@dataclass(frozen=True)
class Resolution:
    """Outcome of routing: a handler with params, or a status (404/405) or a redirect location."""

    handler: Handler | None = None
    params: dict[str, str] = field(default_factory=dict)
    status: int = 200
    location: str | None = None
    allowed: tuple[str, ...] = ()  # for 405: methods serving the path, in gin's method-tree order


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self._exact: dict[tuple[str, str], Route] = {}

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        for method in methods.split(","):
            route = Route(method.strip().upper(), pattern, handler)
            self.routes.append(route)
            if ":" not in pattern:
                self._exact[(route.method, pattern)] = route

    def _find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        exact = self._exact.get((method, path))
        if exact is not None:
            return exact, {}
        for route in self.routes:
            if route.method == method and ":" in route.pattern:
                params = route.match(path)
                if params is not None:
                    return route, params
        return None

    def resolve(self, method: str, path: str) -> Resolution:
        found = self._find(method, path)
        if found is not None:
            return Resolution(handler=found[0].handler, params=found[1])
        if method != "CONNECT" and path != "/":
            alt = path[:-1] if path.endswith("/") else path + "/"
            if self._find(method, alt) is not None:
                return Resolution(status=301 if method == "GET" else 307, location=alt)
        allowed = {route.method for route in self.routes if route.match(path) is not None}
        if allowed:
            order = [m for m in METHOD_TREE_ORDER if m in allowed] + sorted(allowed - set(METHOD_TREE_ORDER))
            return Resolution(status=405, allowed=tuple(order))
        return Resolution(status=404)
