"""Where ollama-guard keeps its own state (gateway database, secrets) and where Ollama keeps its models."""

from __future__ import annotations

import os
from pathlib import Path

from ollama_guard.errors import GuardError


def _home(variable: str) -> Path:
    """The user's home directory, or a clear error naming the variable that avoids needing one."""
    try:
        return Path.home()
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry (e.g. a container's arbitrary uid)
        raise GuardError(f"cannot determine a home directory; set {variable}") from None


def data_dir() -> Path:
    """$OLLAMA_GUARD_HOME, else $XDG_DATA_HOME/ollama-guard, else ~/.local/share/ollama-guard."""
    explicit = os.environ.get("OLLAMA_GUARD_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else _home("OLLAMA_GUARD_HOME") / ".local" / "share"
    return base / "ollama-guard"


def default_models_dir() -> Path:
    """Ollama's own default: $OLLAMA_MODELS, else ~/.ollama/models."""
    explicit = os.environ.get("OLLAMA_MODELS")
    if explicit:
        return Path(explicit).expanduser()
    return _home("OLLAMA_MODELS") / ".ollama" / "models"
