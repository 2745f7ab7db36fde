"""Read-only HTTP probes of one open port (``Assessor``): discovery, TLS, Host guard, follow-ups, Ollama's
own.

Every request goes through ``HttpProber.fetch`` (``scan.prober``), which calls the read-only gate
``check_probe`` (``scan.gate``) first. What the answers mean is read in ``scan.answers``. A host that
already sent ``host_bytes`` gets only ``SMALL_BODY`` per further probe, and the whole assessment of one
port stops at its time budget. Everything that was importable from here still is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ollama_guard.scan.answers import (
    auth_challenged,
    decide_auth,
    first,
    host_guarded,
    looks_like_tls,
    names_from_partial_listing,
    parse_show,
)
from ollama_guard.scan.fingerprints import (
    DISCOVERY_PROBES,
    Fingerprint,
    fingerprint_by_id,
    followup_probes,
    identify,
    json_values,
    split_probe,
)
from ollama_guard.scan.gate import (
    BLOB_PROBE,
    SHORT_BLOB_PROBE,
    SHORT_DIGEST,
    SHOW_PROBE,
    ZERO_DIGEST,
    ProbeNotAllowed,
    allowed_probes,
    check_probe,
)
from ollama_guard.scan.host import HostResult
from ollama_guard.scan.prober import USER_AGENT, HttpProber, ProbeSettings

__all__ = [
    "BLOB_PROBE",
    "CORS_ORIGIN",
    "MAX_SHOWN_MODELS",
    "SHORT_BLOB_PROBE",
    "SHORT_DIGEST",
    "SHOW_PROBE",
    "SMALL_BODY",
    "USER_AGENT",
    "ZERO_DIGEST",
    "Assessor",
    "HttpProber",
    "ProbeNotAllowed",
    "ProbeSettings",
    "allowed_probes",
    "check_probe",
    "decide_auth",
    "names_from_partial_listing",
    "parse_show",
]

CORS_ORIGIN = "https://probe.invalid"
MAX_SHOWN_MODELS = 3
SMALL_BODY = 16 * 1024


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
        if target.scheme is None and looks_like_tls(root):
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
                await self._cors(result, first(found.fingerprint.auth_probes) or "GET /")
        elif auth_challenged(result.answers):
            result.service = "protected-api"
            result.service_name = "HTTP API behind authentication (product not identifiable)"
            result.auth = "required"

    async def _past_host_guard(self, result: HostResult) -> None:
        """Ollama bound to loopback refuses (403, empty body) every request whose Host is not a local name
        (its DNS-rebinding guard), which is what a scan through a tunnel or port forward by a public name
        meets. One read-only `GET /` with `Host: localhost` tells that guard apart from a closed API; the
        rest of the assessment then uses the same Host, as any direct client can."""
        if not result.target.hostname or not host_guarded(result.answers):
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
            version = first(v for v in fp.version.values(result.answers) if isinstance(v, str | int | float))
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
