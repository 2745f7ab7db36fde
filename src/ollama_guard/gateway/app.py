"""The gateway as a plain ASGI application (no framework, no middleware stack).

Order of decisions for every request (each refusal is answered here and never reaches Ollama):

1. gateway routes `/-/health` (no auth) and `/-/metrics` (admin key);
2. client address (X-Forwarded-For only from `trusted_proxies`) against `allow_cidrs` → 403;
3. CORS preflight, answered by the gateway when `cors_origins` is set;
4. request-target sanity: origin-form only, no method-override headers → 400;
5. exact route allowlist on the raw path → 403;
6. API key (`Authorization: Bearer` or `X-API-Key`) → 401 / 503 when the key store cannot decide;
7. role → 403; cloud/account routes need `allow_cloud` → 403;
8. body: encoding → 415, size → 413, slow → 408, Go-JSON ambiguity → 400;
9. model patterns on every body field naming a model, `/api/create` fields the gateway cannot judge,
   egress policy, optional caps on num_ctx / keep_alive → 400 / 403;
10. rate / concurrency / token limits → 429 (503 when the limit store is down);
11. relay to Ollama (502 down, 504 slow), streaming chunk by chunk, listings filtered.

Every decision goes to the audit writer (never the key, never the body).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from ollama_guard.gateway.audit import QueuedRecord
from ollama_guard.gateway.body import (
    BodyHeaders,
    BodyStream,
    ClientGone,
    JsonBody,
    check_body_headers,
    judge_json,
    read_body,
)
from ollama_guard.gateway.config import GatewayConfig, IPNetwork
from ollama_guard.gateway.limits import Limited, StoreUnavailable
from ollama_guard.gateway.listing import decode_listing, filter_listing
from ollama_guard.gateway.metrics import METRICS_CONTENT_TYPE, GatewayMetrics
from ollama_guard.gateway.options import check_option_caps
from ollama_guard.gateway.policy import (
    EgressPolicy,
    Refusal,
    Route,
    allow_all,
    check_digest,
    find_route,
    key_model_matcher,
    model_from_body,
    model_from_path,
    role_allows,
)
from ollama_guard.gateway.proxy import (
    TokenCounter,
    Upstream,
    UpstreamBusy,
    UpstreamError,
    forward_headers,
    is_streaming,
    response_headers,
)
from ollama_guard.ollama.names import ModelName

log = logging.getLogger("ollama_guard.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_KEY_CHARS = 512
SMALL_RESPONSE = 256 * 1024
_JSON = b"application/json; charset=utf-8"
_OVERRIDE_HEADERS = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_LEGACY_CREATE_FIELDS = ("modelfile", "path")
_BLOB_CREATE_FIELDS = ("files", "adapters")
_CORS_ALLOW_HEADERS = frozenset(
    {"authorization", "content-type", "x-api-key", "accept", "user-agent", "openai-organization",
     "openai-project", "anthropic-version"}
)

# header name → slot in `_RequestHeaders`
_H_AUTH, _H_APIKEY, _H_CLEN, _H_TE, _H_CENC, _H_ORIGIN, _H_XFF, _H_OVERRIDE = range(8)
_H_CTYPE, _H_ACCEPT, _H_UA, _H_ACRM, _H_ACRH = range(8, 13)
_HEADER_SLOTS: dict[bytes, int] = {
    b"authorization": _H_AUTH,
    b"x-api-key": _H_APIKEY,
    b"content-length": _H_CLEN,
    b"transfer-encoding": _H_TE,
    b"content-encoding": _H_CENC,
    b"origin": _H_ORIGIN,
    b"x-forwarded-for": _H_XFF,
    b"content-type": _H_CTYPE,
    b"accept": _H_ACCEPT,
    b"user-agent": _H_UA,
    b"access-control-request-method": _H_ACRM,
    b"access-control-request-headers": _H_ACRH,
    **dict.fromkeys(_OVERRIDE_HEADERS, _H_OVERRIDE),
}
_SINGLE_VALUED = frozenset({_H_AUTH, _H_APIKEY, _H_CLEN, _H_TE, _H_CENC, _H_ORIGIN, _H_CTYPE})


def _parse_headers(raw_headers: list[tuple[bytes, bytes]]) -> list[Any]:
    """One pass over the request headers; a repeated security-relevant header is refused."""
    slots: list[Any] = [None] * 13
    for name, value in raw_headers:
        slot = _HEADER_SLOTS.get(name)
        if slot is None:
            continue
        current = slots[slot]
        if current is None:
            slots[slot] = value
        elif slot in _SINGLE_VALUED:
            raise Refusal(400, f"repeated {name.decode('latin-1')} header", "repeated-header")
        else:
            slots[slot] = current + b"," + value
    return slots


@dataclass(slots=True)
class AuditFacts:
    """What the audit record of one request will say."""

    method: str
    path: str
    client: str
    request_id: str
    route: str = "unmatched"
    key_id: str | None = None
    key_name: str | None = None
    model: str | None = None
    status: int = 0
    decision: str = "deny"
    reason: str = ""
    bytes_in: int = 0
    bytes_out: int = 0
    tokens: int = 0
    client_gone: bool = False
    responded: bool = False  # the last response byte has been handed to the server
    started_response: bool = False  # the status line has been sent
    body_pending: bool = False  # the client announced a body we have not read


class Services:
    """The state layer (GW-STATE): key store, limiter, audit writer. Built at startup."""

    def __init__(self, authenticator: Any, limiter: Any, audit: Any, engine: Any = None) -> None:
        self.authenticator = authenticator
        self.limiter = limiter
        self.audit = audit
        self.engine = engine

    @classmethod
    async def build(cls, config: GatewayConfig) -> Services:
        from ollama_guard.gateway.audit import AuditWriter
        from ollama_guard.gateway.db import create_engine_for
        from ollama_guard.gateway.keys import KeyAuthenticator
        from ollama_guard.gateway.limits import build_limiter
        from ollama_guard.gateway.secrets import load_server_secret

        engine = create_engine_for(config.db)
        secret = load_server_secret(config)
        authenticator = KeyAuthenticator(engine, secret)
        limiter = build_limiter(config, config.workers, engine)
        audit = AuditWriter(engine, secret)
        await authenticator.start()
        await limiter.start()
        await audit.start()
        return cls(authenticator, limiter, audit, engine)

    async def close(self) -> None:
        for part in (self.audit, self.limiter, self.authenticator):
            try:
                await part.close()
            except Exception:  # closing must go on for the other parts
                log.exception("error while closing %s", type(part).__name__)
        if self.engine is not None:
            await self.engine.dispose()


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


@lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _in_networks(text: str, networks: tuple[IPNetwork, ...]) -> bool:
    address = _ip(text)
    return address is not None and any(address in net for net in networks)


class GatewayApp:
    """ASGI 3 application. `services` may be injected (tests); otherwise built at lifespan startup."""

    def __init__(self, config: GatewayConfig, services: Services | None = None) -> None:
        self.config = config
        self.services = services
        self.upstream = Upstream(config)
        self.metrics = GatewayMetrics()
        self.egress = EgressPolicy(
            pull_registries=frozenset(config.pull_registries),
            push_registries=frozenset(config.push_registries),
            allow_insecure=config.allow_insecure,
            allow_cloud=config.allow_cloud,
        )
        self._allow_networks = config.allow_networks
        self._allow_everyone = any(net.prefixlen == 0 for net in self._allow_networks) and {
            net.version for net in self._allow_networks if net.prefixlen == 0
        } == {4, 6}
        self._trusted = config.trusted_proxy_networks
        self._client_allowed: dict[str, bool] = {}  # client address text → allowed (bounded cache)
        self._cors = frozenset(config.cors_origins)
        self._option_caps = config.max_num_ctx is not None or config.max_keep_alive is not None
        self._owns_services = services is None
        # request ids: a random per-process prefix and a counter (unique without a syscall per request)
        self._id_prefix = secrets.token_hex(6) + "-"
        self._id_counter = itertools.count(1)
        self.on_ready: Callable[[], None] | None = None

    # --- lifespan ---------------------------------------------------------------------------------
    async def startup(self) -> None:
        if self.services is None:
            self.services = await Services.build(self.config)
        await self.upstream.start()
        # Long-lived start-up objects need no more cyclic-GC passes; the request path allocates many
        # short-lived objects, so young-generation collections run less often.
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)

    async def shutdown(self) -> None:
        await self.upstream.close()
        if self.services is not None and self._owns_services:
            await self.services.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
                if self.on_ready is not None:
                    self.on_ready()
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # --- ASGI entry -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websockets and anything else: not served (uvicorn answers 403/closes)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        path = raw_path.decode("latin-1")
        peer = scope.get("client")
        peer_host = peer[0] if peer else ""
        facts = AuditFacts(
            method=method[:16], path=path[:1024], client=peer_host,
            request_id=f"{self._id_prefix}{next(self._id_counter):x}",
        )
        cors_headers: list[tuple[bytes, bytes]] = []
        if path == "/-/health" and method in ("GET", "HEAD"):
            await self._send_simple(send, 200, b'{"status":"ok"}', _JSON, facts)
            return
        try:
            if path.startswith("/-/"):
                await self._gateway_route(path, method, scope, send, facts)
            else:
                await self._handle(scope, receive, send, method, path, facts, cors_headers)
        except Refusal as refusal:
            facts.status, facts.reason, facts.decision = refusal.status, refusal.reason, "deny"
            await self._send_refusal(send, refusal, facts, cors_headers)
        except ClientGone:
            facts.client_gone = True
        except asyncio.CancelledError:
            if not facts.client_gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:
            log.exception("request %s failed", facts.request_id)
            facts.status, facts.reason = 500, "internal-error"
            if facts.started_response:
                raise  # the server drops the connection; nothing else can be said
            failure = Refusal(500, "internal gateway error", "internal-error")
            await self._send_refusal(send, failure, facts, [])
        finally:
            self._record(facts, started)

    def _record(self, facts: AuditFacts, started: float) -> None:
        elapsed = time.perf_counter() - started
        if facts.client_gone:
            if facts.reason in ("", "ok"):
                facts.reason = "client-disconnected"
            if not facts.status:
                facts.status = 499
        elif not facts.status:
            facts.status = 500
            facts.reason = facts.reason or "internal-error"
        self.metrics.observe(facts.route, facts.decision, facts.key_name or "", elapsed)
        services = self.services
        if services is None:
            return
        try:
            # a plain tuple: the writer thread builds, normalises and chains the record
            services.audit.submit(
                QueuedRecord(
                    time.time(), facts.key_id, facts.key_name, facts.client, facts.method, facts.path,
                    facts.model, facts.status, facts.decision, facts.reason or "ok", facts.bytes_in,
                    facts.bytes_out, facts.tokens, round(elapsed * 1000, 3), facts.request_id,
                )
            )
        except Exception:
            self.metrics.audit_failures.inc()
            log.exception("could not queue an audit record")

    # --- responses --------------------------------------------------------------------------------
    async def _send_refusal(
        self, send: Send, refusal: Refusal, facts: AuditFacts, extra: list[tuple[bytes, bytes]]
    ) -> None:
        body = _error_body(refusal.message)
        headers = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", facts.request_id.encode()),
            *extra,
        ]
        if refusal.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="ollama-guard"'))
        if refusal.retry_after is not None:
            headers.append((b"retry-after", str(refusal.retry_after).encode()))
        if facts.body_pending or refusal.status in (408, 413) or refusal.reason == "repeated-header":
            headers.append((b"connection", b"close"))  # do not drain a body we refused
        facts.started_response = True
        facts.bytes_out = len(body)
        await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_simple(
        self, send: Send, status: int, body: bytes, ctype: bytes, facts: AuditFacts
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", facts.request_id.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
        facts.status = status
        facts.bytes_out = len(body)

    # --- gateway's own routes ---------------------------------------------------------------------
    async def _gateway_route(
        self, path: str, method: str, scope: Scope, send: Send, facts: AuditFacts
    ) -> None:
        if path == "/-/metrics" and method == "GET" and self.config.metrics:
            facts.route = "GET /-/metrics"
            headers = _parse_headers(scope["headers"])
            self._check_client(scope, headers, facts)
            key = await self._authenticate(headers, facts)
            if not role_allows(key.role, "admin"):
                raise Refusal(403, "metrics need an admin key", "role")
            facts.decision, facts.reason = "allow", "ok"
            await self._send_simple(send, 200, self.metrics.render(), METRICS_CONTENT_TYPE, facts)
            return
        raise Refusal(403, "path not allowed by the gateway", "route-not-allowed")

    # --- checks -----------------------------------------------------------------------------------
    def _check_client(self, scope: Scope, headers: list[Any], facts: AuditFacts) -> None:
        peer = facts.client
        client = peer
        forwarded = headers[_H_XFF]
        if forwarded is not None and self._trusted and _in_networks(peer, self._trusted):
            hops = [h.strip() for h in forwarded.decode("latin-1").split(",") if h.strip()]
            client = hops[0] if hops else peer
            for hop in reversed(hops):
                if not _in_networks(hop, self._trusted):
                    client = hop
                    break
            facts.client = client[:64]
        allowed = self._client_allowed.get(client)
        if allowed is None:
            if self._allow_everyone:
                allowed = _ip(client) is not None
            else:
                allowed = _in_networks(client, self._allow_networks)
            if len(self._client_allowed) >= 4096:
                self._client_allowed.clear()
            self._client_allowed[client] = allowed
        if not allowed:
            raise Refusal(403, "client address not allowed", "client-not-allowed")

    async def _authenticate(self, headers: list[Any], facts: AuditFacts) -> Any:
        presented: str | None = None
        auth = headers[_H_AUTH]
        api_key = headers[_H_APIKEY]
        if auth is not None:
            scheme, _, token = auth.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Refusal(401, "use Authorization: Bearer <key>", "bad-auth-scheme")
            presented = token.strip()
        if api_key is not None:
            value = api_key.decode("latin-1").strip()
            if presented is not None and value != presented:
                raise Refusal(401, "Authorization and X-API-Key disagree", "conflicting-keys")
            presented = value
        if not presented:
            raise Refusal(401, "API key required", "no-key")
        if len(presented) > MAX_KEY_CHARS:
            raise Refusal(401, "invalid API key", "bad-key")
        assert self.services is not None
        try:
            key = await self.services.authenticator.authenticate(presented)
        except StoreUnavailable:
            log.error("key store unavailable; refusing request %s", facts.request_id)
            raise Refusal(503, "key store unavailable", "key-store-unavailable") from None
        except Exception:
            log.exception("key check failed; refusing request %s", facts.request_id)
            raise Refusal(503, "key store unavailable", "key-store-unavailable") from None
        if key is None:
            raise Refusal(401, "invalid API key", "bad-key")
        facts.key_id, facts.key_name = key.id, key.name
        if getattr(key, "revoked", False):
            raise Refusal(401, "invalid API key", "revoked-key")
        expires_at = getattr(key, "expires_at", None)
        if expires_at is not None:
            now = datetime.now(UTC)
            if expires_at.tzinfo is None:
                now = now.replace(tzinfo=None)
            if expires_at <= now:
                raise Refusal(401, "API key expired", "expired-key")
        return key

    def _cors_preflight(self, headers: list[Any], method: str, path: str) -> list[tuple[bytes, bytes]]:
        origin = headers[_H_ORIGIN].decode("latin-1").lower()
        wanted_method = headers[_H_ACRM].decode("latin-1").strip()
        if origin not in self._cors:
            raise Refusal(403, "origin not allowed", "cors-origin")
        if find_route(wanted_method, path) is None:
            raise Refusal(403, "method or path not allowed", "route-not-allowed")
        allowed_headers = []
        if headers[_H_ACRH] is not None:
            for item in headers[_H_ACRH].decode("latin-1").split(","):
                name = item.strip().lower()
                if not name:
                    continue
                if name not in _CORS_ALLOW_HEADERS and not name.startswith("x-stainless-"):
                    raise Refusal(403, f"header {name!r} not allowed", "cors-header")
                allowed_headers.append(name)
        out = [
            (b"access-control-allow-origin", headers[_H_ORIGIN]),
            (b"access-control-allow-methods", wanted_method.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]
        if allowed_headers:
            out.append((b"access-control-allow-headers", ", ".join(allowed_headers).encode()))
        return out

    # --- the main path ----------------------------------------------------------------------------
    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        path: str,
        facts: AuditFacts,
        cors_headers: list[tuple[bytes, bytes]],
    ) -> None:
        headers = _parse_headers(scope["headers"])
        facts.body_pending = headers[_H_TE] is not None or headers[_H_CLEN] not in (None, b"0")
        self._check_client(scope, headers, facts)

        origin = headers[_H_ORIGIN]
        if origin is not None and self._cors:
            if method == "OPTIONS" and headers[_H_ACRM] is not None:
                facts.route = "OPTIONS (preflight)"
                preflight = self._cors_preflight(headers, method, path)
                await send({"type": "http.response.start", "status": 204, "headers": preflight})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                facts.status, facts.decision, facts.reason = 204, "allow", "cors-preflight"
                return
            if origin.decode("latin-1").lower() not in self._cors:
                raise Refusal(403, "origin not allowed", "cors-origin")
            cors_headers.extend(
                [(b"access-control-allow-origin", origin), (b"vary", b"Origin"),
                 (b"access-control-expose-headers", b"x-request-id, retry-after")]
            )

        if scope.get("ollama_guard.origin_form") is False:
            raise Refusal(400, "absolute-form request targets are not accepted", "request-target")
        if headers[_H_OVERRIDE] is not None:
            raise Refusal(400, "method-override headers are not accepted", "method-override")

        found = find_route(method, path)
        if found is None:
            raise Refusal(403, f"{method} {path[:200]} is not allowed by the gateway", "route-not-allowed")
        route, params = found
        facts.route = route.label

        key = await self._authenticate(headers, facts)
        if not role_allows(key.role, route.role):
            raise Refusal(403, f"this key's role ({key.role}) may not call {route.label}", "role")
        if route.cloud and not self.config.allow_cloud:
            raise Refusal(403, "ollama.com account and cloud routes are disabled", "cloud-not-allowed")

        body_info = BodyHeaders(
            content_length=_content_length(headers[_H_CLEN]),
            chunked=headers[_H_TE] is not None,
            encoding=headers[_H_CENC],
        )
        matcher = key_model_matcher(key.models)

        data: Any = None
        upstream_headers = forward_headers(
            headers[_H_CTYPE], headers[_H_ACCEPT], headers[_H_UA], facts.request_id
        )
        if route.body == "json":
            check_body_headers(body_info, self.config.max_body_bytes)
            raw = await read_body(receive, self.config.max_body_bytes, self.config.request_timeout)
            facts.bytes_in = len(raw)
            facts.body_pending = False
            body = judge_json(raw, self.config.max_json_depth)
            self._check_body_policy(route, body, matcher, facts)
            if self._option_caps and route.endpoint.is_compute and not role_allows(key.role, "admin"):
                check_option_caps(body, self.config.max_num_ctx, self.config.max_keep_alive)
            data = raw
        elif route.body == "blob":
            check_body_headers(body_info, self.config.max_blob_bytes)
            check_digest(params.get("digest", ""))
            if body_info.content_length is not None:
                upstream_headers.append((b"Content-Length", str(body_info.content_length).encode()))
            data = BodyStream(receive, self.config.max_blob_bytes, self.config.request_timeout)
        else:
            if body_info.present or body_info.encoding is not None:
                raise Refusal(400, f"{route.label} takes no request body", "unexpected-body")
            if "digest" in params:
                check_digest(params["digest"])
            if "model" in params:
                name = model_from_path(params["model"])
                facts.model = name.canonical()  # recorded before judging: a refusal names the model
                self._check_model(name, matcher)

        await self._forward(route, key, matcher, method, path, upstream_headers, data, receive, send, facts,
                            cors_headers)

    def _check_model(self, name: ModelName, matcher: Callable[[str], bool]) -> None:
        if name.is_cloud and not self.config.allow_cloud:
            raise Refusal(403, f"cloud model {name.display()!r} is not allowed", "cloud-not-allowed")
        if not matcher(name.canonical()):
            raise Refusal(403, f"model {name.display()!r} is not allowed for this key", "model-not-allowed")

    def _check_body_policy(
        self, route: Route, body: JsonBody, matcher: Callable[[str], bool], facts: AuditFacts
    ) -> None:
        names: list[tuple[str, ModelName]] = []
        for field in route.model_fields:
            name = model_from_body(body.get(field), field)
            if name is None:
                continue
            if not names:  # `model` wins over `name` (Ollama's cmp.Or); recorded before judging
                facts.model = name.canonical()
            names.append((field, name))
        for _field, name in names:
            self._check_model(name, matcher)
        egress = route.egress
        if egress == "pull":
            self.egress.check_insecure(body.get("insecure"))
            for field, name in names:
                self.egress.check_pull(name, field)
        elif egress == "push":
            self.egress.check_insecure(body.get("insecure"))
            for field, name in names:
                self.egress.check_push(name, field)
        elif egress == "create":
            self._check_create_sources(body, matcher)
            for field, name in names:
                if field == "from":
                    self.egress.check_pull(name, field)
            if body.get("remote_host") not in (None, "") and not self.config.allow_cloud:
                raise Refusal(403, "remote models are not allowed", "cloud-not-allowed")

    @staticmethod
    def _check_create_sources(body: JsonBody, matcher: Callable[[str], bool]) -> None:
        """`/api/create` fields the gateway cannot judge are refused (fail closed).

        * `modelfile` / `path` (Ollama < 0.5.5): a Modelfile text or a file on the *server's* disk whose
          `FROM` line may name any model or registry — refused for every key.
        * `files` / `adapters` name blobs by digest, and a digest can be any model's weights: refused
          for keys restricted to some models (an unrestricted admin key keeps them).
        """
        for field in _LEGACY_CREATE_FIELDS:
            if body.get(field) not in (None, ""):
                raise Refusal(
                    400,
                    f"the legacy /api/create field {field!r} is not accepted by the gateway; "
                    "use 'from', 'files', 'template', 'system', 'parameters' instead",
                    "legacy-create-field",
                )
        if matcher is allow_all:
            return
        for field in _BLOB_CREATE_FIELDS:
            if body.get(field) not in (None, "", {}, []):
                raise Refusal(
                    403,
                    f"/api/create with {field!r} (blobs by digest) needs a key that may use every model",
                    "create-blobs-not-allowed",
                )

    # --- upstream ---------------------------------------------------------------------------------
    async def _forward(
        self,
        route: Route,
        key: Any,
        matcher: Callable[[str], bool],
        method: str,
        path: str,
        upstream_headers: list[tuple[bytes, bytes]],
        data: Any,
        receive: Receive,
        send: Send,
        facts: AuditFacts,
        cors_headers: list[tuple[bytes, bytes]],
    ) -> None:
        assert self.services is not None
        limiter = self.services.limiter
        slot = limiter.acquire(key)
        try:
            await slot.__aenter__()
        except Limited as exc:
            raise Refusal(429, str(exc.reason), "rate-limited", retry_after=exc.retry_after) from None
        except StoreUnavailable:
            log.error("limit store unavailable; refusing request %s", facts.request_id)
            raise Refusal(503, "limit store unavailable", "limit-store-unavailable") from None
        except Exception:
            log.exception("limit check failed; refusing request %s", facts.request_id)
            raise Refusal(503, "limit store unavailable", "limit-store-unavailable") from None

        watcher: asyncio.Task[None] | None = None
        # generation and embedding routes (not /api/create, whose status lines are no tokens)
        counter = TokenCounter() if route.endpoint.is_compute and route.egress is None else None
        self.metrics.in_flight.inc()
        try:
            if route.long_running and route.body != "blob":
                watcher = asyncio.create_task(_watch_disconnect(receive, asyncio.current_task(), facts))
            await self._exchange(route, matcher, method, path, upstream_headers, data, send, facts,
                                 cors_headers, counter)
        finally:
            self.metrics.in_flight.dec()
            if watcher is not None:
                watcher.cancel()
            try:
                await slot.__aexit__(None, None, None)
            except Exception:
                log.exception("could not release a limiter slot")
            if counter is not None and facts.status == 200:  # an error answer generated nothing
                tokens = counter.total(route.endpoint.stream == "sse")
                facts.tokens = tokens
                if tokens:
                    self.metrics.tokens.labels(facts.key_name or "").inc(tokens)
                    try:
                        await limiter.add_tokens(key, tokens)
                    except Exception:
                        log.exception("could not record token use for request %s", facts.request_id)

    async def _exchange(
        self,
        route: Route,
        matcher: Callable[[str], bool],
        method: str,
        path: str,
        upstream_headers: list[tuple[bytes, bytes]],
        data: Any,
        send: Send,
        facts: AuditFacts,
        cors_headers: list[tuple[bytes, bytes]],
        counter: TokenCounter | None,
    ) -> None:
        try:
            resp = await self.upstream.open(method, path, upstream_headers, data)
        except Refusal:
            raise
        except Exception as exc:
            if isinstance(data, BodyStream) and data.error is not None:
                facts.bytes_in = data.size
                raise data.error from None
            if isinstance(exc, TimeoutError):
                self.metrics.upstream_errors.labels("timeout").inc()
                raise Refusal(504, "upstream did not answer in time", "upstream-timeout") from None
            if isinstance(exc, UpstreamBusy):
                self.metrics.upstream_errors.labels("busy").inc()
                raise Refusal(503, "gateway busy, try again", "upstream-busy", retry_after=1) from None
            if isinstance(exc, UpstreamError):
                self.metrics.upstream_errors.labels("unavailable").inc()
                raise Refusal(502, "upstream unavailable", "upstream-unavailable") from None
            raise
        if isinstance(data, BodyStream):
            facts.bytes_in = data.size
        facts.decision, facts.reason = "allow", "ok"
        try:
            facts.status = resp.status
            extra = [(b"x-request-id", facts.request_id.encode()), *cors_headers]
            if route.listing is not None and resp.status == 200 and method == "GET":
                raw = await resp.read()
                encoding = resp.header(b"content-encoding")
                if encoding is not None or matcher is not allow_all or not self.config.allow_cloud:
                    # a compressed answer (the gateway asked for identity) is decoded, bounded, first:
                    # the filtered listing always goes out plain, without Content-Encoding
                    raw = filter_listing(
                        route.listing, decode_listing(raw, encoding), matcher, self.config.allow_cloud
                    )
                headers = [
                    h for h in response_headers(resp, drop_length=True) if h[0] != b"content-encoding"
                ]
                headers.append((b"content-length", str(len(raw)).encode()))
                await self._relay_whole(send, resp.status, headers + extra, raw, facts, None)
                return
            streaming = is_streaming(resp)
            headers = response_headers(resp, drop_length=False) + extra
            if not streaming and (resp.content_length or 0) <= SMALL_RESPONSE:
                raw = await resp.read()
                await self._relay_whole(send, resp.status, headers, raw, facts, counter)
                return
            facts.started_response = True
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            sent = 0
            try:
                async for chunk in resp.iter_chunks():
                    sent += len(chunk)
                    if counter is not None:
                        counter.feed(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (UpstreamError, TimeoutError):
                self.metrics.upstream_errors.labels("broken").inc()
                facts.reason = "upstream-broken"
                facts.bytes_out = sent
                if resp.content_length is not None:
                    raise  # a Content-Length response cannot be ended cleanly: drop the connection
            facts.bytes_out = sent
            facts.responded = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            resp.close()

    async def _relay_whole(
        self,
        send: Send,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        facts: AuditFacts,
        counter: TokenCounter | None,
    ) -> None:
        if counter is not None:
            counter.feed(body)
        facts.responded = True
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        facts.bytes_out = len(body)


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise Refusal(400, "invalid Content-Length", "bad-content-length")
    return int(text)


async def _watch_disconnect(receive: Receive, task: asyncio.Task[Any] | None, facts: AuditFacts) -> None:
    """Cancel the request's task when the client goes away (the upstream request is then closed,
    which makes Ollama stop generating)."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if task is not None and not task.done() and not facts.responded:
                    facts.client_gone = True
                    task.cancel()
                return
