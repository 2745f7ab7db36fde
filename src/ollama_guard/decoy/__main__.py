"""`python -m ollama_guard.decoy …`: the decoy command on its own (same options as `ollama-guard decoy`),
without loading the other commands — what the test helpers start."""

from __future__ import annotations

from ollama_guard.cli import run
from ollama_guard.decoy.cli import decoy


def main() -> None:
    run(decoy, None, "ollama-guard decoy")


if __name__ == "__main__":
    main()
