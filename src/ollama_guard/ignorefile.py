"""Accepted findings (``.ollama-guard-ignore``) and the ``--severity`` filter, applied to a report before
it is rendered.

The ignore file has one entry per line (``#`` starts a comment)::

    # RULE           TARGET (glob)    EXPIRES      REASON
    exposed-bind     10.0.0.7:*       2027-01-31   lab box, port closed at the edge firewall (CHG-1234)
    CVE-2024-37032   *                never        air-gapped; upgrade scheduled with the OS image

RULE and TARGET are globs where only ``*`` (any text) and ``?`` (one character) are special, so
``[::1]:11434`` means itself; a TARGET with spaces is written in double quotes. EXPIRES is a date
(the entry applies through that day, UTC) or ``never``; an expired entry no longer applies and is
reported on stderr, so an acceptance cannot outlive its review silently. A REASON is required.
Ignored findings leave the report and the exit code; the summary counts them, the JSON report lists
them under ``ignored`` (each finding with its ``ignored`` reason, expiry and entry) and SARIF keeps them
as suppressed results (``suppressions``: external, accepted, with the reason), as code scanning expects.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollama_guard.errors import InputError
from ollama_guard.findings import ReportSection

if TYPE_CHECKING:
    from ollama_guard.cli_common import ReportSettings
    from ollama_guard.findings import Finding, Report

DEFAULT_NAME = ".ollama-guard-ignore"
MAX_BYTES = 1 << 20
_LINE = re.compile(
    r'^(?P<rule>\S+)\s+(?P<target>"(?:[^"\\]|\\.)*"|\S+)\s+(?P<expires>\S+)\s+(?P<reason>\S.*)$'
)


@dataclass(frozen=True)
class IgnoreEntry:
    rule: str
    target: str
    expires: date | None  # None: never
    reason: str
    source: str  # "FILE:LINE"

    def expired(self, today: date) -> bool:
        return self.expires is not None and today > self.expires

    def matches(self, finding: Finding) -> bool:
        return _glob(self.rule).fullmatch(finding.rule) is not None and (
            _glob(self.target).fullmatch(finding.target) is not None
        )


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), re.DOTALL)


def parse_ignore_file(path: Path) -> list[IgnoreEntry]:
    """The entries of an ignore file; a malformed line is an error naming the file and line."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read ignore file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise InputError(f"ignore file {path} is larger than {MAX_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"ignore file {path} is not UTF-8 text") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{number}"
        match = _LINE.match(stripped)
        if match is None:
            raise InputError(f"{where}: expected RULE TARGET EXPIRES REASON (e.g. 'exposed-bind 10.0.0.7:* "
                             "2027-01-31 firewalled lab box'), got {stripped[:80]!r}")
        target = match["target"]
        if target.startswith('"'):
            target = re.sub(r"\\(.)", r"\1", target[1:-1])
        expires_text = match["expires"]
        expires: date | None = None
        if expires_text.lower() != "never":
            try:
                expires = date.fromisoformat(expires_text)
            except ValueError:
                raise InputError(f"{where}: bad expiry {expires_text!r} (use YYYY-MM-DD or never)") from None
        reason = match["reason"].strip()
        entries.append(IgnoreEntry(match["rule"], target, expires, reason, where))
    return entries


def ignore_entries(
    settings: ReportSettings, cwd: Path | None = None
) -> tuple[Path | None, list[IgnoreEntry]]:
    """The ignore file in force (--ignore-file, else ./.ollama-guard-ignore when present) and its entries."""
    path = settings.ignore_file
    if path is None:
        default = cwd / DEFAULT_NAME if cwd is not None else Path(DEFAULT_NAME)  # named as the user knows it
        if not default.is_file():
            return None, []
        path = default
    return path, parse_ignore_file(path)


def apply_filters(
    report: Report,
    settings: ReportSettings,
    *,
    warn: Callable[[str], None],
    today: date | None = None,
) -> Report:
    """A copy of `report` without accepted findings and severities left out by --severity; the summary
    says how many of each were left out. `report` itself is not changed."""
    path, entries = ignore_entries(settings)
    day = today or datetime.now(UTC).date()
    active = []
    for entry in entries:
        if entry.expired(day):
            warn(f"warning: {entry.source}: the acceptance of {entry.rule} on {entry.target} expired on "
                 f"{entry.expires}; it no longer applies")
        else:
            active.append(entry)
    if path is None and settings.severities is None:
        return report
    kept: list[Finding] = []
    ignored: list[dict[str, Any]] = []
    hidden = 0
    left_out: set[tuple[str, str, str, str]] = set()  # (rule, target, title, severity) of what was left out
    for finding in report.findings:
        entry = next((e for e in active if e.matches(finding)), None)
        if entry is not None or (
            settings.severities is not None and finding.severity.value not in settings.severities
        ):
            left_out.add((finding.rule, finding.target, finding.title, finding.severity.value))
        if entry is not None:
            acceptance = {
                "reason": entry.reason,
                "expires": entry.expires.isoformat() if entry.expires else "never",
                "entry": entry.source,
            }
            ignored.append({**finding.to_json(), "ignored": acceptance})
        elif settings.severities is not None and finding.severity.value not in settings.severities:
            hidden += 1
        else:
            kept.append(finding)
    summary = dict(report.summary)
    data = {key: _without(value, left_out) for key, value in report.data.items()}
    sections = list(report.sections)
    if path is not None:
        summary["ignored"] = len(ignored)
        data.setdefault("ignored", ignored)
        if ignored:  # a report handed on shows the accepted risks too, and why they were accepted
            sections.append(ReportSection(
                title=f"Accepted findings ({path.name})",
                columns=["Severity", "Rule", "Target", "Title", "Reason", "Expires"],
                rows=[[i["severity"], i["rule"], i["target"], i["title"], i["ignored"]["reason"],
                       i["ignored"]["expires"]] for i in ignored],
            ))
    if settings.severities is not None:
        summary["severity_filter"] = settings.severity_text
        summary["not_shown"] = hidden
    changes = {"findings": kept, "summary": summary, "data": data, "sections": sections}
    return report.model_copy(update=changes)


def _without(value: Any, left_out: set[tuple[str, str, str, str]]) -> Any:
    """A command's data with the left-out findings removed from its per-item finding lists (scan's
    ``hosts[].findings``), so the JSON report agrees with itself."""
    if not left_out or not isinstance(value, list):
        return value
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("findings"), list):
            item = {**item, "findings": [
                f for f in item["findings"]
                if not (isinstance(f, dict)
                        and (f.get("rule"), f.get("target"), f.get("title"), f.get("severity")) in left_out)
            ]}
        out.append(item)
    return out
