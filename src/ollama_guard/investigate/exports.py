"""The files `investigate` writes besides the report: the timeline chart as SVG, the indicators of
compromise as CSV and as a STIX 2.1 bundle. Written like the reports (mode 0600: they hold evidence)."""

from __future__ import annotations

import json
from pathlib import Path

from ollama_guard.cli_common import current_settings, write_private
from ollama_guard.findings import Report
from ollama_guard.investigate.analyze import Analysis
from ollama_guard.investigate.handover import timeline_chart
from ollama_guard.investigate.iocs import iocs_csv, stix_bundle


def write_exports(report: Report, analysis: Analysis, *, svg: Path | None, iocs: Path | None,
                  stix: Path | None) -> None:
    written: list[str] = []
    if svg is not None:
        drawing = timeline_chart(list(analysis.engine.tallies.values()), report.findings, standalone=True)
        write_private(svg, drawing or _EMPTY_SVG)
        written.append(str(svg))
    indicators = report.data.get("iocs", [])
    if iocs is not None:
        write_private(iocs, iocs_csv(indicators))
        written.append(f"{iocs} ({len(indicators)} indicators)")
    if stix is not None:
        bundle = stix_bundle(indicators, report.sorted_findings(), custody=report.data.get("custody", []),
                             provenance=report.data.get("provenance", {}),
                             created=report.finished_at or report.started_at)
        write_private(stix, json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
        written.append(f"{stix} ({len(bundle['objects'])} STIX objects)")
    if written and not current_settings().quiet:
        import click

        click.echo(f"ollama-guard: wrote {', '.join(written)}", err=True)


_EMPTY_SVG = ('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
              'class="timeline-chart" width="600" height="40"><text x="10" y="24">No timestamped '
              "requests to draw.</text></svg>\n")
