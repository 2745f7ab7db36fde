"""Audit checks; importing this package registers every check with the registry."""

from ollama_guard.audit.checks import cloud, cors, debuglog, network, store, versions

__all__ = ["cloud", "cors", "debuglog", "network", "store", "versions"]
