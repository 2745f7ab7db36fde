"""Read-only HTTP probes of one open port, and the allowlist that keeps them read-only.

Every request the scanner sends goes through `HttpProber.fetch`, which calls `check_probe` first: a
(method, path) pair that is not on the allowlist, or that touches a state-changing, outbound, account or
inference route, raises `ProbeNotAllowed` before a byte is sent. The allowlist is GET/OPTIONS of the
fingerprint paths, HEAD of two blob digests that cannot exist, and `POST /api/show` (Ollama's read-only
model description, which is a POST).

Responses are bounded: at most `max_body` bytes are kept per probe (then the connection is dropped), a
host that already sent `host_bytes` gets only `SMALL_BODY` per further probe, and
every probe, headers and body together, must finish within `timeout` seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ollama_guard import __version__
from ollama_guard.errors import GuardError
from ollama_guard.ollama.endpoints import match_endpoint
from ollama_guard.scan.fingerprints import (
    DISCOVERY_PROBES,
    Fingerprint,
    ProbeAnswer,
    every_probe_key,
    fingerprint_by_id,
    followup_probes,
    identify,
    json_values,
    split_probe,
)
from ollama_guard.scan.host import HostResult, ModelDetails
from ollama_guard.scan.targets import Target

ZERO_DIGEST = "sha256:" + "0" * 64  # well-formed, cannot exist: 404 means the admin handler ran
SHORT_DIGEST = "sha256:00"  # malformed: 400 on Ollama >= 0.1.34 (digest check), 404 on <= 0.1.33
BLOB_PROBE = f"HEAD /api/blobs/{ZERO_DIGEST}"
SHORT_BLOB_PROBE = f"HEAD /api/blobs/{SHORT_DIGEST}"
SHOW_PROBE = "POST /api/show"
CORS_ORIGIN = "https://probe.invalid"
MAX_SHOWN_MODELS = 3
SMALL_BODY = 16 * 1024
USER_AGENT = f"ollama-guard/{__version__} (read-only security scan)"

# Routes that change state, call out, touch the ollama.com account or spend compute. Never sent, whatever
# the method; checked before the allowlist so a careless data-file edit cannot reach them.
_FORBIDDEN = re.compile(
    r"^/(?:api/(?:pull|push|create|copy|delete|signout|me|user|generate|chat|embed|embeddings|experimental"
    r"|load|unload)(?:/|$)"
    r"|v1/(?:chat|completions|embeddings|responses|messages|audio|images)(?:/|$)"
    r"|(?:prompt|completion|completions|infill|tokenize|detokenize|embedding|embeddings|rerank|reranking"
    r"|slots|upload|queue|interrupt|free)(?:/|$))"
)

_OLLAMA_READ_GETS = frozenset({"/api/ps", "/api/status"})


class ProbeNotAllowed(GuardError):
    """A probe outside the read-only allowlist was about to be sent."""


def allowed_probes() -> frozenset[tuple[str, str]]:
    """Every (method, path) the scanner may send."""
    pairs: set[tuple[str, str]] = set()
    gets = {split_probe(k)[1] for k in every_probe_key()} | _OLLAMA_READ_GETS
    for path in gets:
        pairs.add(("GET", path))
        pairs.add(("OPTIONS", path))
    pairs.add(("HEAD", f"/api/blobs/{ZERO_DIGEST}"))
    pairs.add(("HEAD", f"/api/blobs/{SHORT_DIGEST}"))
    pairs.add(("POST", "/api/show"))
    return frozenset(pairs)


_ALLOWED: frozenset[tuple[str, str]] | None = None


def check_probe(method: str, path: str) -> None:
    """The one gate every request passes. Raises ProbeNotAllowed for anything not provably read-only."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = allowed_probes()
    if _FORBIDDEN.match(path):
        raise ProbeNotAllowed(f"refusing to send {method} {path}: it can change the target or spend compute")
    if (method, path) not in _ALLOWED:
        raise ProbeNotAllowed(f"refusing to send {method} {path}: not on the read-only probe allowlist")
    # Second opinion from the knowledge base: an Ollama route must be classed read-only in the catalog.
    endpoint = match_endpoint(method, path)
    if endpoint is not None and not endpoint.is_read_only:
        raise ProbeNotAllowed(
            f"refusing to send {method} {path}: Ollama's endpoint catalog classes it as "
            f"{'/'.join(sorted(endpoint.classes))}"
        )


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


def _looks_like_tls(answer: ProbeAnswer) -> bool:
    """The plain-HTTP attempt met a TLS server (alert bytes, a broken status line, a 400 that says so) or a
    redirect to https on the same port's server."""
    if answer.status in (301, 302, 307, 308):
        return answer.header("location").lower().startswith(("https://", "//"))
    if answer.status == 400:
        text = answer.text.lower()
        return "https" in text and ("plain http" in text or "http request to an https server" in text)
    if answer.status == 0 and answer.error and answer.error != "timeout":
        return True
    return False


def _first(values: Iterable[Any]) -> Any:
    for value in values:
        return value
    return None


_FROM_LINE = re.compile(r"^FROM\s+(\S+)", re.M)
_SYSTEM_LINE = re.compile(r'^SYSTEM\s+(?:"""(.*?)"""|"(.*?)"|(.+))$', re.M | re.S)


def parse_show(name: str, answer: ProbeAnswer) -> ModelDetails:
    """System prompt and blob-store path from an `/api/show` answer."""
    details = ModelDetails(name=name, answer=answer)
    document = answer.json()
    if not isinstance(document, dict):
        return details
    system = document.get("system")
    modelfile = document.get("modelfile") if isinstance(document.get("modelfile"), str) else ""
    if not (isinstance(system, str) and system.strip()) and modelfile:
        match = _SYSTEM_LINE.search(modelfile)
        if match:
            system = next((g for g in match.groups() if g), None)
    if isinstance(system, str) and system.strip():
        details.system_prompt = system.strip()
    for match in _FROM_LINE.finditer(modelfile):
        path = match.group(1)
        if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
            details.store_path = path
            break
    return details


class Assessor:
    """Runs the probe stages against one open port and fills a HostResult."""

    def __init__(self, prober: HttpProber) -> None:
        self.prober = prober

    def _body_cap(self, result: HostResult) -> int:
        """Full `max_body` while the host is within its byte allowance, SMALL_BODY after."""
        settings = self.prober.settings
        used = sum(len(a.body) for a in result.answers.values())
        return settings.max_body if used < settings.host_bytes else min(SMALL_BODY, settings.max_body)

    async def _gather(self, result: HostResult, keys: Iterable[str]) -> None:
        keys = [k for k in keys if k not in result.answers]
        cap = self._body_cap(result)
        headers = {"Host": result.host_header} if result.host_header else None
        answers = await asyncio.gather(
            *(self.prober.fetch(result.target, result.scheme, k, headers=headers, max_body=cap) for k in keys)
        )
        for answer in answers:
            result.answers[answer.key] = answer

    async def assess(self, result: HostResult) -> HostResult:
        try:
            async with asyncio.timeout(self.prober.settings.budget):
                await self._assess(result)
        except TimeoutError:
            result.note = "assessment stopped at the per-host time budget"
        return result

    async def _assess(self, result: HostResult) -> None:
        target = result.target
        if target.scheme:
            result.scheme = target.scheme
        await self._gather(result, DISCOVERY_PROBES)
        root = result.answers["GET /"]
        if target.scheme is None and _looks_like_tls(root):
            plain = dict(result.answers)
            result.answers.clear()
            result.scheme = "https"
            await self._gather(result, DISCOVERY_PROBES)
            if not result.answers["GET /"].answered:
                result.answers = plain  # not TLS either: keep what plain HTTP gave
                result.scheme = "http"
            else:
                result.tls_detected = True
        if not any(a.answered for a in result.answers.values()):
            result.note = "no HTTP answer"
            return
        await self._past_host_guard(result)
        if not any(a.answered and not a.truncated for a in result.answers.values()):
            result.note = "no complete HTTP answer within the timeout"
            return
        await self._gather(result, followup_probes(result.answers, target.port))
        found = identify(result.answers)
        if found is not None:
            result.service = found.fingerprint.id
            result.service_name = found.fingerprint.name
            result.confidence = found.confidence
            self._describe(result, found.fingerprint)
            if result.host_header and found.fingerprint.id == "ollama":
                result.service_name = "Ollama, Host guard active"
            if found.fingerprint.id in ("ollama", "ollama-compatible"):
                await self._assess_ollama(result)
            else:
                await self._cors(result, _first(found.fingerprint.auth_probes) or "GET /")
        elif _auth_challenged(result.answers):
            result.service = "protected-api"
            result.service_name = "HTTP API behind authentication (product not identifiable)"
            result.auth = "required"

    async def _past_host_guard(self, result: HostResult) -> None:
        """Ollama bound to loopback refuses (403, empty body) every request whose Host is not a local name
        (its DNS-rebinding guard), which is what a scan through a tunnel or port forward by a public name
        meets. One read-only `GET /` with `Host: localhost` tells that guard apart from a closed API; the
        rest of the assessment then uses the same Host, as any direct client can."""
        if not result.target.hostname or not _host_guarded(result.answers):
            return
        probe = await self.prober.fetch(
            result.target, result.scheme, "GET /", headers={"Host": "localhost"}, max_body=SMALL_BODY
        )
        if probe.status != 200 or "Ollama is running" not in probe.text:
            return
        result.host_header = "localhost"
        result.answers.clear()
        await self._gather(result, DISCOVERY_PROBES)
        result.note = (
            f"Ollama's Host guard is active: requests naming {result.target.hostname} get 403 (a "
            "loopback-bound server reached through a tunnel or forward); with `Host: localhost` the API "
            "answers, as it does for any client that sets that header"
        )

    def _describe(self, result: HostResult, fp: Fingerprint) -> None:
        if fp.version is not None:
            version = _first(v for v in fp.version.values(result.answers) if isinstance(v, str | int | float))
            if version is not None:
                result.version = str(version)
        if fp.models is not None:
            names = [str(v) for v in fp.models.values(result.answers) if isinstance(v, str | int | float)]
            tags = result.answers.get(fp.models.probe)
            if not names and tags is not None and tags.status == 200 and tags.truncated:
                names = names_from_partial_listing(tags.body)
                result.note = (
                    f"{fp.models.probe} is longer than {len(tags.body)} bytes: {len(names)} model names read "
                    "from its beginning, the rest not fetched"
                )
            result.models = list(dict.fromkeys(names))
        result.auth = decide_auth(result.answers, fp)

    async def _cors(self, result: HostResult, key: str) -> None:
        _method, path = split_probe(key)
        answer = await self.prober.fetch(
            result.target,
            result.scheme,
            f"OPTIONS {path}",
            headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        result.answers[answer.key] = answer

    async def _assess_ollama(self, result: HostResult) -> None:
        keys = ["GET /api/ps", "GET /api/status"]
        if result.service == "ollama":  # an imitator's 404 for an unknown route would prove nothing
            keys.append(BLOB_PROBE)
            if result.version is None:
                keys.append(SHORT_BLOB_PROBE)
        shows = result.models[:MAX_SHOWN_MODELS] if result.auth != "required" else []
        await asyncio.gather(
            self._gather(result, keys),
            self._cors(result, "GET /api/tags"),
            *(self._show(result, name) for name in shows),
        )
        running = result.answers.get("GET /api/ps")
        if running is not None and running.status == 200:
            result.running_models = [str(v) for v in json_values(running.json(), "models[].name")]
        if result.version is None:
            short = result.answers.get(SHORT_BLOB_PROBE)
            if short is not None and short.status == 404:
                result.version_evidence = (
                    f"<=0.1.33 ({SHORT_BLOB_PROBE} → 404; 0.1.34 added the digest check)"
                )
            elif short is not None and short.status == 400:
                result.version_evidence = f">=0.1.34 ({SHORT_BLOB_PROBE} → 400 invalid digest)"
        if result.auth == "unknown":
            result.auth = decide_auth(result.answers, fingerprint_by_id("ollama"))

    async def _show(self, result: HostResult, name: str) -> None:
        answer = await self.prober.fetch(result.target, result.scheme, SHOW_PROBE, json_body={"model": name})
        if answer.status == 200:
            result.model_details.append(parse_show(name, answer))
        result.answers.setdefault(SHOW_PROBE, answer)


_LISTED_NAME = re.compile(rb'[{,]\s*"name"\s*:\s*"((?:[^"\\]|\\.){1,512})"')


def names_from_partial_listing(body: bytes) -> list[str]:
    """Model names from the first bytes of a `/api/tags` answer cut at the probe's byte cap (the JSON is
    incomplete, so entries are read one by one; every `"name"` key at entry level is a model's)."""
    names: list[str] = []
    for match in _LISTED_NAME.finditer(body):
        try:
            value = json.loads(b'"' + match.group(1) + b'"')
        except ValueError:
            continue
        if isinstance(value, str):
            names.append(value)
    return names


def _host_guarded(answers: dict[str, ProbeAnswer]) -> bool:
    """Every discovery probe got Ollama's Host-guard answer: 403 with an empty body."""
    found = [answers.get(key) for key in DISCOVERY_PROBES]
    return all(a is not None and a.status == 403 and not a.body for a in found)


def _challenge(answer: ProbeAnswer) -> bool:
    """401/403 that comes from an authentication layer (not, say, Ollama's CORS or Host check)."""
    if answer.status not in (401, 403):
        return False
    if answer.header("www-authenticate"):
        return True
    document = answer.json()
    return isinstance(document, dict) and isinstance(document.get("error"), str)


def _auth_challenged(answers: dict[str, ProbeAnswer]) -> bool:
    api = [answers.get(k) for k in ("GET /api/tags", "GET /api/version", "GET /v1/models")]
    return any(a is not None and _challenge(a) for a in api)


def decide_auth(answers: dict[str, ProbeAnswer], fp: Fingerprint) -> str:
    """`none` when an API probe answered without credentials, `required` when it met an auth challenge."""
    if fp.auth_json is not None:
        answer = answers.get(fp.auth_json.probe)
        if answer is not None and answer.status == 200:
            values = json_values(answer.json(), fp.auth_json.json_path)
            if fp.auth_json.none_when in values:
                return "none"
            if fp.auth_json.required_when in values:
                return "required"
    probes = [answers.get(k) for k in fp.auth_probes]
    if any(a is not None and 200 <= a.status < 300 and not a.truncated for a in probes):
        return "none"
    if any(a is not None and _challenge(a) for a in probes):
        return "required"
    return "unknown"
