"""The check registry: metadata (checks.toml, shipped data) joined to one function per check id."""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from ollama_guard.findings import Finding, Severity

if TYPE_CHECKING:
    from ollama_guard.audit.context import AuditContext
    from ollama_guard.audit.fixes import Fix


@dataclass(frozen=True)
class CheckMeta:
    id: str
    title: str
    severity: Severity
    rationale: str
    impact: str
    reads: tuple[str, ...]
    references: tuple[str, ...]


@dataclass
class Outcome:
    """A finding plus the fixes that make it go away (harden writes those as files)."""

    finding: Finding
    fixes: list[Fix] = field(default_factory=list)


CheckFunc = Callable[["AuditContext"], Iterable[Outcome]]


@dataclass(frozen=True)
class Check:
    meta: CheckMeta
    run: CheckFunc


@functools.cache
def load_metadata() -> dict[str, CheckMeta]:
    text = resources.files("ollama_guard.audit").joinpath("checks.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    return {
        cid: CheckMeta(
            id=cid,
            title=entry["title"],
            severity=Severity(entry["severity"]),
            rationale=" ".join(entry["rationale"].split()),
            impact=" ".join(entry["impact"].split()),
            reads=tuple(entry.get("reads", [])),
            references=tuple(entry.get("references", [])),
        )
        for cid, entry in data.items()
    }


_REGISTRY: dict[str, Check] = {}


def check(check_id: str) -> Callable[[CheckFunc], CheckFunc]:
    """Register the function that runs check `check_id` (its metadata must exist in checks.toml)."""

    def register(func: CheckFunc) -> CheckFunc:
        meta = load_metadata().get(check_id)
        if meta is None:
            raise RuntimeError(f"audit check {check_id!r} has no entry in checks.toml")
        if check_id in _REGISTRY:
            raise RuntimeError(f"audit check {check_id!r} registered twice")
        _REGISTRY[check_id] = Check(meta, func)
        return func

    return register


def all_checks() -> list[Check]:
    """Every registered check, in checks.toml order (imports the check modules)."""
    from ollama_guard.audit import checks  # noqa: F401 - importing registers the checks

    order = list(load_metadata())
    missing = [cid for cid in order if cid not in _REGISTRY]
    if missing:
        raise RuntimeError(f"audit checks without code: {', '.join(missing)}")
    return [_REGISTRY[cid] for cid in order]
