"""`ollama-guard rules export`: the detection rules of `investigate` and `watch`, for other tools."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ollama_guard.errors import InputError


@click.group("rules")
def rules() -> None:
    """The detection rules that investigate and watch run."""


@rules.command("export")
@click.option("--format", "fmt", type=click.Choice(["sigma", "json"]), required=True,
              help="sigma: a Sigma rule collection per detection (pySigma, sigma-cli); json: our own rules.")
@click.option("-o", "--output", "outdir", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="DIR", help="Directory to write (created if missing; files of the same name replaced).")
def export(fmt: str, outdir: Path) -> None:
    """Write one file per detection rule to DIR."""
    from ollama_guard.investigate.rules import load_rules

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {outdir}: {exc.strerror or exc}") from None
    written = 0
    for rule in load_rules():
        if fmt == "sigma":
            from ollama_guard.investigate.sigma import sigma_yaml

            name, text = f"{rule.id}.yml", sigma_yaml(rule)
        else:
            name = f"{rule.id}.json"
            text = json.dumps(rule.model_dump(mode="json", exclude_defaults=True), indent=2) + "\n"
        try:
            (outdir / name).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {outdir / name}: {exc.strerror or exc}") from None
        written += 1
    click.echo(f"wrote {written} {fmt} rule file(s) to {outdir}", err=True)
