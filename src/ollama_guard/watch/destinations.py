"""Where alerts go (``--alert``, repeatable): ``-`` JSON lines on stdout, ``http(s)://…`` a POST per
alert, ``syslog://HOST:PORT`` / ``syslog+tcp://HOST:PORT`` RFC 5424 (see ``syslog``).

Network destinations never hold up detection: each has a bounded queue (the oldest alert is dropped
when it is full, and the drop is reported) and its own sender task with retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ollama_guard.errors import InputError
from ollama_guard.watch import payloads

QUEUE = 1000
HTTP_TIMEOUT = 5.0
HTTP_ATTEMPTS = 4
RETRY_FIRST = 0.5
RETRY_AFTER_MAX = 10.0

Notice = Callable[[str], None]


def redacted(url: str) -> str:
    """A destination as it may be shown: scheme, host and port (webhook paths and userinfo are secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


class Destination:
    label = "destination"

    def submit(self, alert: dict[str, Any]) -> None:
        raise NotImplementedError

    async def run(self, notice: Notice) -> None:
        """The sender task (destinations that send at once need none)."""

    async def drain(self, seconds: float) -> None:
        """Send what is queued, for at most ``seconds``."""

    async def close(self) -> None:
        pass


class Stdout(Destination):
    label = "stdout"

    def submit(self, alert: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(alert, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()


class Queued(Destination):
    """A bounded queue and one sender task; subclasses implement ``deliver`` (True: delivered or given up)."""

    def __init__(self, maxlen: int = QUEUE) -> None:
        self.queue: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self.dropped = 0
        self.delivered = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._notice: Notice = lambda _m: None

    def submit(self, alert: dict[str, Any]) -> None:
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
            self._notice(f"alert queue for {self.label} is full: dropped the oldest alert "
                         f"({self.dropped} dropped so far)")
        self.queue.append(alert)
        self._idle.clear()
        self._wake.set()

    async def run(self, notice: Notice) -> None:
        self._notice = notice
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                alert = self.queue.popleft()
                if await self.deliver(alert, notice):
                    self.delivered += 1
                else:
                    self.failed += 1
            self._idle.set()

    async def drain(self, seconds: float) -> None:
        if self.queue or not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), seconds)
        if self.queue:
            self._notice(f"{len(self.queue)} alert(s) for {self.label} not delivered before exit")

    async def deliver(self, alert: dict[str, Any], notice: Notice) -> bool:
        raise NotImplementedError


class Webhook(Queued):
    def __init__(self, url: str, fmt: str) -> None:
        super().__init__()
        self.url = url
        self.fmt = fmt
        self.label = redacted(url)
        self._session: Any = None

    async def deliver(self, alert: dict[str, Any], notice: Notice) -> bool:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT))
        data = payloads.body(alert, self.fmt)
        delay = RETRY_FIRST
        why = ""
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            try:
                async with self._session.post(self.url, data=data,
                                              headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
                    if 200 <= resp.status < 300:
                        return True
                    why = f"HTTP {resp.status}"
                    if resp.status in (429, 503):
                        delay = max(delay, _retry_after(resp.headers.get("Retry-After")))
                    elif 400 <= resp.status < 500 and resp.status != 408:
                        break  # the receiver will not take it: retrying cannot help
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = type(exc).__name__
        notice(f"alert to {self.label} not delivered ({why}): {alert.get('rule')} {alert.get('target')}")
        return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _retry_after(value: str | None) -> float:
    try:
        return min(RETRY_AFTER_MAX, max(0.0, float(value or 0)))
    except ValueError:
        return RETRY_FIRST


def parse_destination(spec: str, fmt: str) -> Destination:
    from ollama_guard.watch.syslog import Syslog

    if spec == "-":
        return Stdout()
    scheme = spec.split("://", 1)[0].lower() if "://" in spec else ""
    if scheme in ("http", "https"):
        parts = urlsplit(spec)
        if not parts.hostname:
            raise InputError(f"bad --alert URL {redacted(spec)} (no host)")
        return Webhook(spec, fmt)
    if scheme in ("syslog", "syslog+udp", "syslog+tcp"):
        return Syslog.from_url(spec)
    raise InputError(f"bad --alert {spec.split('://', 1)[0]!r}: use '-', http(s)://…, syslog://HOST:PORT "
                     "or syslog+tcp://HOST:PORT")
