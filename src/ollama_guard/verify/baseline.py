"""Signed baselines of a model store: what models existed, which layers they were made of, and the stat
fields of every blob (so `--changed-only` can skip re-hashing blobs that were not touched).

The file is JSON with an HMAC-SHA256 signature over its canonical form (sorted keys, compact separators,
the `signature` member left out). Like Tripwire's signed database, this means someone who can rewrite
model files cannot also rewrite the baseline to match — as long as they cannot read the key.

Key, first match wins: `--baseline-key FILE` (the file's content, surrounding whitespace stripped), the
environment variable OLLAMA_GUARD_BASELINE_KEY (its value), or `<data dir>/verify-baseline.key`, which is
created (32 random bytes, hex, mode 0600, directory 0700) the first time a baseline is saved. The baseline
stores only a key id (a hash of the key), never the key.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ollama_guard import __version__
from ollama_guard.errors import InputError
from ollama_guard.findings import Finding, Severity
from ollama_guard.paths import data_dir

KEY_ENV = "OLLAMA_GUARD_BASELINE_KEY"
KEY_FILE_NAME = "verify-baseline.key"
BASELINE_FORMAT = "ollama-guard/verify-baseline"
BASELINE_VERSION = 1
SIGNATURE_ALGORITHM = "HMAC-SHA256"
MAX_BASELINE_BYTES = 256 * 1024 * 1024


class LayerRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    media_type: str
    digest: str
    size: int


class TextRecord(BaseModel):
    """A template/system/params/messages layer: its digest and the start of its text."""

    model_config = ConfigDict(extra="forbid")

    digest: str
    excerpt: str


class ModelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    manifest_sha256: str
    layers: list[LayerRecord]
    texts: dict[str, TextRecord] = Field(default_factory=dict)
    gguf: dict[str, dict[str, Any]] = Field(default_factory=dict)


class BlobRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    verified: bool  # content matched the file name when the baseline was taken


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = BASELINE_FORMAT
    version: int = BASELINE_VERSION
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    tool_version: str = __version__
    models_dir: str
    key_id: str = ""
    models: dict[str, ModelRecord] = Field(default_factory=dict)
    blobs: dict[str, BlobRecord] = Field(default_factory=dict)


# --- key -----------------------------------------------------------------------------------------------


def default_key_path() -> Path:
    return data_dir() / KEY_FILE_NAME


def resolve_key(key_file: Path | None, *, create: bool) -> bytes:
    """The signing key (see the module docstring for the order). `create` allows making the default file."""
    if key_file is not None:
        return _read_key(key_file)
    from_env = os.environ.get(KEY_ENV, "").strip()
    if from_env:
        return from_env.encode("utf-8")
    path = default_key_path()
    if path.exists():
        return _read_key(path)
    if not create:
        raise InputError(
            f"no baseline key: {path} does not exist (pass --baseline-key FILE or set {KEY_ENV})"
        )
    return _create_key(path)


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise InputError(f"cannot read baseline key {path}: {exc.strerror or exc}") from None
    if len(key) < 16:
        raise InputError(f"baseline key {path} is empty or shorter than 16 bytes")
    return key


def _create_key(path: Path) -> bytes:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_hex(32).encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key + b"\n")
    except FileExistsError:  # created concurrently: use that one
        return _read_key(path)
    except OSError as exc:
        raise InputError(f"cannot create baseline key {path}: {exc.strerror or exc}") from None
    return key


def key_id(key: bytes) -> str:
    """Identifies a key without revealing it."""
    return hashlib.sha256(b"ollama-guard baseline key id\x00" + key).hexdigest()[:16]


# --- signing -------------------------------------------------------------------------------------------


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _sign(body: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def save_baseline(baseline: Baseline, path: Path, key: bytes) -> None:
    """Write the signed baseline atomically (mode 0600: it lists the store's content)."""
    baseline.key_id = key_id(key)
    body = baseline.model_dump(mode="json")
    document = {**body, "signature": {"algorithm": SIGNATURE_ALGORITHM, "value": _sign(body, key)}}
    text = json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"cannot write baseline {path}: {exc.strerror or exc}") from None


def load_baseline(path: Path, key: bytes) -> Baseline:
    """Read and authenticate a baseline; InputError (one line) if it is unreadable, malformed or unsigned,
    or if its signature does not match the key."""
    try:
        if path.stat().st_size > MAX_BASELINE_BYTES:
            raise InputError(f"baseline {path} is malformed: larger than {MAX_BASELINE_BYTES} bytes")
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"baseline {path} is malformed: not JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != BASELINE_FORMAT:
        raise InputError(f"baseline {path} is malformed: not an ollama-guard verify baseline")
    signature = document.pop("signature", None)
    if not isinstance(signature, dict) or not isinstance(signature.get("value"), str):
        raise InputError(f"baseline {path} is not signed; refusing to use it")
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        raise InputError(f"baseline {path} uses an unsupported signature algorithm; refusing to use it")
    if not hmac.compare_digest(signature["value"], _sign(document, key)):
        hint = ""
        if document.get("key_id") and document.get("key_id") != key_id(key):
            hint = " (it was signed with a different key)"
        raise InputError(
            f"baseline {path} failed its signature check{hint}: it was modified or the key is wrong"
        )
    if document.get("version") != BASELINE_VERSION:
        raise InputError(f"baseline {path} has unsupported version {document.get('version')!r}")
    try:
        return Baseline.model_validate(document)
    except ValidationError as exc:
        raise InputError(f"baseline {path} is malformed: {exc.errors()[0].get('msg')}") from None


# --- comparing -----------------------------------------------------------------------------------------

# Which layers matter most when they change (weights and prompt-shaping layers).
_PROMPT_ROLES = ("template", "prompt", "system", "messages", "params")


def compare(old: Baseline, new: Baseline) -> list[Finding]:
    """model-added / model-removed / model-changed between a trusted baseline and the current store."""
    findings: list[Finding] = []
    for key in sorted(new.models.keys() - old.models.keys()):
        record = new.models[key]
        findings.append(
            Finding(
                rule="model-added",
                severity=Severity.MEDIUM,
                target=record.name,
                title=f"Model {record.name} is new since the baseline",
                detail=f"{record.name} was not in the baseline of {old.created_at}. Models can be created or "
                "pulled by anyone who can reach the Ollama API (no authentication).",
                evidence={
                    "manifest_sha256": record.manifest_sha256,
                    "baseline_created_at": old.created_at,
                    "layers": [f"{lay.role} {lay.digest}" for lay in record.layers],
                },
                remediation="If you did not add it, remove it (`ollama rm`) and restrict API access; if you "
                "did, save a new baseline.",
            )
        )
    for key in sorted(old.models.keys() - new.models.keys()):
        record = old.models[key]
        findings.append(
            Finding(
                rule="model-removed",
                severity=Severity.MEDIUM,
                target=record.name,
                title=f"Model {record.name} was removed since the baseline",
                detail=f"{record.name} was in the baseline of {old.created_at} and is gone (DELETE "
                "/api/delete needs "
                "no authentication on a plain Ollama).",
                evidence={"manifest_sha256": record.manifest_sha256, "baseline_created_at": old.created_at},
                remediation="If nobody removed it on purpose, check the Ollama logs for DELETE /api/delete "
                f"and re-pull it (`ollama pull {record.name}`); otherwise save a new baseline.",
            )
        )
    for key in sorted(old.models.keys() & new.models.keys()):
        before, after = old.models[key], new.models[key]
        if before.manifest_sha256 == after.manifest_sha256:
            continue
        changes = _layer_changes(before, after)
        roles = [c["layer"] for c in changes] or ["manifest"]
        summary = (
            ", ".join(f"{c['layer']} {_short(c['old'])} → {_short(c['new'])}" for c in changes[:4])
            or "manifest metadata only"
        )
        findings.append(
            Finding(
                rule="model-changed",
                severity=Severity.HIGH,
                target=after.name,
                title=f"Model {after.name} changed since the baseline: {', '.join(roles)}",
                detail=f"The manifest of {after.name} now points to different content ({summary}). A tag "
                "silently re-pointed to new weights, template or system prompt is how a model is backdoored "
                "(POST /api/create over an existing name).",
                evidence={
                    "changes": changes,
                    "old_manifest_sha256": before.manifest_sha256,
                    "new_manifest_sha256": after.manifest_sha256,
                    "baseline_created_at": old.created_at,
                },
                remediation="If the change was not an intended `ollama pull`/`create`, restore the model "
                "from a "
                "trusted source; if it was, save a new baseline.",
            )
        )
    return findings


def _layer_changes(before: ModelRecord, after: ModelRecord) -> list[dict[str, Any]]:
    def by_role(record: ModelRecord) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for layer in record.layers:
            out.setdefault(layer.role, []).append(layer.digest)
        return out

    old_roles, new_roles = by_role(before), by_role(after)
    changes: list[dict[str, Any]] = []
    for role in sorted(old_roles.keys() | new_roles.keys(), key=_role_order):
        old_d, new_d = old_roles.get(role, []), new_roles.get(role, [])
        if old_d == new_d:
            continue
        change: dict[str, Any] = {
            "layer": role,
            "old": old_d[0] if len(old_d) == 1 else (old_d or None),
            "new": new_d[0] if len(new_d) == 1 else (new_d or None),
        }
        if role in before.texts or role in after.texts:
            change["old_text"] = before.texts[role].excerpt if role in before.texts else None
            change["new_text"] = after.texts[role].excerpt if role in after.texts else None
        changes.append(change)
    return changes


def _role_order(role: str) -> tuple[int, str]:
    order = ["model", "template", "prompt", "system", "messages", "params", "adapter", "projector", "config"]
    return (order.index(role) if role in order else len(order), role)


def _short(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return f"[{len(value)} layers]"
    text = str(value)
    return text[:19] + "…" if text.startswith("sha256:") else text
