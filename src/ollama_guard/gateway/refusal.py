"""The one exception every stage raises to answer a request itself (never forwarded to Ollama)."""

from __future__ import annotations


class Refusal(Exception):
    """A request the gateway answers itself: HTTP status, client message, audit reason."""

    def __init__(self, status: int, message: str, reason: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.retry_after = retry_after
