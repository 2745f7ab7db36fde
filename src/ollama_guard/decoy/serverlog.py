"""An Ollama-style server log for the decoy (`--server-log FILE`): the slog startup lines (`server config`,
`Listening on …`) and one gin access line per request, in the formats Ollama itself prints, so the decoy
can feed log-based tooling (and look like Ollama to whoever reads its logs).

Access line (gin's default formatter, no colours): `[GIN] 2006/01/02 - 15:04:05 | 200 |    1.193025ms |
127.0.0.1 | POST     "/api/chat"`, written when the response finishes. The client column follows gin's
ClientIP(), which believes X-Forwarded-For / X-Real-IP from any peer, as Ollama does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TextIO

_NS_PER = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000}


def _trim_fraction(whole: int, frac: int, digits: int) -> str:
    text = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() (`971.777µs`, `1.19ms`, `32.779561288s`, `16m31s`)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_trim_fraction(ns // 1_000, ns % 1_000, 3)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_trim_fraction(ns // 1_000_000, ns % 1_000_000, 6)}ms"
    hours, rest = divmod(ns, _NS_PER["h"])
    minutes, rest = divmod(rest, _NS_PER["m"])
    seconds = _trim_fraction(rest // 1_000_000_000, rest % 1_000_000_000, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return f"{sign}{seconds}"


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def gin_client_ip(headers: list[tuple[str, str]], peer_ip: str) -> str:
    """gin's ClientIP() with Ollama's defaults (every proxy trusted): the leftmost X-Forwarded-For address
    if the whole header parses, else X-Real-IP, else the peer."""
    for wanted in ("x-forwarded-for", "x-real-ip"):
        value = next((v for k, v in headers if k == wanted), None)
        if not value:
            continue
        items = [item.strip() for item in value.split(",")]
        if items and all(_valid_ip(item) for item in items):
            return items[0]
    return peer_ip


def gin_access_line(
    when: datetime, status: int, latency_ns: int, client_ip: str, method: str, path: str
) -> str:
    latency = latency_ns if latency_ns <= 60_000_000_000 else latency_ns - latency_ns % 1_000_000_000
    return (
        f"[GIN] {when:%Y/%m/%d - %H:%M:%S} | {status:3d} | {go_duration(latency):>13} | {client_ip:>15} |"
        f" {method:<7}  {json.dumps(path, ensure_ascii=False)}\n"
    )


def _slog_time(when: datetime) -> str:
    text = when.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def slog_line(when: datetime, source: str, msg: str, **attrs: str) -> str:
    parts = [f"time={_slog_time(when)}", "level=INFO", f"source={source}", f"msg={json.dumps(msg)}"]
    parts += [f"{key}={json.dumps(value)}" for key, value in attrs.items()]
    return " ".join(parts) + "\n"


def server_config_env(host: str, port: int, models_dir: Path, origins: list[str]) -> str:
    """The `env="map[…]"` value of Ollama's startup line (keys sorted, as Go prints maps)."""
    shown_host = f"[{host}]" if ":" in host else host
    values = {
        "CUDA_VISIBLE_DEVICES": "",
        "HTTPS_PROXY": "",
        "HTTP_PROXY": "",
        "NO_PROXY": "",
        "OLLAMA_CONTEXT_LENGTH": "2048",
        "OLLAMA_DEBUG": "false",
        "OLLAMA_FLASH_ATTENTION": "false",
        "OLLAMA_HOST": f"http://{shown_host}:{port}",
        "OLLAMA_KEEP_ALIVE": "5m0s",
        "OLLAMA_LOAD_TIMEOUT": "5m0s",
        "OLLAMA_MAX_LOADED_MODELS": "0",
        "OLLAMA_MAX_QUEUE": "512",
        "OLLAMA_MODELS": str(models_dir),
        "OLLAMA_NOHISTORY": "false",
        "OLLAMA_NOPRUNE": "false",
        "OLLAMA_NUM_PARALLEL": "0",
        "OLLAMA_ORIGINS": "[" + " ".join(origins) + "]",
        "OLLAMA_SCHED_SPREAD": "false",
    }
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(values.items())) + "]"


class ServerLog:
    """Appends Ollama-format log lines to a file (or stderr for "-"), one flushed write per line."""

    def __init__(self, target: str) -> None:
        self._lock = threading.Lock()
        self._owned = target != "-"
        if self._owned:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._stream: TextIO = os.fdopen(fd, "a", encoding="utf-8")
        else:
            self._stream = sys.stderr

    def write(self, line: str) -> None:
        with self._lock:
            self._stream.write(line)
            self._stream.flush()

    def startup(
        self, *, host: str, port: int, models_dir: Path, origins: list[str], version: str, blobs: int
    ) -> None:
        now = datetime.now().astimezone()
        env = server_config_env(host, port, models_dir, origins)
        self.write(slog_line(now, "routes.go:1231", "server config", env=env))
        self.write(slog_line(now, "images.go:458", f"total blobs: {blobs}"))
        self.write(slog_line(now, "images.go:465", "total unused blobs removed: 0"))
        shown = f"[{host}]" if ":" in host else host
        self.write(slog_line(now, "routes.go:1298", f"Listening on {shown}:{port} (version {version})"))

    def event(self, source: str, message: str) -> None:
        self.write(slog_line(datetime.now().astimezone(), source, message))

    def access(self, *, status: int, latency_ns: int, client_ip: str, method: str, path: str) -> None:
        self.write(gin_access_line(datetime.now().astimezone(), status, latency_ns, client_ip, method, path))

    def close(self) -> None:
        with self._lock:
            if self._owned:
                self._stream.close()
