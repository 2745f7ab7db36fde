"""Alerts as RFC 5424 syslog messages: over UDP (RFC 5426, one message per datagram) or TCP (RFC 6587
octet counting: ``LEN SP MSG``).

``<PRI>1 TIMESTAMP HOSTNAME ollama-guard PROCID RULE [ollama-guard@32473 rule=… severity=… target=…
count=…] BOM{alert JSON}`` — PRI from the facility (``?facility=``, default ``auth``) and the finding's
severity (critical → crit, high → err, medium → warning, low → notice, info → info). 32473 is the
private enterprise number RFC 5612 reserves for documentation and examples.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ollama_guard.errors import InputError
from ollama_guard.watch.destinations import Notice, Queued

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY_CODES = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
SD_ID = "ollama-guard@32473"
UDP_MAX = 8192  # bytes per datagram we send; larger alerts lose their evidence, never their JSON shape
BOM = b"\xef\xbb\xbf"
TCP_ATTEMPTS = 3


def _sd_value(value: Any) -> str:
    text = str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(text: str, limit: int) -> str:
    """HOSTNAME, APP-NAME, MSGID: printable US-ASCII without spaces, or ``-``."""
    token = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return token or "-"


def format_message(alert: dict[str, Any], facility: int, *, hostname: str | None = None,
                   now: datetime | None = None, limit: int | None = None) -> bytes:
    severity = SEVERITY_CODES.get(str(alert.get("severity")), 5)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = _header_token(hostname or socket.gethostname(), 255)
    msgid = _header_token(str(alert.get("rule", "")), 32)
    sd = (f'[{SD_ID} rule="{_sd_value(alert.get("rule"))}" severity="{_sd_value(alert.get("severity"))}" '
          f'target="{_sd_value(alert.get("target"))}" count="{_sd_value(alert.get("count"))}" '
          f'alert="{_sd_value(alert.get("alert", "new"))}"]')
    head = f"<{facility * 8 + severity}>1 {stamp} {host} ollama-guard {os.getpid()} {msgid} {sd} ".encode()
    body = json.dumps(alert, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if limit is not None and len(head) + len(BOM) + len(body) > limit:
        slim = {k: v for k, v in alert.items() if k not in ("evidence", "references", "remediation")}
        slim["truncated"] = True
        body = json.dumps(slim, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return head + BOM + body


class _Udp(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like: UDP is lossy
        pass


class Syslog(Queued):
    def __init__(self, host: str, port: int, *, tcp: bool, facility: int) -> None:
        super().__init__()
        self.host, self.port, self.tcp, self.facility = host, port, tcp, facility
        shown = f"[{host}]" if ":" in host else host
        self.label = f"syslog{'+tcp' if tcp else ''}://{shown}:{port}"
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    def from_url(cls, url: str) -> Syslog:
        parts = urlsplit(url)
        tcp = parts.scheme.lower() == "syslog+tcp"
        try:
            port = parts.port or 514
        except ValueError:
            raise InputError(f"bad --alert {url!r}: the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise InputError(f"bad --alert {url!r}: use syslog://HOST:PORT")
        names = parse_qs(parts.query).get("facility", ["auth"])
        facility = FACILITIES.get(names[-1].lower())
        if facility is None:
            raise InputError(f"bad syslog facility {names[-1]!r} (one of: {', '.join(FACILITIES)})")
        return cls(parts.hostname, port, tcp=tcp, facility=facility)

    async def deliver(self, alert: dict[str, Any], notice: Notice) -> bool:
        if not self.tcp:
            msg = format_message(alert, self.facility, limit=UDP_MAX)
            try:
                if self._udp is None:
                    loop = asyncio.get_running_loop()
                    self._udp, _ = await loop.create_datagram_endpoint(
                        _Udp, remote_addr=(self.host, self.port))
                self._udp.sendto(msg)
                return True
            except OSError as exc:
                notice(f"alert to {self.label} not sent: {exc.strerror or exc}")
                self._udp = None
                return False
        msg = format_message(alert, self.facility)
        frame = f"{len(msg)} ".encode() + msg
        why = ""
        for attempt in range(TCP_ATTEMPTS):
            try:
                if self._writer is None:
                    _, self._writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5)
                self._writer.write(frame)
                await asyncio.wait_for(self._writer.drain(), 5)
                return True
            except (OSError, TimeoutError) as exc:
                why = getattr(exc, "strerror", None) or type(exc).__name__
                await self._close_tcp()
                await asyncio.sleep(0.5 * (attempt + 1))
        notice(f"alert to {self.label} not delivered ({why}): {alert.get('rule')} {alert.get('target')}")
        return False

    async def _close_tcp(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        await self._close_tcp()
