"""What probe answers say: TLS on a plain-HTTP port, Ollama's Host guard, an auth challenge, ``/api/show``
details, model names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from ollama_guard.scan.fingerprints import DISCOVERY_PROBES, Fingerprint, ProbeAnswer, json_values
from ollama_guard.scan.host import ModelDetails


def looks_like_tls(answer: ProbeAnswer) -> bool:
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


def first(values: Iterable[Any]) -> Any:
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


def host_guarded(answers: dict[str, ProbeAnswer]) -> bool:
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


def auth_challenged(answers: dict[str, ProbeAnswer]) -> bool:
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
