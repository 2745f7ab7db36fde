"""ollama-guard: find, fix and watch Ollama deployments."""

__version__ = "0.1.0"
