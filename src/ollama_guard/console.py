"""Terminal output helpers: progress bars that appear only on a terminal and never in machine formats."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stderr_console = Console(stderr=True)


class _NullProgress:
    """Stands in for rich's Progress when nothing should be drawn."""

    def add_task(self, description: str, total: float | None = None, **_: Any) -> int:
        return 0

    def update(self, task_id: int, **_: Any) -> None:
        return None

    def advance(self, task_id: int, advance: float = 1) -> None:
        return None


def wants_progress(fmt: str | None) -> bool:
    """Progress is drawn only for human output on an interactive stderr."""
    return fmt in (None, "table") and stderr_console.is_terminal


@contextmanager
def progress(fmt: str | None, transient: bool = True) -> Iterator[Progress | _NullProgress]:
    if not wants_progress(fmt):
        yield _NullProgress()
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console,
        transient=transient,
    )
    with bar:
        yield bar


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
