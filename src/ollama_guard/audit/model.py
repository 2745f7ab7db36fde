"""The facts the sources collect about a host, shared by every check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ollama_guard.audit.hostspec import BindAddress, parse_ollama_host
from ollama_guard.redact import redact_text, redact_value


@dataclass(frozen=True)
class Origin:
    """Where a setting was read: a file line, a process environment, a container's config."""

    kind: str  # systemd | environment-file | login-environment | launchd | compose | docker | process
    path: str | None = None  # logical path on the audited system
    line: int | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        # Redacted at capture: every report, plan and log line is built from this text.
        if self.text:
            object.__setattr__(self, "text", redact_text(self.text))

    def describe(self) -> str:
        where = self.path or self.kind
        return f"{where}:{self.line}" if self.line else where

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.path:
            out["path"] = self.path
        if self.line:
            out["line"] = self.line
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(frozen=True)
class EnvValue:
    name: str
    value: str
    origin: Origin

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", redact_value(self.name, self.value))


@dataclass(frozen=True)
class PortPublish:
    """A container port published on the host (Docker `-p`, Compose `ports:`)."""

    host_ip: str  # "" = every interface
    host_port: str  # may be empty (random port) or a range
    container_port: int
    protocol: str
    origin: Origin
    spec: str  # as written


@dataclass
class Instance:
    """One way Ollama is (or would be) started on this host, with the environment it gets."""

    kind: str  # systemd | process | launchd | compose | docker | login-environment | environment-file
    target: str  # stable label used as the finding target
    label: str  # human description
    env: dict[str, EnvValue] = field(default_factory=dict)
    default_bind: str = ""  # OLLAMA_HOST when unset ("" → Ollama's 127.0.0.1:11434)
    containerised: bool = False  # the bind address is inside a container network namespace
    host_network: bool = False
    publishes: list[PortPublish] = field(default_factory=list)
    user: str | None = None
    home: str | None = None  # logical home directory of the user that runs it
    image: str | None = None
    effective: bool = True  # False: a file nothing is known to load (e.g. unreferenced /etc/default/ollama)
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific details used by fixes

    def __post_init__(self) -> None:
        self.label = redact_text(self.label)

    def value(self, name: str) -> str | None:
        item = self.env.get(name)
        return None if item is None else item.value

    def bind(self) -> BindAddress:
        raw = self.value("OLLAMA_HOST")
        return parse_ollama_host(raw if raw is not None else self.default_bind)


@dataclass(frozen=True)
class ListeningSocket:
    ip: str
    port: int
    pid: int | None
    process: str | None  # the owner's command line, redacted (sources.sockets redacts before cutting)

    def __post_init__(self) -> None:
        if self.process:
            object.__setattr__(self, "process", redact_text(self.process))


@dataclass(frozen=True)
class VersionObservation:
    version: str
    source: str  # e.g. "ollama -v", "GET /api/version", "compose image tag", "--ollama-version"


@dataclass(frozen=True)
class StoreLocation:
    """An Ollama home (`~/.ollama`) and/or a model store, with the user expected to own them."""

    ollama_dir: str | None  # logical path of `.ollama` (holds id_ed25519, server.json)
    models_dir: str | None
    owner: str | None  # user name expected to own it (the service user), if known
    reason: str  # why we looked here


@dataclass
class GatewayPresence:
    configs: list[str] = field(default_factory=list)  # config files / units found
    processes: list[str] = field(default_factory=list)
    listening: list[str] = field(default_factory=list)
    upstreams: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        return bool(self.configs or self.processes or self.listening)


@dataclass
class Facts:
    live: bool
    root: str
    instances: list[Instance] = field(default_factory=list)
    sockets: list[ListeningSocket] = field(default_factory=list)
    versions: list[VersionObservation] = field(default_factory=list)
    stores: list[StoreLocation] = field(default_factory=list)
    gateway: GatewayPresence = field(default_factory=GatewayPresence)
    hosts_file: dict[str, list[str]] = field(default_factory=dict)
    passwd: dict[str, tuple[int, str]] = field(default_factory=dict)  # user → (uid, home)
    notes: list[str] = field(default_factory=list)  # what could not be read or was skipped

    def user_by_uid(self, uid: int) -> str | None:
        for name, (known_uid, _home) in self.passwd.items():
            if known_uid == uid:
                return name
        return None
