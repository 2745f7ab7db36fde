"""Turns the engine's state into the incident report: findings, a timeline per client, indicators
of compromise, affected models, recommended actions and parse statistics."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from ollama_guard.findings import Finding, Report, ReportSection, Severity
from ollama_guard.investigate.analyze import Analysis
from ollama_guard.investigate.engine import Accumulator, iso
from ollama_guard.investigate.events import LOOPBACK, TRUSTED
from ollama_guard.investigate.handover import custody_section, provenance_section, timeline_chart
from ollama_guard.investigate.iocs import address_type, build_iocs
from ollama_guard.ollama.logformat import stack_frames

MAX_TIMELINE = 10_000  # clients listed in the timeline (all clients with findings come first)
XFF_NOTE = (
    "Client addresses in Ollama's access log are gin's ClientIP(), which believes X-Forwarded-For and "
    "X-Real-IP from any peer: an attacker can make requests appear to come from any address, "
    "including 127.0.0.1."
)


def _ranked(counter: Counter[str]) -> dict[str, int]:
    """Highest count first; ties in key order (stable whatever order things were counted in)."""
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _top(counter: Counter[str], n: int = 6) -> str:
    items = list(_ranked(counter).items())[:n]
    text = ", ".join(f"{k} ×{v}" for k, v in items)
    rest = len(counter) - len(items)
    return text + (f", … (+{rest})" if rest > 0 else "")


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _finding(acc: Accumulator) -> Finding:
    rule = acc.rule
    evidence: dict[str, Any] = {"attack": rule.attack}
    request_rule = "request" in rule.select.kind
    if request_rule:
        evidence.update(
            {
                "client": acc.target,
                "client_class": acc.client_class,
                "first_seen": iso(acc.first),
                "last_seen": iso(acc.last),
                "matched_requests": acc.matches,
                "endpoints": _ranked(acc.endpoints),
                "statuses": _ranked(acc.statuses),
                "windows": acc.windows,
            }
        )
        if acc.models:
            evidence["models"] = _ranked(acc.models)
        # bytes moved by the pushes / pulls among this finding's own requests: a deletion or a scan by
        # a client that also pushed says nothing about uploads
        if acc.pushed_bytes or acc.pulled_bytes:
            evidence["pushed_bytes_approx"] = acc.pushed_bytes
            evidence["pulled_bytes_approx"] = acc.pulled_bytes
        span = f"between {iso(acc.first)} and {iso(acc.last)}" if acc.first else "(no timestamps)"
        detail = (
            f"{acc.target} ({acc.client_class}) made {acc.matches} matching request(s) {span}: "
            f"{_top(acc.endpoints)}. {rule.description}"
        )
        if acc.pushed_bytes:
            detail += f" About {_human_bytes(acc.pushed_bytes)} of model data was uploaded by these pushes."
        if acc.pulled_bytes:
            detail += f" About {_human_bytes(acc.pulled_bytes)} of model data was downloaded by these pulls."
    elif "crash" in rule.select.kind:
        crashes = []
        for crash in acc.extra.get("crashes", []):
            entry = {k: v for k, v in crash.items() if k != "trace"}
            entry["frames"] = stack_frames(crash.get("trace", []))
            crashes.append(entry)
        evidence.update({"source": acc.target, "crashes": crashes, "count": acc.matches,
                         "first": iso(acc.first), "last": iso(acc.last)})
        first = crashes[0] if crashes else {}
        detail = f"{acc.matches} crash(es) in {acc.target}"
        if first:
            when = first.get("time") or "unknown time"
            detail += f", first at {when} ({first.get('where')}): {first.get('message')}"
            if first.get("frames"):
                detail += f" in {first['frames'][0]}"
            suspects = [c["suspect_request"] for c in crashes if c.get("suspect_request")]
            if suspects:
                detail += f". Just before it: {suspects[0]}"
        detail += f". {rule.description}"
    else:
        settings = acc.extra.get("settings") or {}
        evidence.update({"source": acc.target, "first": iso(acc.first), "last": iso(acc.last),
                         "occurrences": acc.matches})
        evidence.update({k: v for k, v in acc.extra.items() if k != "kind"})
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k in ("OLLAMA_HOST", "OLLAMA_ORIGINS",
                                                                          "OLLAMA_DEBUG_LOG_REQUESTS"))
        if not shown and acc.extra.get("address"):
            shown = f"listening on {acc.extra['address']} (version {acc.extra.get('version')})"
        detail = (f"{acc.target}: {shown or 'startup configuration'} "
                  f"({acc.matches} time(s), last at {iso(acc.last)}). ")
        detail += rule.description
    evidence["samples"] = acc.samples + ([acc.last_sample] if acc.last_sample else [])
    return Finding(
        rule=rule.id,
        severity=acc.severity,
        target=acc.target,
        title=rule.title,
        detail=detail,
        evidence=evidence,
        remediation=rule.remediation,
        references=[*rule.references, *rule.attack_references()],
    )


def build_report(analysis: Analysis, *, sources: list[str], tz_label: str, since: datetime | None,
                 started_at: datetime, provenance: dict[str, Any] | None = None) -> Report:
    engine = analysis.engine
    findings = [_finding(acc) for acc in engine.accumulators.values()]
    findings.sort(key=lambda f: (-f.severity.rank, f.rule, f.target))

    rules_by_client: dict[str, set[str]] = {}
    worst_by_client: dict[str, Severity] = {}
    for f in findings:
        client = f.evidence.get("client")
        if client is not None:
            rules_by_client.setdefault(client, set()).add(f.rule)
            if client not in worst_by_client or f.severity.rank > worst_by_client[client].rank:
                worst_by_client[client] = f.severity

    tallies = list(engine.tallies.values())
    omitted = 0
    if len(tallies) > MAX_TIMELINE:  # keep clients with findings, then the busiest
        tallies.sort(key=lambda t: (t.client not in rules_by_client, -t.requests, t.client))
        omitted = len(tallies) - MAX_TIMELINE
        tallies = tallies[:MAX_TIMELINE]
    tallies.sort(key=lambda t: (t.first is None, t.first, t.client))
    timeline = [
        {
            "client": t.client,
            "client_class": t.client_class,
            "first_seen": iso(t.first),
            "last_seen": iso(t.last),
            "requests": t.requests,
            "endpoints": _ranked(t.endpoints),
            "statuses": _ranked(t.statuses),
            # the owner's traffic is partly counted in bulk (fast path), without its latency
            "total_latency_s": round(t.latency, 3) if t.client_class not in (LOOPBACK, TRUSTED) else None,
            "models": _ranked(t.models),
            "pushed_bytes_approx": t.pushed_bytes,
            "pulled_bytes_approx": t.pulled_bytes,
            "sources": sorted(t.sources),
            "rules": sorted(rules_by_client.get(t.client, ())),
        }
        for t in tallies
    ]
    iocs = []
    for t in tallies:
        if t.client_class in (LOOPBACK, TRUSTED) or t.client not in rules_by_client:
            continue
        iocs.append(
            {
                "type": address_type(t.client),
                "value": t.client,
                "first_seen": iso(t.first),
                "last_seen": iso(t.last),
                "requests": t.requests,
                "severity": worst_by_client[t.client].value,
                "rules": sorted(rules_by_client[t.client]),
            }
        )
    iocs = build_iocs(findings, iocs, {t.client: t.pushed_models for t in tallies if t.pushed_models})
    affected_models: dict[str, list[str]] = {}
    for f in findings:
        for model in f.evidence.get("models", {}):
            affected_models.setdefault(model, [])
            if f.rule not in affected_models[model]:
                affected_models[model].append(f.rule)

    actions: list[dict[str, str]] = []
    seen_rules: set[str] = set()
    for f in findings:
        if f.rule in seen_rules or f.severity == Severity.INFO:
            continue
        seen_rules.add(f.rule)
        actions.append({"rule": f.rule, "severity": f.severity.value, "action": f.remediation})

    per_source = {}
    totals = Counter[str]()
    first_time = last_time = None
    for name, st in analysis.stats.items():
        other = max(0, st.lines - st.requests - st.malformed)
        per_source[name] = {
            "lines": st.lines,
            "requests": st.requests,
            "malformed_lines": st.malformed,
            "other_lines": other,
            "recognised_lines": st.recognised,
            "unrecognised_lines": st.unrecognised,
            "blank_lines": st.blank,
            "malformed_samples": st.malformed_samples,
            "first_time": iso(st.first_time),
            "last_time": iso(st.last_time),
        }
        totals.update({"lines": st.lines, "requests": st.requests, "malformed_lines": st.malformed,
                       "other_lines": other, "recognised_lines": st.recognised,
                       "unrecognised_lines": st.unrecognised})
        if st.first_time and (first_time is None or st.first_time < first_time):
            first_time = st.first_time
        if st.last_time and (last_time is None or st.last_time > last_time):
            last_time = st.last_time
    notes = [
        f"gin access-log times carry no zone; they were read as {tz_label} (use --tz to change). "
        "gin prints the time a response finished, so long streams appear at their end.",
        XFF_NOTE,
    ]
    if any(st.malformed for st in analysis.stats.values()):
        notes.append("Some lines looked like access-log lines but could not be parsed; see stats.")
    for name, st in analysis.stats.items():
        if st.unrecognised:
            notes.append(f"{name}: {st.unrecognised} of {st.lines} lines are not Ollama log output and were "
                         "skipped (stats.sources: unrecognised_lines).")
    stats = {
        "sources": per_source,
        "totals": dict(totals),
        "time_range": {"first": iso(first_time), "last": iso(last_time)},
        "since": iso(since),
        "timezone": tz_label,
        "fast_path": analysis.fast,
        "server_configs": engine.configs[-10:],
        "versions": engine.versions,
        "crashes": engine.crashes,
        "timeline_clients_omitted": omitted,
    }
    summary = {
        "sources": sources,
        "lines": totals["lines"],
        "requests": totals["requests"],
        "malformed_lines": totals["malformed_lines"],
        "unrecognised_lines": totals["unrecognised_lines"],
        "clients": len(engine.tallies),
        "untrusted_clients": sum(
            1 for t in engine.tallies.values() if t.client_class not in (LOOPBACK, TRUSTED)
        ),
        "findings": len(findings),
        "by_severity": {s.value: sum(1 for f in findings if f.severity == s) for s in Severity},
        "time_range": stats["time_range"],
    }
    sections = [
        ReportSection(
            lead=True,  # an incident report reads summary, then the timeline, then the findings
            title="Timeline per client",
            columns=["Client", "Class", "First seen", "Last seen", "Requests", "Endpoints", "Statuses",
                     "Pushed", "Rules"],
            rows=[
                [
                    row["client"] or "(empty)",
                    row["client_class"],
                    row["first_seen"] or "",
                    row["last_seen"] or "",
                    str(row["requests"]),
                    _top(Counter(row["endpoints"]), 4),
                    " ".join(f"{k}×{v}" for k, v in row["statuses"].items()),
                    _human_bytes(row["pushed_bytes_approx"]) if row["pushed_bytes_approx"] else "",
                    ", ".join(row["rules"]),
                ]
                for row in timeline[:200]
            ],
            svg=timeline_chart(list(engine.tallies.values()), findings),
        ),
        ReportSection(
            title="Indicators of compromise",
            columns=["Type", "Value", "First seen", "Last seen", "Requests", "Severity", "Rules"],
            rows=[[i["type"], i["value"], i["first_seen"] or "", i["last_seen"] or "",
                   str(i.get("requests", i.get("count", ""))), i["severity"], ", ".join(i["rules"])]
                  for i in iocs],
        ),
        ReportSection(
            title="Recommended actions",
            columns=["Severity", "Rule", "Action"],
            rows=[[a["severity"], a["rule"], a["action"]] for a in actions],
        ),
        ReportSection(
            title="Parse statistics",
            columns=["Source", "Lines", "Requests", "Malformed", "Other", "Unrecognised", "First", "Last"],
            rows=[[name, str(s["lines"]), str(s["requests"]), str(s["malformed_lines"]),
                   str(s["other_lines"]), str(s["unrecognised_lines"]), s["first_time"] or "",
                   s["last_time"] or ""]
                  for name, s in per_source.items()],
        ),
    ]
    if affected_models:
        sections.insert(2, ReportSection(title="Affected models", columns=["Model", "Rules"],
                                         rows=[[m, ", ".join(r)] for m, r in affected_models.items()]))
    finished = datetime.now(UTC)
    provenance = {**(provenance or {}), "finished_at": iso(finished)} if provenance is not None else None
    sections.append(custody_section(analysis.custody))
    if provenance is not None:
        sections.append(provenance_section(provenance))
    return Report(
        command="investigate",
        findings=findings,
        summary=summary,
        sections=sections,
        data={
            "timeline": timeline,
            "iocs": iocs,
            "affected_models": affected_models,
            "recommended_actions": actions,
            "stats": stats,
            "notes": notes,
            "custody": analysis.custody,
            **({"provenance": provenance} if provenance is not None else {}),
        },
        started_at=started_at,
        finished_at=finished,
    )
