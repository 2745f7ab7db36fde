"""The parts of the incident report that make it something to hand on: the timeline chart, the
chain of custody and the provenance of the report (each as report data and as a section people read)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ollama_guard.findings import Finding, ReportSection, Severity
from ollama_guard.investigate.chart import MAX_ROWS, Marker, Row, Window, timeline_svg
from ollama_guard.investigate.engine import ClientTally


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def chart_inputs(tallies: list[ClientTally], findings: list[Finding]) -> tuple[list[Row], list[Marker], int]:
    """Rows for the clients with findings (earliest attack first), then the busiest others; markers for
    findings about the server (crashes, configuration); how many clients are left out."""
    windows: dict[str, list[Window]] = {}
    markers: list[Marker] = []
    for f in findings:
        ev = f.evidence
        if "client" in ev:
            start, end = _time(ev.get("first_seen")), _time(ev.get("last_seen"))
            if start is not None and end is not None:
                windows.setdefault(ev["client"], []).append(Window(f.rule, f.severity.value, start, end))
        else:
            at = _time(ev.get("first") or ev.get("last"))
            if at is not None:
                markers.append(Marker(f.rule, f.severity.value, at, f.title))
    attacked = sorted((t for t in tallies if t.client in windows),
                      key=lambda t: (min(w.start for w in windows[t.client]), t.client))
    others = sorted((t for t in tallies if t.client not in windows), key=lambda t: (-t.requests, t.client))
    chosen = (attacked + others)[:MAX_ROWS]
    rows = [Row(t.client, t.client_class, t.per_minute,
                sorted(windows.get(t.client, []), key=lambda w: (w.start, -Severity(w.severity).rank)))
            for t in chosen]
    return rows, markers, len(tallies) - len(chosen)


def timeline_chart(tallies: list[ClientTally], findings: list[Finding], *, standalone: bool = False) -> str:
    rows, markers, omitted = chart_inputs(tallies, findings)
    return timeline_svg(rows, markers, omitted=omitted, standalone=standalone)


def _size(n: Any) -> str:
    return "" if n is None else f"{n:,} B"


def custody_section(custody: list[dict[str, Any]]) -> ReportSection:
    return ReportSection(
        title="Chain of custody",
        columns=["Source", "Where", "Size", "SHA-256", "First", "Last", "Lines", "Recognised", "Note"],
        rows=[[
            rec["source"],
            rec.get("path") or rec.get("location") or rec.get("command") or rec["kind"],
            _size(rec.get("size")),
            rec.get("sha256") or "",
            rec.get("first_time") or "",
            rec.get("last_time") or "",
            str(rec.get("lines", 0)),
            str(rec.get("recognised_lines", 0)),
            _custody_note(rec),
        ] for rec in custody],
    )


def _custody_note(rec: dict[str, Any]) -> str:
    notes = [f"hash of {rec.get('hashed')}"] if rec.get("hashed") else []
    if rec.get("changed_while_read"):
        notes.append(f"CHANGED while it was read (was {rec.get('file_size')} bytes, modified "
                     f"{rec.get('modified')}): the hash covers the bytes analysed")
    elif rec.get("modified"):
        notes.append(f"modified {rec['modified']}")
    if not rec.get("complete"):
        why = f" ({rec['error']})" if rec.get("error") else ""
        notes.append(f"INCOMPLETE: not every byte was hashed{why}")
    return "; ".join(notes)


def provenance_section(provenance: dict[str, Any]) -> ReportSection:
    labels = [("version", "Tool version"), ("command_line", "Command line (credentials redacted)"),
              ("working_directory", "Working directory"), ("user", "Run by"), ("host", "On host"),
              ("platform", "Platform"), ("python", "Python"), ("started_at", "Started"),
              ("finished_at", "Finished")]
    rows = [[label, f"ollama-guard {provenance[key]}" if key == "version" else str(provenance.get(key) or "")]
            for key, label in labels if key in provenance]
    return ReportSection(title="Provenance", columns=["Field", "Value"], rows=rows)
