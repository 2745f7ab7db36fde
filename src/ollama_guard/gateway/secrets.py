"""The server secret: the key behind the keyed hash of API keys and the audit log's MACs.

Where it comes from, first match wins:

1. ``OLLAMA_GUARD_SECRET`` (at least 32 characters) — give every replica the same value;
2. ``config.secret_file``;
3. ``secret.key`` next to a SQLite database given as ``config.db`` (so ``--db sqlite:///x/guard.db``
   keeps its secret in ``x/``);
4. ``<data dir>/secret.key``.

A file is created on first use (64 hex characters from ``secrets``, mode 0600, created atomically so
two processes starting together agree) and refused if group or others may read or write it. The
secret is the file's text (stripped), so ``OLLAMA_GUARD_SECRET=$(cat secret.key)`` gives the same
secret to another host.

The raw secret is never used directly: ``derive_key`` gives each purpose its own key (key hashing,
audit MACs), so one cannot be turned against the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from ollama_guard.errors import GuardError
from ollama_guard.paths import data_dir

ENV_SECRET = "OLLAMA_GUARD_SECRET"  # noqa: S105 - a variable name, not a secret
MIN_SECRET_CHARS = 32
SECRET_FILE_NAME = "secret.key"  # noqa: S105 - a file name

PURPOSE_KEY_HASH = b"ollama-guard api-key hash v1"
PURPOSE_AUDIT_MAC = b"ollama-guard audit mac v1"
PURPOSE_FINGERPRINT = b"ollama-guard secret fingerprint v1"


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A per-purpose key: HMAC-SHA256(secret, purpose)."""
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def secret_fingerprint(secret: bytes) -> str:
    """A short public identifier of the secret (reveals nothing about it); stored in the database."""
    return derive_key(secret, PURPOSE_FINGERPRINT).hex()[:16]


def secret_file_path(config: Any = None) -> Path:
    """The secret file this configuration uses (whether or not it exists yet)."""
    explicit = getattr(config, "secret_file", None) if config is not None else None
    if explicit:
        return Path(explicit).expanduser()
    db = getattr(config, "db", None) if config is not None else None
    if db:
        from ollama_guard.gateway.db import sqlite_path

        path = sqlite_path(str(db))
        if path:
            return Path(path).expanduser().parent / SECRET_FILE_NAME
    return data_dir() / SECRET_FILE_NAME


def _check_text(text: str, where: str) -> bytes:
    value = text.strip()
    if len(value) < MIN_SECRET_CHARS:
        raise GuardError(f"{where} holds a secret shorter than {MIN_SECRET_CHARS} characters")
    return value.encode("utf-8")


def _read_secret_file(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise GuardError(f"cannot read secret file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise GuardError(f"secret file {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise GuardError(
                f"secret file {path} is accessible to group or others (mode {mode:04o}); "
                f"run: chmod 600 {path}"
            )
        with os.fdopen(fd, "r", encoding="utf-8", closefd=False) as handle:
            text = handle.read(4096)
    except UnicodeDecodeError:
        raise GuardError(f"secret file {path} is not text") from None
    finally:
        os.close(fd)
    return _check_text(text, f"secret file {path}")


def _create_secret_file(path: Path) -> None:
    """Write a new secret to ``path`` unless it exists; atomic (temp file + hard link)."""
    hint = f"make it writable, or point secret_file, {ENV_SECRET} or OLLAMA_GUARD_HOME elsewhere"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise GuardError(
            f"cannot create directory {path.parent} for the server secret: {exc.strerror or exc} ({hint})"
        ) from None
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race; use its secret
    except OSError as exc:
        raise GuardError(
            f"cannot create the server secret {path}: {exc.strerror or exc} (in {path.parent}: {hint})"
        ) from None
    finally:
        try:
            temp.unlink()
        except OSError:  # never created (e.g. a read-only directory), or already gone
            pass


def load_server_secret(config: Any = None, *, create: bool = True) -> bytes:
    """The server secret as bytes (see module doc for where it comes from). Raises GuardError.

    ``create=False`` (for read-only commands such as ``logs verify``) refuses to make a new secret.
    """
    from_env = os.environ.get(ENV_SECRET)
    if from_env is not None:
        return _check_text(from_env, f"environment variable {ENV_SECRET}")
    path = secret_file_path(config)
    if not path.exists() and not path.is_symlink():
        if not create:
            raise GuardError(f"no server secret at {path} (set secret_file or {ENV_SECRET})")
        _create_secret_file(path)
    return _read_secret_file(path)
