"""Run `ollama-guard` in-process through its real entry point, as a user would (errors → exit codes)."""

from __future__ import annotations

import pytest

from ollama_guard.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `ollama-guard ARGV`."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0 if code is None else 2), out, err
