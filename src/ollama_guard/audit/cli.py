"""`ollama-guard audit` (does this host expose Ollama?) and `ollama-guard harden` (the fix, as files)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ollama_guard.audit.collect import AuditOptions
from ollama_guard.cli_common import emit_report, report_options
from ollama_guard.errors import InputError


def _options(
    root: Path | None,
    models_dirs: tuple[str, ...],
    compose_files: tuple[Path, ...],
    ollama_version: str | None,
) -> AuditOptions:
    if root is not None and not root.exists():
        raise InputError(f"--root {root}: no such directory")
    if root is not None and not root.is_dir():
        raise InputError(f"--root {root}: not a directory")
    for path in compose_files:
        if not path.is_file():
            raise InputError(f"--compose {path}: no such file")
    if ollama_version is not None:
        from ollama_guard.ollama.versions import InvalidVersion, parse_version

        try:
            parse_version(ollama_version)
        except InvalidVersion:
            raise InputError(f"--ollama-version {ollama_version!r} is not an Ollama version") from None
    return AuditOptions(
        root=root,
        models_dirs=list(models_dirs),
        compose_files=list(compose_files),
        ollama_version=ollama_version,
    )


def _common(func):  # type: ignore[no-untyped-def]
    func = click.option(
        "--ollama-version",
        metavar="V",
        default=None,
        help="Judge this Ollama version (e.g. for an offline root where no binary can be asked).",
    )(func)
    func = click.option(
        "--compose",
        "compose_files",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="Also read this Compose file (repeatable; a path on this machine).",
    )(func)
    func = click.option(
        "--models-dir",
        "models_dirs",
        multiple=True,
        metavar="DIR",
        help="Also check this model store (repeatable; inside --root when one is given).",
    )(func)
    func = click.option(
        "--root",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Audit a mounted filesystem or unpacked image: read every path under DIR, ask nothing live.",
    )(func)
    return func


@click.command("audit")
@_common
@click.option(
    "--fix-plan",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write the hardening plan (as `harden --out DIR` does) into DIR.",
)
@report_options
def audit(
    root: Path | None,
    models_dirs: tuple[str, ...],
    compose_files: tuple[Path, ...],
    ollama_version: str | None,
    fix_plan: Path | None,
    fmt: str | None,
    output: tuple[Path, ...],
    fail_on: str,
) -> None:
    """Check this host (or --root DIR) for an exposed or weakly configured Ollama.

    Reads systemd units and drop-ins, /etc/environment, /etc/default/ollama, launchd plists, Compose
    files, and (live only) running processes, listening sockets, Docker and the local API version.
    Every finding carries its evidence and the exact lines that fix it.
    """
    from ollama_guard.audit.harden import prepare_out_dir, write_plan
    from ollama_guard.audit.runner import run_audit

    options = _options(root, models_dirs, compose_files, ollama_version)
    if fix_plan is not None:
        prepare_out_dir(fix_plan, root, force=False)
    result = run_audit(options)
    if fix_plan is not None:
        plan = write_plan(result, fix_plan)
        click.echo(f"ollama-guard: hardening plan written to {plan.out / 'plan.md'}", err=True)
    sys.exit(emit_report(result.report, fmt, output, fail_on))


@click.command("harden")
@_common
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory to write the plan and files into (created; must be empty unless --force).",
)
@click.option("--force", is_flag=True, help="Write into --out even if it is not empty.")
def harden(
    root: Path | None,
    models_dirs: tuple[str, ...],
    compose_files: tuple[Path, ...],
    ollama_version: str | None,
    out: Path,
    force: bool,
) -> None:
    """Write the fixes for this host's audit findings as files to review (nothing is applied).

    Produces systemd drop-ins binding Ollama to 127.0.0.1, Compose overrides publishing on loopback,
    corrected copies of env files, a gateway config and unit, the command that creates the first admin
    key, firewall rules, and plan.md describing each step and its impact.
    """
    from ollama_guard.audit.harden import prepare_out_dir, write_plan
    from ollama_guard.audit.runner import run_audit

    options = _options(root, models_dirs, compose_files, ollama_version)
    prepare_out_dir(out, root, force)
    result = run_audit(options)
    plan = write_plan(result, out)
    click.echo(f"Audit: {len(result.report.findings)} findings; posture {result.context.posture.value}.")
    for path in plan.written:
        click.echo(f"  wrote {path}")
    click.echo(f"Review {out / 'plan.md'}; nothing has been applied.")
