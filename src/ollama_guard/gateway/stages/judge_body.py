"""Stage 5, `judge_body`: read and judge the request body the route takes.

* `json` routes: the whole body is read (the route's size cap → 413, deadline → 408, any
  Content-Encoding → 415, no room in the in-flight body budget → 503: small bodies have a lane of their
  own and each key and client address holds at most a share, `gateway/bodybudget.py`) and parsed
  with Go's semantics (at most `max_json_elements` values and `max_json_depth` levels; large bodies in worker
  processes, `gateway/judges.py`); a key Ollama could read differently from us → 400
  (`gateway/body.py`). The cap comes from what the endpoint catalog says the route's body carries
  (`GatewayConfig.body_limit`).
* `blob` routes: the body is relayed as it streams in, counted against the blob cap.
* other routes take no body → 400.

Framing the way Go reads it: a Transfer-Encoding other than one `chunked` → 501, Transfer-Encoding on
an HTTP/1.0 request → 400 (`chunked`).
"""

from __future__ import annotations

from ollama_guard.gateway.body import (
    BodyHeaders,
    BodyStream,
    JsonBody,
    check_body_headers,
    read_body,
)
from ollama_guard.gateway.bodybudget import BodyBudget, BodyLease, holders_of
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.judges import Judges
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import Request
from ollama_guard.gateway.routes import Route
from ollama_guard.gateway.stages.client import address_group

Body = JsonBody | BodyStream | None


def content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise Refusal(400, "invalid Content-Length", "bad-content-length")
    return int(text)


def chunked(value: bytes | None, http_version: str | None) -> bool:
    """Whether the body is chunked, refusing what Go's net/http (Ollama's server) refuses: its only
    transfer coding is one `chunked` (any case; spaces and tabs around it trimmed) → 501 otherwise —
    where uvicorn's parser also takes `identity, chunked` or `gzip, chunked` as chunked. Go ignores
    Transfer-Encoding on an HTTP/1.0 request (and would read the chunks as the next request), so
    such a request is refused → 400."""
    if value is None:
        return False
    if http_version == "1.0":
        raise Refusal(400, "Transfer-Encoding on an HTTP/1.0 request", "bad-transfer-encoding")
    if value.strip(b" \t").lower() != b"chunked":
        raise Refusal(501, "unsupported transfer encoding", "unsupported-transfer-encoding")
    return True


class JudgeBodyStage:
    def __init__(self, config: GatewayConfig, judges: Judges) -> None:
        self._config = config
        self._judges = judges
        self._limits = {kind: config.body_limit(kind) for kind in ("control", "document", "prompt")}
        self.budget = BodyBudget(config.inflight_body_budget, largest=max(self._limits.values()))

    async def __call__(self, req: Request, route: Route) -> Body:
        headers = req.headers
        assert headers is not None
        config = self._config
        info = BodyHeaders(
            content_length=content_length(headers.content_length),
            chunked=chunked(headers.transfer_encoding, req.scope.get("http_version")),
            encoding=headers.content_encoding,
        )
        if route.body == "json":
            limit = self._limits.get(route.body_class, config.max_body_bytes)
            check_body_headers(info, limit)
            facts = req.facts
            req.lease = lease = BodyLease(self.budget, holders_of(facts.key_id, address_group(facts.client)))
            raw = await read_body(req.receive, limit, config.request_timeout, lease, info.content_length)
            req.facts.bytes_in = len(raw)
            req.facts.body_pending = False
            body = await self._judges.judge(raw, config.max_json_depth, config.max_json_elements)
            body.lease = lease
            return body
        if route.body == "blob":
            check_body_headers(info, config.max_blob_bytes)
            limit, timeout = config.max_blob_bytes, config.request_timeout
            return BodyStream(req.receive, limit, timeout, declared_length=info.content_length)
        if info.present or info.encoding is not None:
            raise Refusal(400, f"{route.label} takes no request body", "unexpected-body")
        return None
