"""``HttpProber``: one aiohttp session for a scan, sending allowlisted probes and keeping bounded answers.

At most ``max_body`` bytes are kept per probe (then the connection is dropped), every probe, headers and
body together, must finish within ``timeout`` seconds, and a body the server compressed anyway is
decompressed no further than that cap.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import zlib
from dataclasses import dataclass
from typing import Any

import aiohttp

from ollama_guard import __version__
from ollama_guard.scan.fingerprints import ProbeAnswer, split_probe
from ollama_guard.scan.gate import check_probe
from ollama_guard.scan.targets import Target

USER_AGENT = f"ollama-guard/{__version__} (read-only security scan)"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    timeout: float = 3.0  # per probe, headers and body together
    max_body: int = 256 * 1024  # bytes kept per probe
    host_bytes: int = 1024 * 1024  # bytes kept per host before later probes are cut to SMALL_BODY
    per_host: int = 4  # simultaneous requests to one address:port
    host_budget: float = 0.0  # whole assessment of one port (0: 4 × timeout)

    @property
    def budget(self) -> float:
        return self.host_budget or self.timeout * 4


def _insecure_context() -> ssl.SSLContext:
    # We only fingerprint; the certificate is recorded, not trusted.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _bounded_decode(body: bytes, encoding: str, cap: int) -> tuple[bytes, bool]:
    """Undo gzip/deflate a server sent despite `Accept-Encoding: identity`, never beyond `cap` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 31 if "gzip" in encoding else 15
        try:
            decoder = zlib.decompressobj(wbits)
            out = decoder.decompress(body, cap)
            return out, bool(decoder.unconsumed_tail) or len(out) >= cap
        except zlib.error:
            return body, True
    return body, False


class HttpProber:
    """One aiohttp session shared by every assessment of a scan."""

    def __init__(self, settings: ProbeSettings, connection_limit: int = 256) -> None:
        self.settings = settings
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None
        self._tls = _insecure_context()

    async def __aenter__(self) -> HttpProber:
        connector = aiohttp.TCPConnector(
            limit=self._connection_limit,
            limit_per_host=self.settings.per_host,
            ssl=self._tls,
            keepalive_timeout=5,
            use_dns_cache=False,
            enable_cleanup_closed=False,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, connect=self.settings.timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"},
            max_line_size=8190,
            max_field_size=8190,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(
        self,
        target: Target,
        scheme: str,
        key: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        max_body: int | None = None,
    ) -> ProbeAnswer:
        """Send one allowlisted probe (`"GET /api/tags"`) and return a bounded answer; never raises for
        network trouble (the answer carries the error)."""
        method, path = split_probe(key)
        check_probe(method, path)
        assert self._session is not None, "use HttpProber as an async context manager"
        answer = ProbeAnswer(method, path)
        host = target.host
        shown = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{shown}:{target.port}{target.base_path}{path}"
        request_headers = dict(headers or {})
        if target.hostname and "Host" not in request_headers:
            default_port = 443 if scheme == "https" else 80
            request_headers["Host"] = (
                target.hostname if target.port == default_port else f"{target.hostname}:{target.port}"
            )
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            request_headers["Content-Type"] = "application/json"
        loop = asyncio.get_running_loop()
        started = loop.time()
        cap = self.settings.max_body if max_body is None else max_body
        body = bytearray()
        try:
            async with asyncio.timeout(self.settings.timeout):
                async with self._session.request(
                    method,
                    url,
                    headers=request_headers,
                    data=data,
                    allow_redirects=False,
                    server_hostname=target.hostname if scheme == "https" else None,
                ) as response:
                    answer.status = response.status
                    answer.headers = {}
                    for name, value in response.headers.items():
                        lower = name.lower()
                        answer.headers[lower] = (
                            f"{answer.headers[lower]}, {value}" if lower in answer.headers else value
                        )
                    if method != "HEAD":
                        while len(body) < cap:
                            chunk = await response.content.read(min(65536, cap - len(body)))
                            if not chunk:
                                break
                            body += chunk
                        if len(body) >= cap and not response.content.at_eof():
                            answer.truncated = True
                            response.close()  # drop the connection rather than drain an endless body
        except TimeoutError:
            answer.error = "timeout"
            answer.truncated = answer.truncated or answer.status > 0
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            answer.error = f"{type(exc).__name__}: {exc}"[:300]
            if answer.status:
                answer.truncated = True
        answer.body = bytes(body)
        encoding = answer.headers.get("content-encoding", "")
        if answer.body and encoding:
            answer.body, clipped = _bounded_decode(answer.body, encoding, cap)
            answer.truncated = answer.truncated or clipped
        answer.elapsed = loop.time() - started
        return answer
