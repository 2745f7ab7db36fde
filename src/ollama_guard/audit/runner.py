"""Run every registered check over the collected facts and build the report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ollama_guard.audit.collect import AuditOptions, collect
from ollama_guard.audit.context import AuditContext
from ollama_guard.audit.model import Facts, Instance
from ollama_guard.audit.registry import Outcome, all_checks
from ollama_guard.errors import InputError
from ollama_guard.findings import Report, ReportSection


@dataclass
class AuditResult:
    report: Report
    outcomes: list[Outcome]
    context: AuditContext


def _instance_json(inst: Instance, ctx: AuditContext) -> dict[str, Any]:
    out: dict[str, Any] = {
        "target": inst.target,
        "kind": inst.kind,
        "source": inst.label,
        "listen": inst.bind().hostport,
        "exposed": ctx.instance_exposed(inst),
        "env": {k: v.value for k, v in sorted(inst.env.items()) if k.startswith("OLLAMA_")},
    }
    if inst.publishes:
        out["publishes"] = [p.spec for p in inst.publishes]
    if inst.user:
        out["user"] = inst.user
    if not inst.effective:
        out["effective"] = False
    return out


def _data(ctx: AuditContext, facts: Facts) -> dict[str, Any]:
    return {
        "audit": {
            "root": facts.root,
            "live": facts.live,
            "posture": ctx.posture.value,
            "instances": [_instance_json(i, ctx) for i in facts.instances],
            "versions": [{"version": v.version, "source": v.source} for v in facts.versions],
            "stores": [
                {"ollama_dir": s.ollama_dir, "models_dir": s.models_dir, "owner": s.owner, "reason": s.reason}
                for s in facts.stores
            ],
            "gateway": {
                "present": facts.gateway.present,
                "configs": facts.gateway.configs,
                "processes": facts.gateway.processes,
                "listening": facts.gateway.listening,
            },
            "checks": [c.meta.id for c in all_checks()],
            "notes": facts.notes,
        }
    }


def run_audit(options: AuditOptions) -> AuditResult:
    if options.root is not None and not options.root.is_dir():
        raise InputError(f"--root {options.root}: not a directory")
    started = datetime.now(UTC)
    fs, facts = collect(options)
    ctx = AuditContext.build(fs, facts)
    outcomes: list[Outcome] = []
    for chk in all_checks():
        outcomes.extend(chk.run(ctx))
    rows = [
        [i.target, i.kind, i.bind().hostport, "yes" if ctx.instance_exposed(i) else "no", i.label]
        for i in facts.instances
    ]
    sections = []
    if rows:
        sections.append(
            ReportSection(
                title="Ollama configurations found",
                columns=["target", "kind", "listen", "exposed", "source"],
                rows=rows,
            )
        )
    if facts.notes:
        sections.append(ReportSection(title="Notes", columns=["note"], rows=[[n] for n in facts.notes]))
    findings = [o.finding for o in outcomes]
    report = Report(
        command="audit",
        findings=findings,
        summary={
            "posture": ctx.posture.value,
            "instances": len(facts.instances),
            "exposed": sum(1 for i in facts.instances if ctx.instance_exposed(i)),
            "root": facts.root,
            "live": facts.live,
        },
        sections=sections,
        data=_data(ctx, facts),
        started_at=started,
        finished_at=datetime.now(UTC),
    )
    return AuditResult(report, outcomes, ctx)
