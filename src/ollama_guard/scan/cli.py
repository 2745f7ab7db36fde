"""`ollama-guard scan`: find Ollama and other self-hosted AI servers and assess them, read-only."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ollama_guard.cli_common import emit_report, report_options
from ollama_guard.console import progress
from ollama_guard.findings import Report, ReportSection
from ollama_guard.scan.defaults import DEFAULT_CONCURRENCY, DEFAULT_PER_HOST, DEFAULT_TIMEOUT

if TYPE_CHECKING:  # the engine pulls in aiohttp: imported when a scan runs, not for --help
    from ollama_guard.scan.engine import ScanStats
    from ollama_guard.scan.host import HostResult

INTERRUPTED_EXIT = 130


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """click's FloatRange lets nan (and, without an upper bound, inf) through: refuse them."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _run_async(make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when it is installed (faster connect phase), else the default loop."""
    factory = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(make())


def _sort_key(result: HostResult) -> tuple[int, int, int]:
    try:
        ip = ipaddress.ip_address(result.target.host)
        return (ip.version, int(ip), result.target.port)
    except ValueError:
        return (9, 0, result.target.port)


def port_ranges(ports: tuple[int, ...]) -> str:
    """`(80, 8000, 8001, 8002, 11434)` → `"80,8000-8002,11434"` (compact for the summary)."""
    parts: list[str] = []
    ordered = sorted(set(ports))
    index = 0
    while index < len(ordered):
        end = index
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        first, last = ordered[index], ordered[end]
        parts.append(str(first) if first == last else f"{first}-{last}")
        index = end + 1
    return ",".join(parts)


def build_report(
    results: list[HostResult],
    stats: ScanStats,
    targets_total: int | None,
    started_at: datetime,
    ports: tuple[int, ...],
) -> Report:
    """The scan Report: hosts with a service in `data["hosts"]`, all their findings in `findings`."""
    listed = sorted((r for r in results if r.service is not None), key=_sort_key)
    findings = [f for r in listed for f in r.findings]
    services: dict[str, int] = {}
    auth: dict[str, int] = {}
    for r in listed:
        assert r.service is not None
        services[r.service] = services.get(r.service, 0) + 1
        auth[r.auth] = auth.get(r.auth, 0) + 1
    report = Report(command="scan", findings=findings, started_at=started_at)
    report.finished_at = datetime.now(UTC)
    report.summary = {
        "targets": targets_total,
        "ports": port_ranges(ports),
        "attempted": stats.attempted,
        "open": stats.open,
        "hosts": len(listed),
        "services": services,
        "auth": auth,
        "unresolved": stats.unresolved,
        "interrupted": stats.interrupted,
        "duration_seconds": round((report.finished_at - started_at).total_seconds(), 3),
    }
    report.data = {
        "hosts": [r.to_json() for r in listed],
    }
    report.sections = [
        ReportSection(
            lead=True,  # which hosts were found, before what is wrong with each
            title="Hosts",
            columns=["Target", "Service", "Version", "Auth", "Models", "Findings"],
            rows=[
                [
                    r.display_name,
                    r.service or "",
                    r.version or (r.version_evidence or "")[:9],
                    r.auth,
                    ", ".join(r.models[:5]) + (f" (+{len(r.models) - 5})" if len(r.models) > 5 else ""),
                    str(len(r.findings)),
                ]
                for r in listed
            ],
        )
    ]
    return report


@click.command("scan")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option(
    "-iL",
    "--input-list",
    "input_files",
    multiple=True,
    metavar="FILE",
    help="Read targets from FILE ('-' for stdin): one per line with # comments, or masscan "
    "-oL/-oJ/-oX/-oG and nmap -oX/-oG output (detected from the content).",
)
@click.option(
    "--ports",
    default="11434",
    show_default=True,
    help="Ports to try on targets without one: list and ranges (11434,8000-8010); 'ai' adds the default "
    "ports of every AI server we recognise.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 65535),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Simultaneous TCP connects.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, None),
    default=0,
    show_default=True,
    callback=_finite,
    help="Connections per second (0 = unlimited).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.05, 300),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    callback=_finite,
    help="Seconds for a TCP connect and for each HTTP probe.",
)
@click.option(
    "--per-host",
    type=click.IntRange(1, 64),
    default=DEFAULT_PER_HOST,
    show_default=True,
    help="Simultaneous connections to one address.",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="TARGETS",
    help="Never touch these addresses, CIDRs, ranges or names (comma-separated; repeatable).",
)
@report_options
@click.pass_context
def scan(
    ctx: click.Context,
    targets: tuple[str, ...],
    input_files: tuple[str, ...],
    ports: str,
    concurrency: int,
    rate: float,
    timeout: float,
    per_host: int,
    exclude: tuple[str, ...],
    fmt: str | None,
    output: tuple[Path, ...],
    fail_on: str,
) -> None:
    """Find Ollama (and other self-hosted AI servers) and assess each one without changing anything.

    TARGET is an IP, hostname, CIDR (10.0.0.0/24), range (10.0.0.1-10.0.0.50 or 10.0.0.1-50), host:port,
    [v6]:port or an http(s):// URL. Only GET/HEAD/OPTIONS probes and Ollama's read-only POST /api/show are
    sent: never pull, push, create, copy, delete, blob uploads, account calls or inference.

    Ctrl-C stops the scan and still writes the report of the hosts assessed so far (exit code 130).
    """
    from ollama_guard.scan.engine import Scanner, ScanSettings
    from ollama_guard.scan.targets import Exclusions, TargetSet, parse_ports

    port_list = parse_ports(ports)
    exclusions = Exclusions(exclude)
    target_set = TargetSet(targets, files=input_files, ports=port_list, exclusions=exclusions)
    settings = ScanSettings(concurrency=concurrency, rate=rate, timeout=timeout, per_host=per_host)
    started_at = datetime.now(UTC)
    total = target_set.count()
    results: list[HostResult] = []
    scanner = Scanner(target_set, settings, exclusions)

    with progress(fmt) as bar:
        task = bar.add_task("scanning", total=total)

        async def run() -> None:
            async def tick() -> None:
                while True:
                    bar.update(task, completed=scanner.stats.attempted)
                    await asyncio.sleep(0.1)

            ticker = asyncio.create_task(tick())
            try:
                async for result in scanner.results():
                    if result.service is not None:  # only hosts with a service are reported
                        result.compact()
                        results.append(result)
            finally:
                ticker.cancel()
                bar.update(task, completed=scanner.stats.attempted)

        try:
            _run_async(run)
        except KeyboardInterrupt:
            scanner.stats.interrupted = True

    report = build_report(results, scanner.stats, total, started_at, port_list)
    code = emit_report(report, fmt, output, fail_on)
    if scanner.stats.unresolved:
        names = ", ".join(sorted(set(scanner.stats.unresolved)))
        click.echo(f"ollama-guard: warning: could not resolve {names} (not scanned)", err=True)
    if scanner.stats.interrupted:
        click.echo(
            f"ollama-guard: scan interrupted; reported the {len(report.data['hosts'])} host(s) found so far",
            err=True,
        )
        sys.exit(INTERRUPTED_EXIT)
    ctx.exit(code)
