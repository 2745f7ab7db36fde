"""outdated-version and one finding per advisory affecting the detected Ollama version(s)."""

from __future__ import annotations

from collections.abc import Iterator

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext, lower
from ollama_guard.audit.exposure import Posture
from ollama_guard.audit.fixes import CommandFix, Fix
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.findings import Severity
from ollama_guard.ollama.advisories import Advisory, advisories_for
from ollama_guard.ollama.versions import InvalidVersion, OllamaVersion, parse_version


def detected_versions(ctx: AuditContext) -> dict[OllamaVersion, list[str]]:
    """Each distinct parsable version → the sources that reported it."""
    out: dict[OllamaVersion, list[str]] = {}
    for obs in ctx.facts.versions:
        try:
            version = parse_version(obs.version)
        except InvalidVersion:
            ctx.facts.notes.append(f"version {obs.version!r} from {obs.source} is not an Ollama version")
            continue
        out.setdefault(version, []).append(obs.source)
    return out


def _upgrade_fix(target: str) -> list[Fix]:
    return [
        CommandFix(
            (
                "curl -fsSL https://ollama.com/install.sh | sh  # Linux",
                f"docker pull ollama/ollama:{target}  # Docker: then recreate the container",
            ),
            f"Upgrade Ollama to {target} or later:",
        )
    ]


@check("outdated-version")
def outdated_version(ctx: AuditContext) -> Iterator[Outcome]:
    for version, sources in detected_versions(ctx).items():
        fixable = [a for a in advisories_for(version) if a.fixed is not None]
        if not fixable:
            continue
        target = max(parse_version(a.fixed) for a in fixable if a.fixed)
        critical = any(a.severity is Severity.CRITICAL for a in fixable)
        base = Severity.HIGH if critical else Severity.MEDIUM
        yield outcome(
            "outdated-version",
            target=f"ollama {version}",
            severity=lower(base, ctx.posture_steps()),
            detail=f"Ollama {version} (from {', '.join(sources)}) is affected by "
            f"{', '.join(a.id for a in fixable)}, fixed by {target}.",
            evidence={
                "version": str(version),
                "sources": sources,
                "fixed_in": str(target),
                "fixable_advisories": [a.id for a in fixable],
                "posture": ctx.posture.value,
            },
            fixes=_upgrade_fix(str(target)),
        )


def _advisory_fix(adv: Advisory) -> list[Fix]:
    if adv.fixed:
        return _upgrade_fix(adv.fixed)
    endpoints = ", ".join(adv.endpoints) or "the affected endpoints"
    if "*" in adv.endpoints:
        endpoints = "the API"
    return [
        CommandFix(
            ("ollama-guard harden --out ./ollama-guard-plan",),
            f"No fixed release is known. Keep Ollama on 127.0.0.1 behind `ollama-guard serve`, which "
            f"authenticates every request and opens {endpoints} only to the key roles that need them:",
        )
    ]


@check("advisory")
def advisories(ctx: AuditContext) -> Iterator[Outcome]:
    steps = ctx.posture_steps()
    for version, sources in detected_versions(ctx).items():
        for adv in advisories_for(version):
            if adv.requires_open_api and ctx.posture is Posture.GATEWAY:
                continue  # the advisory is the open API itself, and only the gateway is reachable
            severity = lower(adv.severity_for(version), steps)
            note = f" {adv.confidence_note(version)}" if not adv.confirmed_for(version) else ""
            aliases = f" ({', '.join(adv.aliases)})" if adv.aliases else ""
            yield outcome(
                "advisory",
                rule=adv.id,
                target=f"ollama {version}",
                title=f"{adv.id}{aliases}: {adv.title}",
                severity=severity,
                detail=f"Ollama {version} (from {', '.join(sources)}) is affected ({adv.affected}). "
                f"{adv.mechanism}{note} Exposure posture: {ctx.posture.value}.",
                evidence={
                    "version": str(version),
                    "sources": sources,
                    "affected": adv.affected,
                    "fixed": adv.fixed,
                    "advisory_severity": adv.severity.value,
                    "endpoints": adv.endpoints,
                    "posture": ctx.posture.value,
                },
                fixes=_advisory_fix(adv),
                references=list(adv.references),
                with_rationale=False,
            )
