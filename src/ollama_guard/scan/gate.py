"""The read-only gate every probe passes (``check_probe``): the allowlist, the forbidden routes, the
catalog's word.

A (method, path) pair that is not on the allowlist, or that touches a state-changing, outbound, account or
inference route, raises ``ProbeNotAllowed`` before a byte is sent. The allowlist is GET/OPTIONS of the
fingerprint paths, HEAD of two blob digests that cannot exist, and ``POST /api/show`` (Ollama's read-only
model description, which is a POST). Ollama's endpoint catalog is a second opinion behind both.
"""

from __future__ import annotations

import re

from ollama_guard.errors import GuardError
from ollama_guard.ollama.endpoints import match_endpoint
from ollama_guard.scan.fingerprints import every_probe_key, split_probe

ZERO_DIGEST = "sha256:" + "0" * 64  # well-formed, cannot exist: 404 means the admin handler ran
SHORT_DIGEST = "sha256:00"  # malformed: 400 on Ollama >= 0.1.34 (digest check), 404 on <= 0.1.33
BLOB_PROBE = f"HEAD /api/blobs/{ZERO_DIGEST}"
SHORT_BLOB_PROBE = f"HEAD /api/blobs/{SHORT_DIGEST}"
SHOW_PROBE = "POST /api/show"
# Routes that change state, call out, touch the ollama.com account or spend compute. Never sent, whatever
# the method; checked before the allowlist so a careless data-file edit cannot reach them.
_FORBIDDEN = re.compile(
    r"^/(?:api/(?:pull|push|create|copy|delete|signout|me|user|generate|chat|embed|embeddings|experimental"
    r"|load|unload)(?:/|$)"
    r"|v1/(?:chat|completions|embeddings|responses|messages|audio|images)(?:/|$)"
    r"|(?:prompt|completion|completions|infill|tokenize|detokenize|embedding|embeddings|rerank|reranking"
    r"|slots|upload|queue|interrupt|free)(?:/|$))"
)

_OLLAMA_READ_GETS = frozenset({"/api/ps", "/api/status"})


class ProbeNotAllowed(GuardError):
    """A probe outside the read-only allowlist was about to be sent."""


def allowed_probes() -> frozenset[tuple[str, str]]:
    """Every (method, path) the scanner may send."""
    pairs: set[tuple[str, str]] = set()
    gets = {split_probe(k)[1] for k in every_probe_key()} | _OLLAMA_READ_GETS
    for path in gets:
        pairs.add(("GET", path))
        pairs.add(("OPTIONS", path))
    pairs.add(("HEAD", f"/api/blobs/{ZERO_DIGEST}"))
    pairs.add(("HEAD", f"/api/blobs/{SHORT_DIGEST}"))
    pairs.add(("POST", "/api/show"))
    return frozenset(pairs)


_ALLOWED: frozenset[tuple[str, str]] | None = None


def check_probe(method: str, path: str) -> None:
    """The one gate every request passes. Raises ProbeNotAllowed for anything not provably read-only."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = allowed_probes()
    if _FORBIDDEN.match(path):
        raise ProbeNotAllowed(f"refusing to send {method} {path}: it can change the target or spend compute")
    if (method, path) not in _ALLOWED:
        raise ProbeNotAllowed(f"refusing to send {method} {path}: not on the read-only probe allowlist")
    # Second opinion from the knowledge base: an Ollama route must be classed read-only in the catalog.
    endpoint = match_endpoint(method, path)
    if endpoint is not None and not endpoint.is_read_only:
        raise ProbeNotAllowed(
            f"refusing to send {method} {path}: Ollama's endpoint catalog classes it as "
            f"{'/'.join(sorted(endpoint.classes))}"
        )
