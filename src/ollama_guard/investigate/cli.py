"""`ollama-guard investigate`: signs of attack in Ollama's logs and the gateway's audit log."""

from __future__ import annotations

import ipaddress
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ollama_guard.cli_common import current_settings, emit_report, report_options
from ollama_guard.errors import InputError

if TYPE_CHECKING:
    from ollama_guard.investigate.analyze import Analysis

# The analysis modules (numpy, pydantic rule models, …) are imported inside the command, not here:
# `investigate --help` and a usage error answer without paying for them.


def parse_since(value: str, tz: tzinfo, now: datetime | None = None) -> datetime:
    """``2024-08-19``, ``2024-08-19T14:00``, ``2024-08-19 14:00:00+02:00`` (no zone → --tz), or a
    duration back from now: ``90m``, ``24h``, ``7d``."""
    from ollama_guard.investigate.rules import parse_window

    text = value.strip()
    try:
        return (now or datetime.now(UTC)) - timedelta(seconds=parse_window(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"bad --since {value!r}: use a date/time like 2024-08-19T14:00 or a duration like 24h"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def _check_cidrs(values: tuple[str, ...]) -> list[str]:
    out = []
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise InputError(f"bad --trusted network {value!r} (expected a CIDR like 10.0.0.0/8)") from None
        out.append(value)
    return out


def _lines(n: int, what: str = "line") -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def check_recognised(analysis: Analysis, names: list[str], since: datetime | None) -> None:
    """Refuse input in which no Ollama log line was recognised (empty, binary, plain text, an empty
    journal: "No findings" would be a lie); on a terminal, say how much of each source was not."""
    stats = {name: analysis.stats.get(name) for name in names}
    if not any(st is not None and st.recognised for st in stats.values()):
        parts = []
        for name, st in stats.items():
            read = st.lines if st is not None else 0
            parts.append(f"{name} ({_lines(read, 'record' if name == 'audit-db' else 'line')} read)")
        window = f" since {since.isoformat()}" if since is not None else ""
        raise InputError(f"no Ollama log line recognised{window} in {', '.join(parts)} "
                         "(expected Ollama's server log or the gateway's audit log)")
    if sys.stderr is None or not sys.stderr.isatty() or current_settings().quiet:
        return
    for name, st in stats.items():
        if st is not None and st.unrecognised:
            share = 100.0 * st.unrecognised / st.lines
            click.echo(f"ollama-guard: note: {name}: {_lines(st.unrecognised)} of {st.lines:,} "
                       f"({share:.1f} %) are not Ollama log output and were skipped", err=True)


_OUT = click.Path(dir_okay=False, writable=True, path_type=Path)


@click.command("investigate")
@click.argument("logfiles", nargs=-1, metavar="[LOGFILE]...")
@click.option("--journal", is_flag=True, help="Read the ollama unit's journal (journalctl -u ollama).")
@click.option("--docker", "container", metavar="CONTAINER", help="Read `docker logs -t CONTAINER`.")
@click.option("--audit-db", metavar="URL", help="Also read the gateway's audit log (sqlite:///PATH or postgresql://…).")
@click.option("--since", metavar="TIME", help="Only activity from TIME on (ISO date/time, or 24h, 7d, …).")
@click.option("--trusted", multiple=True, metavar="CIDR",
              help="A network whose clients are yours (like loopback). Repeatable.")
@click.option("--tz", "tz_name", default="UTC", show_default=True, metavar="ZONE",
              help="Zone of the server's local time in gin access lines (UTC, local, +02:00, Europe/Paris).")
@click.option("--untrusted-loopback", is_flag=True,
              help="Treat loopback clients as remote (a reverse proxy on this host makes every client "
                   "127.0.0.1).")
@click.option("--timeline-svg", "svg_out", type=_OUT, metavar="FILE",
              help="Also write the timeline chart (requests per client, attack windows) as an SVG file.")
@click.option("--iocs", "iocs_out", type=_OUT, metavar="FILE",
              help="Also write the indicators of compromise as CSV.")
@click.option("--stix", "stix_out", type=_OUT, metavar="FILE",
              help="Also write the indicators of compromise as a STIX 2.1 bundle (JSON).")
@report_options
@click.pass_context
def investigate(
    ctx: click.Context,
    logfiles: tuple[str, ...],
    journal: bool,
    container: str | None,
    audit_db: str | None,
    since: str | None,
    trusted: tuple[str, ...],
    tz_name: str,
    untrusted_loopback: bool,
    svg_out: Path | None,
    iocs_out: Path | None,
    stix_out: Path | None,
    fmt: str | None,
    output: tuple[Path, ...],
    fail_on: str,
) -> None:
    """Find signs of attack in Ollama server logs and the gateway audit log; write an incident report.

    LOGFILE: Ollama server logs (plain, gzip-rotated, journald-prefixed, `docker logs -t`, with or
    without colours); `-` reads standard input. With no source at all, standard input is read when it
    is not a terminal.
    """
    started = datetime.now(UTC)
    from ollama_guard.investigate.analyze import analyze
    from ollama_guard.investigate.custody import provenance
    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.investigate.exports import write_exports
    from ollama_guard.investigate.report import build_report
    from ollama_guard.investigate.rules import load_rules
    from ollama_guard.investigate.sources import (
        TextSource,
        docker_source,
        file_source,
        journal_source,
        sort_by_first_time,
    )
    from ollama_guard.ollama.logformat import parse_tz

    try:
        tz = parse_tz(tz_name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    since_at = parse_since(since, tz) if since else None
    classifier = ClientClassifier(_check_cidrs(trusted), untrusted_loopback=untrusted_loopback)

    sources: list[TextSource] = [file_source(arg) for arg in logfiles]
    if sum(1 for s in sources if s.stdin) > 1:
        raise InputError("'-' (standard input) can be given only once")
    names = [s.name for s in sources]
    for src in sources:  # two "server.log" from different directories: name them by path
        if src.path is not None and names.count(src.name) > 1:
            src.name = str(src.path)
    sources = sort_by_first_time(sources)
    if journal:
        sources.append(journal_source(since_at))
    if container:
        sources.append(docker_source(container))
    if not sources and not audit_db:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError(
                "give log files, '-', --journal, --docker CONTAINER or --audit-db URL "
                "(or pipe a log into standard input)",
                ctx=ctx,
            )
        sources.append(file_source("-"))

    from ollama_guard.console import per_source, progress

    with progress(fmt, unit="lines") as bar:  # a terminal shows the source being read and the lines so far
        analysis = analyze(sources, audit_db, rules=load_rules(), classifier=classifier, tz=tz,
                           since=since_at, on_progress=per_source(bar, bar.add_task("reading", total=None)))
    names = [s.name for s in sources] + (["audit-db"] if audit_db else [])
    check_recognised(analysis, names, since_at)
    report = build_report(analysis, sources=names, tz_label=tz_name if tz_name else "UTC", since=since_at,
                          started_at=started, provenance=provenance(started))
    write_exports(report, analysis, svg=svg_out, iocs=iocs_out, stix=stix_out)
    ctx.exit(emit_report(report, fmt, output, fail_on))
