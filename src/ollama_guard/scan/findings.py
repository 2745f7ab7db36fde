"""Findings for one assessed host, built from the probe answers it gave."""

from __future__ import annotations

import re
from typing import Any

from ollama_guard.findings import Finding, Severity
from ollama_guard.redact import redact_text
from ollama_guard.scan.fingerprints import ProbeAnswer, fingerprint_by_id, json_values, reached_blob_handler
from ollama_guard.scan.host import HostResult
from ollama_guard.scan.locality import Locality, judge_reach, locality_of
from ollama_guard.scan.probes import BLOB_PROBE, CORS_ORIGIN, SHORT_BLOB_PROBE

EVIDENCE_CHARS = 400
OLLAMA_SERVICES = ("ollama", "ollama-compatible")
OLLAMA_FAQ = "https://github.com/ollama/ollama/blob/main/docs/faq.md"
GATEWAY_REMEDIATION = (
    'Bind Ollama to loopback (systemd drop-in: `[Service]` `Environment="OLLAMA_HOST=127.0.0.1:11434"`; '
    "Docker: `-p 127.0.0.1:11434:11434`) and give remote users `ollama-guard serve` in front of it, with "
    "one key per client (`ollama-guard keys create NAME --role inference`)."
)

_BY_RANK = {s.rank: s for s in Severity}


def _clip(text: str, limit: int = EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def evidence_of(result: HostResult, answer: ProbeAnswer | None, **extra: Any) -> dict[str, Any]:
    """The request we sent and a truncated copy of what came back."""
    if answer is None:
        return dict(extra)
    out: dict[str, Any] = {
        "request": f"{answer.method} {result.url.rstrip('/')}{answer.path}",
        "status": answer.status,
    }
    if answer.body:
        out["response"] = _clip(redact_text(answer.text))  # redacted before it is cut
    if answer.truncated:
        out["response_truncated"] = True
    out.update(extra)
    return out


def _finding(result: HostResult, rule: str, severity: Severity, title: str, **fields: Any) -> Finding:
    return Finding(rule=rule, severity=severity, target=result.endpoint, title=title, **fields)


def build_findings(result: HostResult) -> list[Finding]:
    """Every finding the answers support; empty when no service was identified."""
    if result.service is None:
        return []
    local = locality_of(result.target.host, result.target.port)
    findings = _findings(result, local)
    if local.loopback_target:
        ollama = result.service in OLLAMA_SERVICES
        findings = [judge_reach(f, local, ollama=ollama) for f in findings]
    return findings


def _findings(result: HostResult, local: Locality) -> list[Finding]:
    findings: list[Finding] = []
    name = result.service_name or result.service
    where = result.display_name
    is_ollama = result.service in OLLAMA_SERVICES

    if result.auth == "none" and result.service != "protected-api":
        fp = fingerprint_by_id(result.service)
        proof = next(
            (
                result.answers[k]
                for k in fp.auth_probes
                if k in result.answers and result.answers[k].status == 200
            ),
            None,
        )
        if proof is None and fp.auth_json is not None:
            proof = result.answers.get(fp.auth_json.probe)
        what = (
            "Anyone who can reach this port can list models and run inference (spending its CPU/GPU), "
            "and read everything the API exposes."
        )
        findings.append(
            _finding(
                result,
                "unauthenticated-api",
                fp.unauthenticated_severity,
                f"{name} at {where} answers its API without authentication",
                detail=f"{what} Reachable without credentials: {', '.join(result.reachable_endpoints())}.",
                evidence=evidence_of(result, proof),
                remediation=GATEWAY_REMEDIATION if is_ollama else fp.remediation,
                references=[OLLAMA_FAQ] if is_ollama else [],
            )
        )

    if is_ollama:
        findings += _ollama_findings(result)

    if result.models or result.running_models:
        fp = fingerprint_by_id(result.service) if result.service != "protected-api" else None
        listing = result.answers.get(fp.models.probe) if fp is not None and fp.models is not None else None
        extra: dict[str, Any] = {"models": result.models[:50]}
        if result.running_models:
            extra["loaded_models"] = result.running_models[:50]
        findings.append(
            _finding(
                result,
                "model-enumeration",
                Severity.MEDIUM,
                f"{name} at {where} lists its {len(result.models)} model(s) to anyone",
                detail=(
                    "The model inventory is readable without credentials"
                    + (
                        " and /api/ps shows which models are loaded (live activity)"
                        if result.running_models
                        else ""
                    )
                    + ". Attackers use it to pick models to abuse, copy or delete."
                ),
                evidence=evidence_of(result, listing, **extra),
                remediation=(
                    "Require authentication for listing endpoints: with `ollama-guard serve`, give the "
                    "`read` role only to clients that need it and restrict keys with --models."
                ),
            )
        )

    cors = next((a for a in result.answers.values() if a.method == "OPTIONS"), None)
    if cors is not None and _allows_any_origin(cors):
        findings.append(
            _finding(
                result,
                "cors-any-origin",
                Severity.HIGH,
                f"{name} at {where} accepts cross-origin requests from any web site",
                detail=(
                    f"A CORS preflight from Origin {CORS_ORIGIN} was allowed "
                    f"(Access-Control-Allow-Origin: {cors.header('access-control-allow-origin')}). "
                    + (
                        "Even though it listens on loopback only, any web page opened in a browser on "
                        "this host can drive the API and read its answers: this is how a remote site "
                        "reaches a loopback-only server."
                        if local.loopback_only
                        else "Any page a user on this network opens can drive the API from their browser."
                    )
                ),
                evidence=evidence_of(
                    result,
                    cors,
                    request_headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "GET"},
                    response_headers={
                        k: v for k, v in cors.headers.items() if k.startswith("access-control-")
                    },
                ),
                remediation=(
                    "Remove `*` from OLLAMA_ORIGINS (unset it, or list the exact origins that need access, "
                    "e.g. `OLLAMA_ORIGINS=https://chat.example.com`), then restart Ollama."
                    if is_ollama
                    else "Allow only the exact origins that need browser access in the server's CORS "
                    "settings."
                ),
            )
        )

    if result.scheme == "http":
        if result.is_loopback:
            severity = Severity.INFO
        elif result.auth == "required":
            severity = Severity.MEDIUM
        else:
            severity = Severity.LOW
        findings.append(
            _finding(
                result,
                "plaintext-http",
                severity,
                f"{name} at {where} is served over plain HTTP",
                detail=(
                    "Prompts, answers and any API keys cross the network unencrypted"
                    + (" (loopback: only this machine sees them)." if result.is_loopback else ".")
                ),
                evidence={"url": result.url},
                remediation=(
                    "Serve it over TLS: set `tls_cert` and `tls_key` in the `[gateway]` section of "
                    "ollama-guard's config (or terminate TLS in a reverse proxy) and keep the backend on "
                    "loopback."
                ),
            )
        )

    findings += _advisory_findings(result, local)
    return findings


def _allows_any_origin(answer: ProbeAnswer) -> bool:
    allowed = answer.header("access-control-allow-origin").strip()
    return 200 <= answer.status < 300 and allowed in ("*", CORS_ORIGIN)


def _ollama_findings(result: HostResult) -> list[Finding]:
    findings: list[Finding] = []
    name = result.service_name or "Ollama"
    where = result.display_name
    blob = result.answers.get(BLOB_PROBE)
    if result.service == "ollama" and blob is not None and reached_blob_handler(blob):
        findings.append(
            _finding(
                result,
                "unauthenticated-admin",
                Severity.CRITICAL,
                f"{name} at {where} exposes its model-management API without authentication",
                detail=(
                    f"{BLOB_PROBE.split(' ')[0]} of a digest that cannot exist reached the blob handler "
                    f"({blob.status}), so pull, push, create, copy, delete and blob upload are open to "
                    "anyone who reaches the port: models can be replaced, deleted or exfiltrated to a "
                    "foreign registry. "
                    "(Proved read-only: nothing was written.)"
                ),
                evidence=evidence_of(result, blob),
                remediation=GATEWAY_REMEDIATION
                + " Only the `admin` role may then reach /api/pull, /api/push, /api/create, /api/copy, "
                "/api/delete and /api/blobs.",
                references=[OLLAMA_FAQ],
            )
        )

    for details in result.model_details:
        if details.system_prompt:
            findings.append(
                _finding(
                    result,
                    "system-prompt-exposed",
                    Severity.MEDIUM,
                    f"{name} at {where} reveals the system prompt of model {details.name}",
                    detail=(
                        "POST /api/show returns the model's SYSTEM prompt to anyone; system prompts "
                        "often hold business logic, internal names or credentials."
                    ),
                    evidence=evidence_of(
                        result,
                        details.answer,
                        request_body={"model": details.name},
                        system_prompt=_clip(redact_text(details.system_prompt), 200),
                    ),
                    remediation=(
                        "Keep secrets out of system prompts and block /api/show for untrusted callers "
                        "(through `ollama-guard serve`, only keys with the `read` role can call it)."
                    ),
                )
            )
    leaked = next((d for d in result.model_details if d.store_path), None)
    if leaked is not None and leaked.store_path:
        user = _user_of(leaked.store_path)
        models_dir = re.split(r"[\\/]blobs[\\/]", leaked.store_path)[0]
        as_root = user == "root"
        findings.append(
            _finding(
                result,
                "store-path-leak",
                Severity.MEDIUM if as_root else Severity.LOW,
                f"{name} at {where} discloses its model store path"
                + (" and that it runs as root" if as_root else (f" and OS user {user!r}" if user else "")),
                detail=(
                    f"The modelfile from POST /api/show names {leaked.store_path!r}, revealing the "
                    f"OLLAMA_MODELS location ({models_dir})"
                    + (
                        " under /root: the server runs as root (the official Docker image's default), so a "
                        "path-traversal bug would own the host."
                        if as_root
                        else (f" and the account Ollama runs as ({user})." if user else ".")
                    )
                    + " Attackers use such paths to aim path-traversal payloads."
                ),
                evidence=evidence_of(
                    result,
                    leaked.answer,
                    request_body={"model": leaked.name},
                    store_path=leaked.store_path,
                    models_dir=models_dir,
                ),
                remediation=(
                    "Run Ollama as an unprivileged user (the Linux installer's `ollama` user; in Docker add "
                    "`--user 1000:1000` and mount the store elsewhere) and block /api/show for untrusted "
                    "callers."
                ),
            )
        )

    status = result.answers.get("GET /api/status")
    if status is not None and status.status == 200:
        disabled = json_values(status.json(), "cloud.disabled")
        if disabled and disabled[0] is False:
            findings.append(
                _finding(
                    result,
                    "cloud-enabled",
                    Severity.MEDIUM,
                    f"{name} at {where} has Ollama cloud models enabled",
                    detail=(
                        "Cloud models (`*:cloud`) are proxied to ollama.com signed with this server's key: "
                        "if it is signed in, anyone reaching the API spends the owner's ollama.com plan."
                    ),
                    evidence=evidence_of(result, status),
                    remediation=(
                        "Set `OLLAMA_NO_CLOUD=1` in the server's environment (or "
                        '`{"disable_ollama_cloud": true}` in ~/.ollama/server.json) and restart Ollama.'
                    ),
                )
            )
    return findings


def _user_of(path: str) -> str | None:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if not parts:
        return None
    if parts[0] == "root":
        return "root"
    if parts[0] in ("home", "Users") and len(parts) > 1:
        return parts[1]
    if parts[:2] == ["usr", "share"] and len(parts) > 2 and parts[2] == "ollama":
        return "ollama"
    return None


def _advisory_findings(result: HostResult, local: Locality) -> list[Finding]:
    if result.service not in OLLAMA_SERVICES or result.service == "ollama-compatible":
        return []
    from ollama_guard.ollama.advisories import advisories_for, load_advisories
    from ollama_guard.ollama.versions import InvalidVersion, parse_version

    basis = result.version
    inferred = False
    if basis is None and result.version_evidence and result.version_evidence.startswith("<=0.1.33"):
        basis, inferred = "0.1.33", True
    if basis is None:
        return []
    try:
        version = parse_version(basis)
    except InvalidVersion:
        return []
    findings: list[Finding] = []
    name = result.service_name or "Ollama"
    unknown = version.is_dev  # 0.0.0: a build without a version stamp, its real version is unknown
    for advisory in load_advisories() if unknown else advisories_for(version):
        if advisory.requires_open_api and result.auth != "none":
            continue  # the advisory is the open API itself; this one demands credentials
        if unknown:
            version_text = "0.0.0, a build without a version stamp (unknown version: possibly affected)"
            proof = result.answers.get("GET /api/version")
        elif inferred:
            version_text = f"a version up to 0.1.33 ({result.version_evidence})"
            proof = result.answers.get(SHORT_BLOB_PROBE)
        else:
            version_text = f"version {result.version}"
            proof = result.answers.get("GET /api/version")
        severity = Severity.LOW if unknown else advisory.severity_for(version)
        upgrade = (
            f"Upgrade Ollama to {advisory.fixed} or later (https://ollama.com/download, or "
            "`docker pull ollama/ollama:latest`)"
        )
        if local.loopback_only:
            # only local accounts and browser pages can deliver the exploit: one level lower, and the
            # advisories that are the open API itself are missing-auth findings (medium at most)
            if severity.rank > Severity.LOW.rank:
                severity = _BY_RANK[severity.rank - 1]
            if advisory.requires_open_api and severity.rank > Severity.MEDIUM.rank:
                severity = Severity.MEDIUM
            remediation = (
                f"{upgrade}. It listens on loopback only, so until then the exposure is local accounts "
                "and web pages in a local browser."
                if advisory.fixed
                else "No Ollama release fixes this. It already listens on loopback only; if local users "
                "must not reach it, put `ollama-guard serve` (or another authenticating proxy) in front."
            )
        elif advisory.fixed:
            remediation = f"{upgrade}; until then keep the API unreachable from untrusted networks."
        else:
            remediation = (
                "No Ollama release fixes this: keep the API bound to loopback and reachable only through "
                "`ollama-guard serve` (or another authenticating proxy)."
            )
        findings.append(
            _finding(
                result,
                advisory.id,
                severity,
                f"{name} at {result.display_name} is affected by {advisory.id}: {advisory.title}",
                detail=(
                    f"The server reports {version_text}; affected: {advisory.affected}. {advisory.mechanism} "
                    f"{'' if unknown else advisory.confidence_note(version)}"
                ).strip(),
                evidence=evidence_of(result, proof, affected=advisory.affected, fixed=advisory.fixed),
                remediation=remediation,
                references=list(advisory.references),
            )
        )
    return findings
