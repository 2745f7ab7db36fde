"""Defaults of `ollama-guard scan`, importable without the engine's dependencies (aiohttp)."""

DEFAULT_CONCURRENCY = 1024  # TCP connects in flight
DEFAULT_TIMEOUT = 2.0  # seconds, for a connect and for each HTTP probe
DEFAULT_PER_HOST = 4  # simultaneous connections to one address
