"""API keys: the record, the key format, validation, management and the request-path check.

- ``keys.model``: ``ApiKey`` (a key's public record) and ``Role``.
- ``keys.tokens``: the ``og_<key id>_<secret>`` format and its HMAC-SHA256 hashing.
- ``keys.validation``: names, model patterns and limits a key may be given.
- ``keys.rows``: stored rows → records (damaged rows refuse their key), the in-memory snapshot.
- ``keys.store``: ``KeyStore`` — create, list, revoke, rotate, update.
- ``keys.poller``: ``KeySnapshotPoller`` — the snapshot kept fresh from a background thread.
- ``keys.authenticator``: ``KeyAuthenticator`` — the request-path check against the snapshot.

Everything that was importable from ``ollama_guard.gateway.keys`` still is.
"""

from ollama_guard.gateway.keys.authenticator import KeyAuthenticator, NegativeCache
from ollama_guard.gateway.keys.model import ApiKey, KeyNotFound, Role
from ollama_guard.gateway.keys.poller import KeySnapshotPoller
from ollama_guard.gateway.keys.rows import row_to_key
from ollama_guard.gateway.keys.store import KeyStore
from ollama_guard.gateway.keys.tokens import KEY_PREFIX, key_version, looks_like_key, parse_token
from ollama_guard.gateway.keys.validation import (
    ALL_MODELS,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    validate_model_pattern,
    validate_name,
    validate_patterns,
)

__all__ = [
    "ALL_MODELS",
    "KEY_PREFIX",
    "MAX_PATTERNS",
    "MAX_PATTERN_LENGTH",
    "ApiKey",
    "KeyAuthenticator",
    "KeyNotFound",
    "KeySnapshotPoller",
    "KeyStore",
    "NegativeCache",
    "Role",
    "key_version",
    "looks_like_key",
    "parse_token",
    "row_to_key",
    "validate_model_pattern",
    "validate_name",
    "validate_patterns",
]
