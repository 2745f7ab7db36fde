"""What the scanner learned about one open address:port."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ollama_guard.findings import Finding
from ollama_guard.scan.fingerprints import AuthState, ProbeAnswer, reached_blob_handler
from ollama_guard.scan.targets import Target


@dataclass(slots=True)
class ModelDetails:
    """What `POST /api/show` disclosed about one model."""

    name: str
    system_prompt: str | None = None
    store_path: str | None = None  # the `FROM /…/blobs/sha256-…` path in the modelfile
    answer: ProbeAnswer | None = None


@dataclass(slots=True)
class HostResult:
    target: Target  # resolved: `host` is an IP literal
    discovered_at: float  # loop time the TCP connect succeeded
    finished_at: float = 0.0
    scheme: str = "http"
    tls_detected: bool = False  # the plain-HTTP attempt met TLS and we switched
    service: str | None = None  # fingerprint id, None when nothing we know answered
    service_name: str | None = None
    confidence: int = 0
    version: str | None = None
    version_evidence: str | None = None  # e.g. "<=0.1.33 (HEAD /api/blobs/sha256:00 → 404)"
    auth: AuthState = "unknown"
    models: list[str] = field(default_factory=list)
    running_models: list[str] = field(default_factory=list)
    model_details: list[ModelDetails] = field(default_factory=list)
    answers: dict[str, ProbeAnswer] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None  # why assessment stopped early (timeouts, …)
    host_header: str | None = None  # sent instead of the target's name (Ollama's Host guard, see probes)

    @property
    def endpoint(self) -> str:
        return self.target.endpoint

    @property
    def display_name(self) -> str:
        """`name (IP:PORT)` when a host name was given, else `IP:PORT`."""
        if self.target.hostname:
            return f"{self.target.hostname} ({self.endpoint})"
        return self.endpoint

    @property
    def url(self) -> str:
        """The service's base URL, with the host name the user gave when there was one."""
        host = self.target.hostname or self.target.host
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.target.port}{self.target.base_path}/"

    @property
    def is_loopback(self) -> bool:
        return self.target.host.startswith("127.") or self.target.host == "::1"

    def answer(self, key: str) -> ProbeAnswer | None:
        return self.answers.get(key)

    def reachable_endpoints(self) -> list[str]:
        """API paths that answered us without credentials (the admin blob route counts when its handler
        ran: 404/400 for a digest that cannot exist)."""
        out: dict[str, None] = {}
        for answer in self.answers.values():
            if answer.method == "OPTIONS":
                continue
            if answer.path.startswith("/api/blobs/"):
                if reached_blob_handler(answer) and self.service == "ollama":
                    out.setdefault("/api/blobs/{digest}", None)
                continue
            if 200 <= answer.status < 300:
                out.setdefault(answer.path, None)
        return sorted(out)

    def compact(self) -> None:
        """Drop the probe bodies once findings are built (they carry their own clipped evidence), so a
        scan that keeps many results does not keep every page it read."""
        for answer in self.answers.values():
            answer.body = b""
            answer._json, answer._json_done = None, True
        for details in self.model_details:
            details.answer = None

    def to_json(self) -> dict[str, Any]:
        """The contract's host object."""
        return {
            "target": self.endpoint,
            "url": self.url,
            "service": self.service,
            **({"service_name": self.service_name} if self.host_header else {}),
            "version": self.version,
            "auth": self.auth,
            "reachable_endpoints": self.reachable_endpoints(),
            "models": list(self.models),
            "findings": [f.to_json() for f in self.findings],
        }
