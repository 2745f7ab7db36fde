"""Stage 5, `judge_body`: read and judge the request body the route takes.

* `json` routes: the whole body is read (size cap → 413, deadline → 408, any Content-Encoding → 415)
  and parsed with Go's semantics; a key Ollama could read differently from us → 400 (`gateway/body.py`).
* `blob` routes: the body is relayed as it streams in, counted against the blob cap.
* other routes take no body → 400.
"""

from __future__ import annotations

from ollama_guard.gateway.body import (
    BodyHeaders,
    BodyStream,
    JsonBody,
    check_body_headers,
    judge_json,
    read_body,
)
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import Request
from ollama_guard.gateway.routes import Route

Body = JsonBody | BodyStream | None


def content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        raise Refusal(400, "invalid Content-Length", "bad-content-length")
    return int(text)


class JudgeBodyStage:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config

    async def __call__(self, req: Request, route: Route) -> Body:
        headers = req.headers
        assert headers is not None
        config = self._config
        info = BodyHeaders(
            content_length=content_length(headers.content_length),
            chunked=headers.transfer_encoding is not None,
            encoding=headers.content_encoding,
        )
        if route.body == "json":
            check_body_headers(info, config.max_body_bytes)
            raw = await read_body(req.receive, config.max_body_bytes, config.request_timeout)
            req.facts.bytes_in = len(raw)
            req.facts.body_pending = False
            return judge_json(raw, config.max_json_depth)
        if route.body == "blob":
            check_body_headers(info, config.max_blob_bytes)
            limit, timeout = config.max_blob_bytes, config.request_timeout
            return BodyStream(req.receive, limit, timeout, declared_length=info.content_length)
        if info.present or info.encoding is not None:
            raise Refusal(400, f"{route.label} takes no request body", "unexpected-body")
        return None
