"""One verify run: inventory → hash blobs → inspect GGUF headers and prompt-shaping layers → compare with a
baseline. Produces the findings and a fresh (unsigned) baseline snapshot of the store."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ollama_guard.findings import Finding, Severity
from ollama_guard.verify.baseline import Baseline, BlobRecord, LayerRecord, ModelRecord, TextRecord, compare
from ollama_guard.verify.gguf_inspect import GGUFFormatError, GGUFHeader, is_gguf, read_gguf_header
from ollama_guard.verify.hashing import sha256_files
from ollama_guard.verify.inventory import BlobFile, Inventory, media_role, normalize_digest, take_inventory
from ollama_guard.verify.templates import Verdict, check
from ollama_guard.verify.templates.layers import LAYER_KINDS, check_params, messages_text, read_layer

GGUF_ROLES = frozenset({"model", "projector", "adapter", "draft"})
RECORDED_TEXT_ROLES = frozenset({"template", "prompt", "system", "messages", "params"})
MAX_PARAMS_BYTES = 1024 * 1024
EXCERPT_CHARS = 200

REF_POISONED_TEMPLATES = (
    "https://www.pillar.security/blog/llm-backdoors-at-the-inference-level-the-threat-of-poisoned-templates"
)
REF_LLAMA_DRAMA = "https://nvd.nist.gov/vuln/detail/CVE-2024-34359"


@dataclass
class VerifyStats:
    models: int = 0
    blobs: int = 0
    blobs_hashed: int = 0
    blobs_skipped: int = 0
    bytes_hashed: int = 0
    bytes_total: int = 0
    gguf_inspected: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class VerifyResult:
    root: Path
    findings: list[Finding]
    stats: VerifyStats
    snapshot: Baseline
    inventory: Inventory
    gguf: dict[str, GGUFHeader] = field(default_factory=dict)


def run_verify(
    root: Path,
    *,
    workers: int | None = None,
    previous: Baseline | None = None,
    changed_only: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> VerifyResult:
    started = time.perf_counter()
    inv = take_inventory(root)
    findings = list(inv.findings)
    stats = VerifyStats(models=len(inv.models), blobs=len(inv.blobs))
    stats.bytes_total = sum(b.size for b in inv.blobs.values())

    to_hash, skipped = _select_blobs(inv, previous if changed_only else None)
    stats.blobs_skipped = len(skipped)
    if on_total is not None:
        on_total(sum(b.size for b in to_hash))
    hashed = sha256_files([b.path for b in to_hash], workers=workers, on_bytes=on_bytes)
    verified: dict[str, bool] = {d: True for d in skipped}
    for blob in to_hash:
        result = hashed[blob.path]
        stats.blobs_hashed += 1
        stats.bytes_hashed += result.size
        ok = result.sha256 is not None and "sha256:" + result.sha256 == blob.digest
        verified[blob.digest] = ok
        if not ok:
            findings.append(_digest_finding(inv, blob, result.sha256, result.error))

    headers, gguf_findings = _inspect_ggufs(inv)
    stats.gguf_inspected = len(headers) + len(gguf_findings)
    findings += gguf_findings
    texts, text_findings = _inspect_texts(inv)
    findings += text_findings
    for digest, header in headers.items():
        findings += _template_findings(inv, digest, header)

    snapshot = _snapshot(inv, verified, headers, texts)
    if previous is not None:
        findings += compare(previous, snapshot)
    stats.seconds = time.perf_counter() - started
    return VerifyResult(root, findings, stats, snapshot, inv, headers)


def _select_blobs(inv: Inventory, previous: Baseline | None) -> tuple[list[BlobFile], list[str]]:
    """Blobs to hash now; with a baseline, those whose size/mtime/ctime/inode are unchanged and that were
    verified then are skipped (ctime cannot be set back by a user, so `touch -d` does not hide a change)."""
    if previous is None:
        return list(inv.blobs.values()), []
    to_hash: list[BlobFile] = []
    skipped: list[str] = []
    for digest, blob in inv.blobs.items():
        rec = previous.blobs.get(digest)
        if (
            rec is not None
            and rec.verified
            and (rec.size, rec.mtime_ns, rec.ctime_ns, rec.inode)
            == (blob.size, blob.mtime_ns, blob.ctime_ns, blob.inode)
        ):
            skipped.append(digest)
        else:
            to_hash.append(blob)
    return to_hash, skipped


def _users(inv: Inventory, digest: str) -> list[str]:
    return sorted({name for name, _ in inv.references.get(digest, [])})


def _digest_finding(inv: Inventory, blob: BlobFile, actual: str | None, error: str | None) -> Finding:
    users = _users(inv, blob.digest)
    used_by = ", ".join(users) if users else "no model"
    if actual is None:
        return Finding(
            rule="blob-digest-mismatch",
            severity=Severity.MEDIUM,
            target=str(blob.path),
            title=f"Blob {blob.digest[:19]}… could not be verified: {error}",
            detail=f"The blob (used by {used_by}) could not be read, so its content was not checked.",
            evidence={"digest": blob.digest, "error": error, "models": users},
            remediation="Run verify as a user that can read the store (e.g. the ollama user or root).",
        )
    return Finding(
        rule="blob-digest-mismatch",
        severity=Severity.CRITICAL,
        target=str(blob.path),
        title=f"Blob {blob.digest[:19]}… content does not match its name (used by {used_by})",
        detail=f"The file is named after sha256 {blob.digest[7:]} but its content hashes to {actual}. Blobs "
        "are content-addressed and Ollama never rewrites one in place, and it does not re-check a blob once "
        "downloaded: the file was modified after the pull (tampering) or the disk corrupted it.",
        evidence={
            "expected": blob.digest,
            "actual": "sha256:" + actual,
            "size": blob.size,
            "models": users,
            "roles": sorted(
                {media_role(layer.mediaType) for _, layer in inv.references.get(blob.digest, [])}
            ),
        },
        remediation="Do not run the affected models. Find out what wrote the file (its mtime is in the "
        "baseline/stat), delete it and re-pull the models that use it.",
    )


def _inspect_ggufs(inv: Inventory) -> tuple[dict[str, GGUFHeader], list[Finding]]:
    headers: dict[str, GGUFHeader] = {}
    findings: list[Finding] = []
    for digest, blob in inv.blobs.items():
        roles = {media_role(layer.mediaType) for _, layer in inv.references.get(digest, [])}
        expected = bool(roles & GGUF_ROLES)
        if not expected and not is_gguf(blob.path):
            continue
        try:
            headers[digest] = read_gguf_header(blob.path)
        except GGUFFormatError as exc:
            not_gguf = exc.offset == 0 and ("magic" in exc.reason or "not a GGUF" in exc.reason)
            findings.append(
                _malformed(inv, blob, exc.reason, exc.offset, Severity.MEDIUM if not_gguf else Severity.HIGH)
            )
        except OSError as exc:
            findings.append(_malformed(inv, blob, f"unreadable: {exc.strerror}", 0, Severity.MEDIUM))
    return headers, findings


def _malformed(inv: Inventory, blob: BlobFile, reason: str, offset: int, severity: Severity) -> Finding:
    users = _users(inv, blob.digest)
    return Finding(
        rule="malformed-gguf",
        severity=severity,
        target=str(blob.path),
        title=f"GGUF blob {blob.digest[:19]}… is malformed: {reason}",
        detail=f"The model file (used by {', '.join(users) or 'no model'}) fails a structural check of "
        f"its GGUF header at byte {offset}: {reason}. Crafted GGUF headers (absurd counts, lengths past the "
        "end of the file) crash or overflow GGUF parsers (CVE-2024-21802, CVE-2025-53630 and Ollama's loader "
        "bugs); a "
        "truncated file will not load.",
        evidence={
            "digest": blob.digest,
            "reason": reason,
            "offset": offset,
            "size": blob.size,
            "models": users,
        },
        remediation="Do not load it. Delete the model and re-pull it from a trusted source.",
        references=["https://github.com/ggml-org/ggml/blob/master/docs/gguf.md"],
    )


def _inspect_texts(inv: Inventory) -> tuple[dict[str, str], list[Finding]]:
    """Reads every template/system/params/messages layer to the end; checks the prompt-shaping ones."""
    texts: dict[str, str] = {}
    findings: list[Finding] = []
    for digest, refs in inv.references.items():
        roles = {media_role(layer.mediaType) for _, layer in refs} & RECORDED_TEXT_ROLES
        blob = inv.blobs.get(digest)
        if not roles or blob is None:
            continue
        for role in sorted(roles):
            kind = LAYER_KINDS.get(role)
            try:
                if role == "params":
                    text = blob.path.read_bytes()[:MAX_PARAMS_BYTES].decode("utf-8", errors="replace")
                    verdict = check_params(text)
                elif role == "messages":
                    text = blob.path.read_bytes()[:MAX_PARAMS_BYTES].decode("utf-8", errors="replace")
                    verdict = check(messages_text(text), "system")
                elif kind is not None:
                    text, verdict = read_layer(blob.path, kind)
                else:
                    continue
            except OSError:
                continue
            texts.setdefault(digest, text)
            if verdict.evidence:
                findings.append(
                    _template_finding(inv, digest, f"{role} layer {digest[:19]}…", len(text), verdict)
                )
    return texts, findings


def _template_findings(inv: Inventory, digest: str, header: GGUFHeader) -> list[Finding]:
    out: list[Finding] = []
    for key, template in sorted(header.chat_templates.items()):
        verdict = check(template, "jinja")
        if verdict.evidence:
            source = f"{key} in GGUF blob {digest[:19]}…"
            out.append(_template_finding(inv, digest, source, len(template), verdict))
    return out


class _TemplateSubject:
    """What every template finding names: the models using the blob (or the blob), and its facts."""

    def __init__(self, inv: Inventory, digest: str, source: str, length: int, verdict: Verdict) -> None:
        self.users = _users(inv, digest)
        self.target = self.users[0] if len(self.users) == 1 else str(inv.blobs[digest].path)
        self.title = f"{', '.join(self.users) or 'unused blob'}: {source.split(' ')[0]}"
        self._facts = {"source": source, "digest": digest, "models": self.users, "length": length,
                       "family": verdict.family}
        self._verdict = verdict

    def hits(self) -> list[dict[str, Any]]:
        return [dict(e.as_dict(), pattern=e.id, excerpt=e.payload) for e in self._verdict.evidence[:20]]

    def evidence(self, **more: Any) -> dict[str, Any]:
        return {**self._facts, **more}


def _template_finding(inv: Inventory, digest: str, source: str, length: int, verdict: Verdict) -> Finding:
    if {e.id for e in verdict.evidence} == {"known-template"}:
        subject = _TemplateSubject(inv, digest, source, length, verdict)
        return Finding(
            rule="known-template",
            severity=Severity.INFO,
            target=subject.target,
            title=f"{subject.title} is the known {verdict.family} template",
            detail=f"The {source} is {verdict.evidence[0].detail}.",
            evidence=subject.evidence(),
            remediation="Nothing to do.",
        )
    if verdict.severity == Severity.INFO:
        return _notes(inv, digest, source, length, verdict)
    return _suspicious(inv, digest, source, length, verdict)


def _notes(inv: Inventory, digest: str, source: str, length: int, verdict: Verdict) -> Finding:
    """Nothing suspicious, but worth a reviewer's glance: the links and addresses the template puts into the
    prompt (a contact line, a configured identity), guidance added after failed tool calls."""
    subject = _TemplateSubject(inv, digest, source, length, verdict)
    notes = "; ".join(f"{e.id}: {e.detail}" for e in verdict.evidence[:10])
    kinds = ", ".join(sorted({e.id for e in verdict.evidence}))
    return Finding(
        rule="template-notes",
        severity=Severity.INFO,
        target=subject.target,
        title=f"{subject.title} judged clean, with notes ({kinds})",
        detail=f"The {source} shows no sign of poisoning. Noted: {notes}.",
        evidence=subject.evidence(hits=subject.hits()),
        remediation="Nothing to do if the addresses are the publisher's own.",
    )


def _suspicious(inv: Inventory, digest: str, source: str, length: int, verdict: Verdict) -> Finding:
    subject = _TemplateSubject(inv, digest, source, length, verdict)
    worst = verdict.severity or Severity.INFO
    ids = sorted({e.id for e in verdict.evidence})
    first = max(verdict.evidence, key=lambda e: e.severity.rank)
    sandbox = "jinja-sandbox-escape" in ids
    where = f"line {first.line}, column {first.column}"
    trigger = f" Trigger: {first.trigger}." if first.trigger else ""
    payload = f" Text: {first.payload[:300]}" if first.payload else ""
    family = f" Closest known template: {verdict.family}." if verdict.family else ""
    return Finding(
        rule="suspicious-template",
        severity=worst,
        target=subject.target,
        title=f"{subject.title} shows signs of poisoning ({', '.join(ids)})",
        detail=f"The {source} has {len(verdict.evidence)} suspicious spot(s). Worst ({first.id}, {where}): "
        f"{first.detail}.{trigger}{payload}{family}",
        evidence=subject.evidence(diff=verdict.diff[:80], hits=subject.hits()),
        remediation="Read the whole template/prompt (`ollama show --template` / `--system`, or the GGUF "
        "tokenizer.chat_template). Compare it with the publisher's original; if it is not what it should be, "
        "remove the model and re-pull it from a trusted source.",
        references=[REF_POISONED_TEMPLATES] + ([REF_LLAMA_DRAMA] if sandbox else []),
    )


def _snapshot(
    inv: Inventory, verified: dict[str, bool], headers: dict[str, GGUFHeader], texts: dict[str, str]
) -> Baseline:
    snap = Baseline(models_dir=str(inv.root))
    for model in inv.models:
        layers = [
            LayerRecord(
                role=media_role(lay.mediaType),
                media_type=lay.mediaType,
                digest=normalize_digest(lay.digest),
                size=lay.size,
            )
            for lay in model.manifest.all_layers()
        ]
        record = ModelRecord(name=model.name.display(), manifest_sha256=model.manifest_sha256, layers=layers)
        for layer in layers:
            if layer.role in RECORDED_TEXT_ROLES and layer.digest in texts:
                record.texts.setdefault(
                    layer.role, TextRecord(digest=layer.digest, excerpt=texts[layer.digest][:EXCERPT_CHARS])
                )
            header = headers.get(layer.digest)
            if header is not None:
                summary = header.summary()
                for key, template in header.chat_templates.items():
                    summary[key + ".sha256"] = hashlib.sha256(template.encode("utf-8", "replace")).hexdigest()
                record.gguf[layer.digest] = summary
        snap.models[model.name.canonical()] = record
    for digest, blob in inv.blobs.items():
        snap.blobs[digest] = BlobRecord(
            size=blob.size,
            mtime_ns=blob.mtime_ns,
            ctime_ns=blob.ctime_ns,
            inode=blob.inode,
            verified=verified.get(digest, False),
        )
    return snap


__all__ = ["VerifyResult", "VerifyStats", "run_verify"]
