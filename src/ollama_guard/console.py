"""Terminal output helpers: progress bars that appear only on a terminal and never in machine formats.

Bars go to stderr, are transient (gone when the job ends) and are drawn only when stderr is a terminal and
the command was not given -q; --no-color (or NO_COLOR) draws them without colour. They never touch
stdout, so a report printed there (or written with -o) is the same with or without them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

stderr_console = Console(stderr=True)


class _NullProgress:
    """Stands in for rich's Progress when nothing should be drawn."""

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        return 0

    def update(self, task_id: int, **_: Any) -> None:
        return None

    def advance(self, task_id: int, advance: float = 1) -> None:
        return None


def _settings() -> Any:
    from ollama_guard.cli_common import current_settings

    return current_settings()


def wants_progress(fmt: str | None = None) -> bool:
    """Progress is drawn on an interactive stderr unless -q was given (whatever the report's format:
    the bar is on stderr and gone before the report is printed)."""
    return stderr_console.is_terminal and not _settings().quiet


def _columns(unit: str) -> list[ProgressColumn]:
    head: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn()]
    if unit == "bytes":
        return [*head, DownloadColumn(binary_units=True), TransferSpeedColumn(), TimeElapsedColumn()]
    if unit == "lines":
        return [*head, TextColumn("{task.completed:,.0f} lines"), TimeElapsedColumn()]
    return [*head, MofNCompleteColumn(), TimeElapsedColumn()]


@contextmanager
def progress(
    fmt: str | None = None, transient: bool = True, unit: str = "items"
) -> Iterator[Progress | _NullProgress]:
    """A progress bar on stderr (see the module docstring); `unit` is items, bytes or lines."""
    if not wants_progress(fmt):
        yield _NullProgress()
        return
    console = Console(stderr=True, no_color=not _settings().color or None)
    bar = Progress(*_columns(unit), console=console, transient=transient)
    with bar:
        yield bar


def per_source(bar: Progress | _NullProgress, task: int) -> Callable[[str, int], None]:
    """A callback for ``(source name, lines read in it so far)`` that shows the source being read and the
    lines read in all sources."""
    done: dict[str, int] = {}

    def update(name: str, lines: int) -> None:
        done[name] = lines
        bar.update(task, description=f"reading {name}", completed=sum(done.values()))

    return update


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
