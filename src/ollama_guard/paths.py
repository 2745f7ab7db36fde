"""Where ollama-guard keeps its own state (gateway database, secrets) and where Ollama keeps its models."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """$OLLAMA_GUARD_HOME, else $XDG_DATA_HOME/ollama-guard, else ~/.local/share/ollama-guard."""
    explicit = os.environ.get("OLLAMA_GUARD_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "ollama-guard"


def default_models_dir() -> Path:
    """Ollama's own default: $OLLAMA_MODELS, else ~/.ollama/models."""
    explicit = os.environ.get("OLLAMA_MODELS")
    if explicit:
        return Path(explicit).expanduser()
    return Path.home() / ".ollama" / "models"
