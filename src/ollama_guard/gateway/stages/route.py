"""Stage 2, `route`: what is asked.

* CORS: with `cors_origins` set, a preflight (`OPTIONS` + `Access-Control-Request-Method`) is
  answered here for allowed origins, methods and headers; any other request with an `Origin` not in
  the list → 403.
* The request target must be in origin form (`/path`, not `http://host/path`) and carry no
  method-override header → 400.
* The method and the *raw* path must be an exact entry of the allowlist (`gateway/routes.py`) → 403.
"""

from __future__ import annotations

from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import HeaderList, Request, RequestHeaders
from ollama_guard.gateway.routes import Route, find_route

_CORS_ALLOW_HEADERS = frozenset(
    {"authorization", "content-type", "x-api-key", "accept", "user-agent", "openai-organization",
     "openai-project", "anthropic-version"}
)


class RouteStage:
    def __init__(self, config: GatewayConfig) -> None:
        self._cors = frozenset(config.cors_origins)

    async def __call__(self, req: Request) -> tuple[Route, dict[str, str]] | None:
        """The route and its raw path parameters; None when a CORS preflight was answered."""
        headers = req.headers
        assert headers is not None
        method, path = req.method, req.path
        origin = headers.origin
        if origin is not None and self._cors:
            if method == "OPTIONS" and headers.cors_method is not None:
                await self._answer_preflight(req, headers)
                return None
            if origin.decode("latin-1").lower() not in self._cors:
                raise Refusal(403, "origin not allowed", "cors-origin")
            req.cors_headers.extend(
                [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                 (b"access-control-expose-headers", b"x-request-id, retry-after")]
            )

        if req.scope.get("ollama_guard.origin_form") is False:
            raise Refusal(400, "absolute-form request targets are not accepted", "request-target")
        if headers.method_override is not None:
            raise Refusal(400, "method-override headers are not accepted", "method-override")

        found = find_route(method, path)
        if found is None:
            raise Refusal(403, f"{method} {path[:200]} is not allowed by the gateway", "route-not-allowed")
        req.facts.route = found[0].label
        return found

    async def _answer_preflight(self, req: Request, headers: RequestHeaders) -> None:
        facts = req.facts
        facts.route = "OPTIONS (preflight)"
        answer = self._preflight_headers(headers, req.path)
        await req.send({"type": "http.response.start", "status": 204, "headers": answer})
        await req.send({"type": "http.response.body", "body": b"", "more_body": False})
        facts.status, facts.decision, facts.reason = 204, "allow", "cors-preflight"

    def _preflight_headers(self, headers: RequestHeaders, path: str) -> HeaderList:
        assert headers.origin is not None and headers.cors_method is not None
        origin = headers.origin.decode("latin-1").lower()
        wanted_method = headers.cors_method.decode("latin-1").strip()
        if origin not in self._cors:
            raise Refusal(403, "origin not allowed", "cors-origin")
        if find_route(wanted_method, path) is None:
            raise Refusal(403, "method or path not allowed", "route-not-allowed")
        allowed_headers = []
        if headers.cors_headers is not None:
            for item in headers.cors_headers.decode("latin-1").split(","):
                name = item.strip().lower()
                if not name:
                    continue
                if name not in _CORS_ALLOW_HEADERS and not name.startswith("x-stainless-"):
                    raise Refusal(403, f"header {name!r} not allowed", "cors-header")
                allowed_headers.append(name)
        out = [
            (b"access-control-allow-origin", headers.origin),
            (b"access-control-allow-methods", wanted_method.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]
        if allowed_headers:
            out.append((b"access-control-allow-headers", ", ".join(allowed_headers).encode()))
        return out
