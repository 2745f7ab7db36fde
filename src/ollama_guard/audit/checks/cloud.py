"""cloud-enabled: neither OLLAMA_NO_CLOUD nor server.json's disable_ollama_cloud turns cloud off."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

from ollama_guard.audit.checks.common import outcome
from ollama_guard.audit.context import AuditContext
from ollama_guard.audit.fixes import Fix, ServerJsonFix
from ollama_guard.audit.hostspec import ollama_bool
from ollama_guard.audit.registry import Outcome, check
from ollama_guard.findings import Severity
from ollama_guard.ollama.endpoints import endpoint
from ollama_guard.ollama.versions import InvalidVersion, parse_version

# Only instances that describe a whole server environment; env snippets can't tell "unset".
_SERVER_KINDS = ("systemd", "process", "launchd", "compose", "docker")


def server_json_disables_cloud(ctx: AuditContext, home: str | None) -> tuple[bool, str | None]:
    """(disabled?, path read) for ~/.ollama/server.json — Go's json.Unmarshal wants a real `true`."""
    if not home:
        return False, None
    path = posixpath.join(home, ".ollama", "server.json")
    text = ctx.fs.read_text(path)
    if text is None:
        return False, None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False, path
    return isinstance(data, dict) and data.get("disable_ollama_cloud") is True, path


def _only_pre_cloud_versions(ctx: AuditContext) -> bool:
    """True when every detected Ollama version predates cloud features (the catalog's /api/me)."""
    first_cloud = parse_version(endpoint("POST", "/api/me").since)
    versions = []
    for obs in ctx.facts.versions:
        try:
            versions.append(parse_version(obs.version))
        except InvalidVersion:
            return False  # unknown: keep the check
    return bool(versions) and all(v < first_cloud for v in versions)


@check("cloud-enabled")
def cloud_enabled(ctx: AuditContext) -> Iterator[Outcome]:
    if _only_pre_cloud_versions(ctx):
        return
    for inst in ctx.facts.instances:
        if inst.kind not in _SERVER_KINDS:
            continue
        env_item = inst.env.get("OLLAMA_NO_CLOUD")
        if env_item is not None and ollama_bool(env_item.value):
            continue
        in_container = inst.kind in ("compose", "docker")
        disabled, json_path = (False, None) if in_container else server_json_disables_cloud(ctx, inst.home)
        if disabled:
            continue
        exposed = ctx.instance_exposed(inst)
        fixes: list[Fix]
        if inst.kind == "process" and inst.home and not inst.extra.get("unit"):
            fixes = [ServerJsonFix(posixpath.join(inst.home, ".ollama", "server.json"))]
        else:
            fixes = ctx.env_fixes(inst, {"OLLAMA_NO_CLOUD": "1"}, "cloud")
        key = posixpath.join(inst.home, ".ollama", "id_ed25519") if inst.home and not in_container else None
        yield outcome(
            "cloud-enabled",
            target=inst.target,
            severity=Severity.MEDIUM if exposed else Severity.LOW,
            detail=f"{inst.label} runs with cloud features on"
            + (" and is reachable from the network, so remote clients can use them." if exposed else "."),
            evidence={
                "source": inst.label,
                "OLLAMA_NO_CLOUD": env_item.value if env_item else None,
                "server_json": json_path,
                "identity_key_present": bool(key and ctx.fs.exists(key)),
            },
            fixes=fixes,
        )
