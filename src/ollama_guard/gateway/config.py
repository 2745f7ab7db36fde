"""Gateway configuration: the `[gateway]` table of a TOML file, then command-line flags, then
`OLLAMA_GUARD_*` environment variables (each layer overrides the one before, as the contract says).

Every problem (unreadable file, unknown key, bad value) becomes a one-line `GuardError`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ollama_guard.errors import GuardError
from ollama_guard.paths import data_dir

ENV_PREFIX = "OLLAMA_GUARD_"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_db_url() -> str:
    return f"sqlite:///{data_dir() / 'guard.db'}"


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) → (host, port). Raises ValueError."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"listen address {value!r} is not [IPV6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"listen address {value!r} is not HOST:PORT")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen address {value!r} has no valid port")
    return host, int(port_text)


class GatewayConfig(BaseModel):
    """Everything `ollama-guard serve` needs. Field names are the TOML keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # contract keys
    listen: str = "127.0.0.1:11435"
    upstream: str = "http://127.0.0.1:11434"
    db: str = ""  # empty → sqlite:///<data dir>/guard.db (filled in by load_config)
    redis: str | None = None
    allow_cidrs: tuple[str, ...] = ("0.0.0.0/0", "::/0")
    trusted_proxies: tuple[str, ...] = ()
    max_body_bytes: int = 32 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    push_registries: tuple[str, ...] = ()
    pull_registries: tuple[str, ...] = ("registry.ollama.ai",)
    allow_insecure: bool = False
    allow_cloud: bool = False

    # gateway-specific keys
    max_blob_bytes: int = 256 * 1024**3
    request_timeout: float = 30.0  # whole request body must arrive within this many seconds
    upstream_connect_timeout: float = 10.0
    upstream_timeout: float = 600.0  # longest silence allowed from the upstream (model loads are slow)
    global_concurrency: int = 512  # cap on concurrent upstream requests (a pooled connection each)
    max_json_depth: int = 64
    max_json_elements: int = 250_000  # JSON values in one body (arrays' items, objects' members)
    max_control_body_bytes: int = 64 * 1024  # bodies that name a model and a few flags (/api/show, …)
    max_document_body_bytes: int = 1024 * 1024  # /api/create (templates, system prompts, licenses)
    max_connections_per_client: int = 256  # per client address (0: no cap; trusted proxies exempt)
    unauthenticated_timeout: float = 10.0  # idle seconds allowed to a connection that has not authenticated
    write_timeout: float = 30.0  # a client that reads none of a streamed answer for this long is cut off
    shutdown_delay: float = 2.0  # seconds between SIGTERM (not ready from then on) and closing the listener
    shutdown_timeout: float = 10.0  # seconds the requests in flight then get to finish before they are cut
    ready_max_audit_backlog: int = 10_000  # audit records waiting above which /-/ready says 503
    error_log_interval: float = 10.0  # seconds between two log lines about one failing dependency
    token_reservation: int = 2048  # tokens reserved for an answer whose request sets no output cap
    max_inflight_body_bytes: int | None = None  # request-body bytes held at once (None: 3 × max_body_bytes)
    secret_file: Path | None = None
    metrics: bool = True
    console: bool = True  # the web console at /-/console (admin keys only)
    workers: int = 1
    max_num_ctx: int | None = None  # cap on options.num_ctx for keys below admin (None: no cap)
    max_keep_alive: float | None = None  # cap in seconds on keep_alive for keys below admin
    # automatic bans (gateway/autoban.py): ban_after authentication failures within ban_window seconds
    # → banned for ban_minutes (0: no automatic bans); never trusted_proxies nor ban_allowlist
    ban_after: int = 20
    ban_window: float = 60.0
    ban_minutes: float = 15.0
    ban_allowlist: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    audit_spool_dir: Path | None = None  # default: next to a SQLite database, else <data dir>/audit-spool/…
    audit_max_backlog: int = 50_000  # spooled records not yet in the database before keyed requests get 503
    # "answer": an answer's last byte waits for the fsync of its audit record (group commit); "interval":
    # the writer process fsyncs about every 20 ms (cheaper; see docs/gateway.md "What survives what")
    audit_sync: Literal["answer", "interval"] = "interval"
    audit_reserve_ahead: int = 1024  # "interval": numbers reserved per fsync (bounds a reported loss)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream {v!r} is not an http(s) URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"upstream {v!r} must be scheme://host:port with no path, query or credentials")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ValueError(f"upstream {v!r}: {exc}") from None
        return v.rstrip("/")

    @field_validator("allow_cidrs", "trusted_proxies", "ban_allowlist")
    @classmethod
    def _check_cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            ipaddress.ip_network(item, strict=False)
        return v

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for origin in v:
            if origin == "*":
                raise ValueError("cors_origins may not contain '*'; list the origins allowed to call")
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("",):
                raise ValueError(f"cors origin {origin!r} is not scheme://host[:port]")
        return tuple(o.lower() for o in v)

    @field_validator("push_registries", "pull_registries")
    @classmethod
    def _lower_registries(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(r.strip().lower() for r in v if r.strip())

    @field_validator(
        "max_body_bytes", "max_blob_bytes", "global_concurrency", "max_json_depth", "workers",
        "max_json_elements", "max_control_body_bytes", "max_document_body_bytes", "token_reservation",
        "ready_max_audit_backlog",
        "audit_max_backlog", "audit_reserve_ahead", "max_inflight_body_bytes",
    )
    @classmethod
    def _at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:  # None: unset (where the field allows it)
            raise ValueError("must be at least 1")
        return v

    @field_validator("max_connections_per_client")
    @classmethod
    def _cap_not_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be 0 (no cap) or more")
        return v

    @field_validator("unauthenticated_timeout", "write_timeout", "error_log_interval", "shutdown_timeout")
    @classmethod
    def _positive_seconds(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be more than 0 seconds")
        return v

    @property
    def inflight_body_budget(self) -> int:
        """Request-body bytes the gateway holds at once, all requests together."""
        if self.max_inflight_body_bytes is not None:
            return self.max_inflight_body_bytes
        return 3 * self.max_body_bytes

    def body_limit(self, body_class: str) -> int:
        """The body size limit of a route by its catalog `request_body` class."""
        if body_class == "control":
            return min(self.max_control_body_bytes, self.max_body_bytes)
        if body_class == "document":
            return min(self.max_document_body_bytes, self.max_body_bytes)
        if body_class == "blob":
            return self.max_blob_bytes
        return self.max_body_bytes

    @field_validator("max_num_ctx", "max_keep_alive", "shutdown_delay", "ban_after")
    @classmethod
    def _zero_or_more(cls, v: float | None) -> float | None:
        if v is not None and v < 0:  # None: unset (where the field allows it)
            raise ValueError("must be 0 or more")
        return v

    @field_validator("request_timeout", "upstream_connect_timeout", "upstream_timeout", "ban_window",
                     "ban_minutes")
    @classmethod
    def _positive_float(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be greater than 0")
        return v

    @model_validator(mode="after")
    def _tls_pair(self) -> GatewayConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self

    # derived values -------------------------------------------------------------------------
    @property
    def listen_host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def listen_port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def allow_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs)

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies)


FIELD_NAMES: frozenset[str] = frozenset(GatewayConfig.model_fields)
_LIST_FIELDS = frozenset(
    {"allow_cidrs", "trusted_proxies", "cors_origins", "push_registries", "pull_registries", "ban_allowlist"}
)


def _env_value(field: str, raw: str) -> Any:
    if field in _LIST_FIELDS:
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if field in ("redis", "tls_cert", "tls_key", "secret_file", "max_num_ctx", "max_keep_alive") and (
        raw.strip() == ""
    ):
        return None
    return raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise GuardError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise GuardError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GuardError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise GuardError(f"config file {path} is nested too deeply to be a gateway configuration") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; say where, not Python's codec message
        raise GuardError(
            f"config file {path} is not UTF-8 text (byte {exc.start} cannot be decoded); "
            "save it as UTF-8"
        ) from None
    table = document.get("gateway", {})
    if not isinstance(table, dict):
        raise GuardError(f"config file {path}: [gateway] must be a table")
    unknown = sorted(set(table) - FIELD_NAMES)
    if unknown:
        raise GuardError(f"config file {path}: unknown [gateway] key {unknown[0]!r}")
    base = path.parent
    for key in ("tls_cert", "tls_key", "secret_file"):
        if isinstance(table.get(key), str):
            table[key] = str((base / Path(table[key]).expanduser()).resolve())
    return dict(table)


# The config file harden writes and the systemd unit passes to `serve`; used without --config when present.
SYSTEM_CONFIG = Path("/etc/ollama-guard/config.toml")


def system_config() -> Path | None:
    """SYSTEM_CONFIG when it exists. One we may not even look at (a 0750 directory) counts as existing:
    reading it then fails with a clear error, instead of silently using another database."""
    try:
        SYSTEM_CONFIG.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return SYSTEM_CONFIG
    return SYSTEM_CONFIG


def load_config(
    path: Path | str | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Build the configuration: TOML file < flags (`None` values ignored) < `OLLAMA_GUARD_*` variables."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is None:  # serve, keys, logs and bans all find the system config: one database for all
        path = system_config()
    if path is not None:
        values.update(_read_toml(Path(path).expanduser()))
    for key, value in (cli_overrides or {}).items():
        if value is None:
            continue
        if key not in FIELD_NAMES:
            raise GuardError(f"unknown gateway setting {key!r}")
        values[key] = value
    for key in FIELD_NAMES:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _env_value(key, raw)
    if not values.get("db"):
        values["db"] = default_db_url()
    try:
        return GatewayConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "config"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise GuardError(f"invalid gateway setting {where}: {message}") from None
