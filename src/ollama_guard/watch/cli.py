"""`ollama-guard watch`: the investigate rules, live, on Ollama's logs and the gateway audit log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ollama_guard.errors import InputError

if TYPE_CHECKING:
    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.watch.respond import Banner, Recorder


def _window(value: str, what: str) -> float:
    from ollama_guard.investigate.rules import parse_window

    try:
        seconds = parse_window(value)
    except ValueError:
        raise InputError(f"bad {what} {value!r} (use e.g. 90s, 10m, 1h)") from None
    if seconds <= 0:
        raise InputError(f"bad {what} {value!r}: must be more than 0")
    return seconds


@click.command("watch")
@click.argument("logfiles", nargs=-1, metavar="[LOGFILE]...")
@click.option("--journal", "unit", is_flag=False, flag_value="ollama", default=None, metavar="[UNIT]",
              help="Follow a systemd unit's journal (journalctl -f -o json; default unit: ollama).")
@click.option("--docker", "container", metavar="CONTAINER", help="Follow `docker logs -f -t CONTAINER`.")
@click.option("--audit-db", metavar="URL", help="Follow the gateway's audit log (sqlite:///PATH or postgresql://…).")
@click.option("--alert", "alerts", multiple=True, metavar="DEST",
              help="Where alerts go: '-' (JSON lines on stdout, the default), http(s)://… (POST), "
                   "syslog://HOST:PORT (RFC 5424, UDP) or syslog+tcp://HOST:PORT. Repeatable.")
@click.option("--alert-format", "alert_format", type=click.Choice(["json", "slack", "teams"]), default="json",
              show_default=True, help="Body of webhook POSTs: the alert JSON, or a Slack / Teams message.")
@click.option("--ban", is_flag=True,
              help="Ban the attacking address of high/critical alerts in the gateway database.")
@click.option("--db", metavar="URL",
              help="Gateway database: alerts are kept there for the console; --ban bans there.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Gateway config file: its db, trusted_proxies and ban_allowlist are used by --ban.")
@click.option("--ban-minutes", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="N", help="How long --ban bans.")
@click.option("--trusted", multiple=True, metavar="CIDR",
              help="A network whose clients are yours (like loopback). Repeatable.")
@click.option("--from-start", is_flag=True, help="Read what the sources already hold first, then follow.")
@click.option("--once", is_flag=True, help="Read what the sources hold now, alert, and exit (cron, CI).")
@click.option("--tz", "tz_name", default="local", show_default=True, metavar="ZONE",
              help="Zone of the server's local time in gin access lines (local, UTC, +02:00, Europe/Paris).")
@click.option("--dedup", default="10m", show_default=True, metavar="WINDOW",
              help="One alert per rule and client within this window (escalations are sent at once).")
@click.option("--min-severity", default="low", show_default=True,
              type=click.Choice(["critical", "high", "medium", "low", "info"]),
              help="Alert only on findings at or above this severity.")
@click.option("--fail-on", default="high", show_default=True, metavar="SEVERITY|never",
              help="With --once: exit 1 when an alert at or above this severity was raised.")
@click.pass_context
def watch(ctx: click.Context, logfiles: tuple[str, ...], unit: str | None, container: str | None,
          audit_db: str | None, alerts: tuple[str, ...], alert_format: str, ban: bool, db: str | None,
          config_file: Path | None, ban_minutes: float, trusted: tuple[str, ...],
          from_start: bool, once: bool, tz_name: str, dedup: str, min_severity: str, fail_on: str) -> None:
    """Follow Ollama's logs and the gateway audit log; alert on signs of attack as they happen.

    LOGFILE: Ollama server logs, followed like `tail -F` (rotation, truncation, a file that appears
    later). Runs the same rules as `investigate`.
    """
    from ollama_guard.findings import Severity
    from ollama_guard.investigate.cli import _check_cidrs
    from ollama_guard.investigate.events import ClientClassifier
    from ollama_guard.investigate.rules import load_rules
    from ollama_guard.ollama.logformat import parse_tz
    from ollama_guard.watch.alerts import Alerter
    from ollama_guard.watch.auditdb import AuditFollower
    from ollama_guard.watch.children import docker_follower, journal_follower
    from ollama_guard.watch.destinations import parse_destination
    from ollama_guard.watch.follow import FileFollower
    from ollama_guard.watch.pipeline import Pipeline
    from ollama_guard.watch.runner import Watch, source_name

    if not logfiles and unit is None and container is None and audit_db is None:
        raise click.UsageError("give log files, --journal [UNIT], --docker CONTAINER or --audit-db URL",
                               ctx=ctx)
    fail_rank = None if fail_on.strip().lower() == "never" else Severity.parse(fail_on).rank
    try:
        tz = parse_tz(tz_name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    window = _window(dedup, "--dedup")
    classifier = ClientClassifier(_check_cidrs(trusted))
    destinations = [parse_destination(spec, alert_format) for spec in (alerts or ("-",))]

    paths = [Path(arg) for arg in logfiles]
    files = []
    for path in paths:
        if str(path) == "-":
            raise InputError("watch follows files; pipe a log into `investigate -` instead")
        if path.is_dir():
            raise InputError(f"{path} is a directory (give the log files inside it)")
        files.append((source_name(path, paths), FileFollower(path, from_start=from_start or once)))
    children = []
    if unit is not None:
        children.append(journal_follower(unit, from_start))
    if container is not None:
        children.append(docker_follower(container, from_start))
    audit = AuditFollower(audit_db, from_start=from_start) if audit_db else None

    alerter = Alerter(window, Severity.parse(min_severity))
    pipeline = Pipeline(load_rules(), classifier, tz, alerter, lambda _a: None)
    job = Watch(pipeline, files=files, children=children, audit=audit, destinations=destinations)
    if db or config_file:  # alerts are kept in the gateway database too (the console shows them)
        job.responders.append(_recorder(db, config_file))
    if ban:
        job.responders.append(_banner(db, config_file, audit_db, ban_minutes, classifier))
    if once:
        asyncio.run(job.once())
        worst = pipeline.worst
        if fail_rank is not None and worst is not None and Severity(worst["severity"]).rank >= fail_rank:
            ctx.exit(1)
        ctx.exit(0)
    asyncio.run(job.follow())
    ctx.exit(0)


def _recorder(db: str | None, config_file: Path | None) -> Recorder:
    from ollama_guard.gateway.keys_cli import require_database, resolve_config
    from ollama_guard.watch.respond import Recorder
    from ollama_guard.watch.runner import notice

    config = resolve_config(config_file, db)
    require_database(config)
    return Recorder(config.db, notice)


def _banner(db: str | None, config_file: Path | None, audit_db: str | None, minutes: float,
            classifier: ClientClassifier) -> Banner:
    from ollama_guard.gateway.keys_cli import require_database, resolve_config
    from ollama_guard.watch.respond import Banner
    from ollama_guard.watch.runner import notice

    if db is None and config_file is None:
        if audit_db is None:
            raise InputError("--ban needs the gateway database: --db URL (or --config FILE)")
        db = audit_db
    config = resolve_config(config_file, db)
    require_database(config)
    exempt = [*config.ban_allowlist, *config.trusted_proxies]
    return Banner(config.db, minutes, classifier, exempt, notice)
