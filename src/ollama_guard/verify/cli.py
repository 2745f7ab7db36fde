"""`ollama-guard verify`: integrity of an Ollama model store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ollama_guard.cli_common import emit_report, note, report_options
from ollama_guard.console import progress
from ollama_guard.errors import InputError
from ollama_guard.findings import Report, ReportSection
from ollama_guard.paths import default_models_dir
from ollama_guard.verify.baseline import load_baseline, resolve_key, save_baseline
from ollama_guard.verify.engine import VerifyResult, run_verify


@click.command("verify")
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Ollama's model store (default: $OLLAMA_MODELS, else ~/.ollama/models).",
)
@click.option(
    "--save-baseline",
    "save_to",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a signed baseline of the store (models, layers, blob stats) to FILE.",
)
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Compare with a signed baseline (model-added/-removed/-changed); refuses a tampered one.",
)
@click.option(
    "--baseline-key",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File holding the HMAC key for baselines (default: $OLLAMA_GUARD_BASELINE_KEY, else "
    "<data dir>/verify-baseline.key, created 0600 on first save).",
)
@click.option(
    "--changed-only",
    is_flag=True,
    help="With --baseline: re-hash only blobs whose size/mtime/ctime/inode changed since the baseline.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Threads hashing blobs in parallel (default: CPU count, 2-8).",
)
@report_options
def verify(
    models_dir: Path | None,
    save_to: Path | None,
    baseline_path: Path | None,
    baseline_key: Path | None,
    changed_only: bool,
    workers: int | None,
    fmt: str | None,
    output: tuple[Path, ...],
    fail_on: str,
) -> None:
    """Check the integrity of an Ollama model store.

    Every blob is hashed and compared with its name, every manifest is parsed and cross-checked, GGUF
    headers are validated (bounded reader, never loads tensors), chat templates and system prompts are
    scanned for poisoning, and with --baseline the store is compared with a signed earlier state.
    """
    root = models_dir if models_dir is not None else default_models_dir()
    if not root.exists():
        raise InputError(f"models directory {root} does not exist")
    if not root.is_dir():
        raise InputError(f"models directory {root} is not a directory")
    try:
        next(root.iterdir(), None)
    except OSError as exc:
        raise InputError(f"cannot read models directory {root}: {exc.strerror or exc}") from None
    if not (root / "manifests").exists() and not (root / "blobs").exists():
        hint = f"; did you mean {root / 'models'}?" if (root / "models" / "manifests").is_dir() else ""
        raise InputError(f"{root} is not an Ollama model store (no manifests/ or blobs/ directory){hint}")
    if changed_only and baseline_path is None:
        raise InputError("--changed-only needs --baseline FILE (the blob stats to compare with)")

    previous = None
    key = None
    if baseline_path is not None or save_to is not None:
        key = resolve_key(baseline_key, create=save_to is not None)
    if baseline_path is not None:
        assert key is not None
        previous = load_baseline(baseline_path, key)

    report = Report(command="verify")
    with progress(fmt, unit="bytes") as bar:
        task = bar.add_task("Hashing blobs", total=None)
        result = run_verify(
            root,
            workers=workers,
            previous=previous,
            changed_only=changed_only,
            on_total=lambda total: bar.update(task, total=total),
            on_bytes=lambda n: bar.advance(task, n),
        )
    if save_to is not None:
        assert key is not None
        save_baseline(result.snapshot, save_to, key)
        note(f"wrote baseline {save_to}")  # on stderr, whatever the report's format; -q silences it
    _fill_report(report, result, baseline_path, save_to, changed_only)
    ctx = click.get_current_context()
    ctx.exit(emit_report(report, fmt, output, fail_on))


def _fill_report(
    report: Report, result: VerifyResult, baseline_path: Path | None, save_to: Path | None, changed_only: bool
) -> None:
    report.findings = result.findings
    report.finished_at = datetime.now(UTC)
    stats = result.stats.as_dict()
    report.summary = {"models_dir": str(result.root), **stats}
    if baseline_path is not None:
        report.summary["baseline"] = str(baseline_path)
        report.summary["changed_only"] = changed_only
    if save_to is not None:
        report.summary["baseline_saved"] = str(save_to)
    models = []
    rows = []
    for model in sorted(result.inventory.models, key=lambda m: m.name.canonical()):
        size = model.manifest.total_size()
        models.append(
            {
                "name": model.name.display(),
                "manifest": str(model.path),
                "manifest_sha256": model.manifest_sha256,
                "size": size,
                "layers": [
                    {"media_type": lay.mediaType, "digest": lay.digest, "size": lay.size}
                    for lay in model.manifest.all_layers()
                ],
            }
        )
        rows.append(
            [
                model.name.display(),
                model.name.host,
                str(len(model.manifest.all_layers())),
                _human(size),
                model.manifest_sha256[:12],
            ]
        )
    report.data = {"models_dir": str(result.root), "models": models, "stats": stats}
    if rows:
        report.sections.append(
            ReportSection(
                title="Models", columns=["model", "registry", "layers", "size", "manifest sha256"], rows=rows
            )
        )
    report.sections.append(
        ReportSection(
            title="Verification",
            columns=["blobs", "hashed", "skipped (unchanged)", "bytes hashed", "GGUF headers", "seconds"],
            rows=[
                [
                    str(stats["blobs"]),
                    str(stats["blobs_hashed"]),
                    str(stats["blobs_skipped"]),
                    _human(stats["bytes_hashed"]),
                    str(stats["gguf_inspected"]),
                    f"{stats['seconds']:.2f}",
                ]
            ],
        )
    )


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
