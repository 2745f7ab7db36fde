"""The gateway's web console (``/-/console``): overview, keys, audit log and bans for admin keys."""

from ollama_guard.gateway.console.app import ConsoleApp, ConsoleDeps
from ollama_guard.gateway.console.health import probe

__all__ = ["ConsoleApp", "ConsoleDeps", "probe"]
