"""Turns one log line into an Event (or counts it), keeping the little state a source needs:
the last time seen (crash lines carry none) and the tail of a crash trace."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import urlsplit

from ollama_guard.investigate.events import CONFIG, CRASH, LISTENING, REQUEST, TRANSFER, Event
from ollama_guard.ollama import logformat as lf
from ollama_guard.ollama.loglines import is_ollama_line

MAX_MALFORMED_SAMPLES = 5
TRACE_LINES = 40
CONTEXT_REQUESTS = 5
CONTEXT_SECONDS = 300
CONTEXT_LINES = 200  # same reach as the fast scanner's
# Only these settings from the server config line go into the report (others may hold secrets).
REPORTED_SETTINGS = (
    "OLLAMA_HOST",
    "OLLAMA_ORIGINS",
    "OLLAMA_MODELS",
    "OLLAMA_DEBUG",
    "OLLAMA_DEBUG_LOG_REQUESTS",
    "OLLAMA_NO_CLOUD",
    "OLLAMA_NOPRUNE",
    "OLLAMA_KEEP_ALIVE",
    "OLLAMA_NUM_PARALLEL",
    "OLLAMA_MAX_QUEUE",
)


@dataclass
class ParseStats:
    lines: int = 0
    requests: int = 0
    malformed: int = 0  # lines that carry a gin marker but do not parse
    malformed_samples: list[str] = field(default_factory=list)
    recognised: int = 0  # Ollama log lines (ollama.loglines): requests, events, traces, other output
    blank: int = 0  # empty lines (neither recognised nor not)
    first_time: datetime | None = None
    last_time: datetime | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read whole (cut config lines, …)

    def merge(self, other: ParseStats) -> None:
        self.lines += other.lines
        self.requests += other.requests
        self.malformed += other.malformed
        self.recognised += other.recognised
        self.blank += other.blank
        room = MAX_MALFORMED_SAMPLES - len(self.malformed_samples)
        self.malformed_samples.extend(other.malformed_samples[:room])
        self.notes.extend(other.notes[: MAX_MALFORMED_SAMPLES - len(self.notes)])
        self.see(other.first_time)
        self.see(other.last_time)

    def see(self, t: datetime | None) -> None:
        if t is None:
            return
        if self.first_time is None or t < self.first_time:
            self.first_time = t
        if self.last_time is None or t > self.last_time:
            self.last_time = t

    @property
    def unrecognised(self) -> int:
        """Lines that are not Ollama log output (malformed access lines included), blank ones excepted."""
        return max(0, self.lines - self.recognised - self.blank)

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_MALFORMED_SAMPLES:
            self.notes.append(text[:300])

    def bad(self, where: str, text: str) -> None:
        self.malformed += 1
        if len(self.malformed_samples) < MAX_MALFORMED_SAMPLES:
            self.malformed_samples.append(f"{where}: {text[:300]}")


def is_loopback_host(host: str) -> bool:
    h = host.strip("[]").lower()
    return h == "localhost" or h.startswith("127.") or h == "::1"


def bind_is_exposed(host_setting: str) -> bool:
    """OLLAMA_HOST (``http://0.0.0.0:11434``, ``0.0.0.0``, ``:11434``, ``[::]:11434``) or a
    ``Listening on`` address binds beyond loopback."""
    value = host_setting.strip()
    if not value:
        return False
    if "://" not in value:
        value = "http://" + value
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return True
    return not is_loopback_host(host)


def _redact(value: str) -> str:
    """Drop user:password from URL-like values."""
    if "@" in value and "://" in value:
        scheme, _, rest = value.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


def config_facts(env: dict[str, str]) -> tuple[dict[str, bool], dict[str, str]]:
    origins = lf.parse_list_value(env.get("OLLAMA_ORIGINS", ""))
    facts = {
        "exposed_bind": bind_is_exposed(env.get("OLLAMA_HOST", "")),
        "cors_any_origin": any(o == "*" for o in origins),
        "debug_log_requests": env.get("OLLAMA_DEBUG_LOG_REQUESTS", "").lower() in ("1", "true", "yes", "on"),
    }
    settings = {k: _redact(env[k]) for k in REPORTED_SETTINGS if k in env}
    return facts, settings


class LineParser:
    """Parses the lines of one source in order."""

    def __init__(self, source: str, tz: tzinfo, stats: ParseStats | None = None,
                 zone_hint: tzinfo | None = None) -> None:
        self.source = source
        self.tz = tz
        self.stats = stats or ParseStats()
        self.last_time: datetime | None = None
        # (time, line number, message) of the last gin lines, for the context of a crash
        self.recent_requests: deque[tuple[datetime | None, int, str]] = deque(maxlen=CONTEXT_REQUESTS)
        self._lineno = 0
        self._aware: dict[str, datetime] = {}  # gin stamp → aware time (consecutive lines share seconds)
        self._days: dict[str, datetime] = {}  # gin stamp's date → aware midnight
        self._clock: dict[str, timedelta] = {}  # gin stamp's "HH:MM:SS" → offset from midnight
        self._trace: list[str] | None = None
        self._trace_left = 0
        self._trace_kind = ""
        self._cut_config: tuple[str, int, int] | None = None  # a cut config line: (text so far, first, last)
        self._prefixed = False  # the line being parsed had a collector prefix
        self.bind = ""  # "loopback" / "exposed" per the last config or Listening line; "" unknown
        self._infer_zone = tz.utcoffset(datetime(2000, 1, 1)) == timedelta(0) and tz.utcoffset(
            datetime(2000, 7, 1)) == timedelta(0)
        if self._infer_zone and zone_hint is not None:  # the offset of the source's first slog line:
            self.tz = zone_hint  # gin lines before it are in that zone too

    def parse(self, text: str, lineno: int, context: list[tuple[int, str]] | None = None) -> Event | None:
        """One line (without its newline). Returns an Event for lines that matter, else None.

        ``context``: for a crash line found by the fast path, the gin lines just before it
        (line number, text) — the parser did not see them itself.
        """
        self._lineno = lineno
        if context is not None:
            self._adopt_context(context)
        stats = self.stats
        stats.lines += 1
        raw = text
        if "\x1b" in text:
            text = lf.strip_ansi(text)
        text = text.rstrip("\r")
        if text.startswith(lf.GIN_MARKER):  # no collector prefix can start with "["
            msg, prefix_time = text, None
        else:
            msg, prefix_time = lf.split_prefix(text)
        if lf.GIN_MARKER in msg:
            self._trace = None
            fields = lf.parse_gin_fields(msg)
            if fields is None:
                stats.bad(f"{self.source}:{lineno}", text)
                return None
            return self._request(msg, lineno, fields)
        traced = stats.recognised
        self._prefixed = msg is not text
        event = self._other(msg, lineno, prefix_time)
        if event is not None:
            stats.recognised += 1
        elif stats.recognised == traced:  # not part of a crash trace either: judged on the raw line,
            if raw in ("", "\r"):  # like the fast scanner judges the lines it does not hand over
                stats.blank += 1
            elif is_ollama_line(raw):
                stats.recognised += 1
        return event

    @property
    def last_line(self) -> int:
        """The number of the last line parsed (0 before the first)."""
        return self._lineno

    def skipped(self) -> None:
        """Lines before the next one were not handed to the parser (the fast scanner counted them): a
        crash trace does not run on across them — the scanner hands over a trace up to the first gin
        line, which ends it."""
        self._trace = None

    def parse_request(self, msg: str, lineno: int, fields: lf.GinFields) -> Event:
        """A gin line already split by ``gin_message`` + ``parse_gin_fields`` (in a scanner process):
        the same Event and bookkeeping as ``parse`` of the whole line."""
        self._lineno = lineno
        self.stats.lines += 1
        self._trace = None
        return self._request(msg, lineno, fields)

    def _request(self, msg: str, lineno: int, fields: lf.GinFields) -> Event:
        stamp, status, latency, client, method, path, query = fields
        when = self._aware.get(stamp)
        if when is None:
            when = self._aware_time(stamp)
        self.last_time = when
        stats = self.stats
        stats.requests += 1
        stats.recognised += 1
        stats.see(when)
        self.recent_requests.append((when, lineno, msg))
        self._cut_config = None
        # positional: kind, time, source, line, raw, client, method, path, query, status, latency
        return Event(REQUEST, when, self.source, lineno, msg, client, method, path, query, status, latency,
                     bind=self.bind)

    def _aware_time(self, stamp: str) -> datetime:
        """The aware time of a gin stamp that ``parse_gin_fields`` accepted (dates cached)."""
        day = self._days.get(stamp[:10])
        if day is None:
            naive = lf.gin_time(stamp)
            assert naive is not None  # parse_gin_fields checked it
            if len(self._days) > 4096:
                self._days.clear()
            day = self._days[stamp[:10]] = naive.replace(hour=0, minute=0, second=0, tzinfo=self.tz)
        clock = stamp[13:]
        offset = self._clock.get(clock)
        if offset is None:  # 86,400 valid times of day
            if len(self._clock) > 100_000:
                self._clock.clear()
            offset = self._clock[clock] = timedelta(hours=int(stamp[13:15]), minutes=int(stamp[16:18]),
                                                    seconds=int(stamp[19:21]))
        when = day + offset  # same as replace(): aware arithmetic keeps the wall time and the zone
        if len(self._aware) > 4096:
            self._aware.clear()
        self._aware[stamp] = when
        return when

    def _other(self, msg: str, lineno: int, prefix_time: datetime | None) -> Event | None:
        stats = self.stats
        app_time = lf.app_line_time(msg, self.tz) if msg[:1] in "t0123456789" else None
        if app_time is not None and msg.startswith("time="):
            self._zone_from(app_time)
        if self._cut_config is not None:
            joined = self._config_continued(msg, lineno, app_time, prefix_time)
            if joined is not None:
                return joined
        if self._trace is not None:
            # a Go trace continues until the next timestamped line (or TRACE_LINES lines) or the next crash
            if app_time is None and self._trace_left > 0 and not self._next_crash(msg):
                self._trace.append(msg)
                self._trace_left -= 1
                stats.recognised += 1
                return None
            self._trace = None
        # the time of an event line: its own, else the collector's prefix, else the last request's
        # (only request and event lines move the clock, so both scan paths agree)
        when = app_time or prefix_time or self.last_time
        event = self._app_event(msg, lineno, when)
        if event is not None and when is not None:
            self.last_time = when if self.last_time is None or when > self.last_time else self.last_time
            stats.see(when)
        return event

    def _zone_from(self, app_time: datetime) -> None:
        """slog lines carry the server's UTC offset; gin and Go-log lines are the same local time
        without it. While the zone in use is UTC (the --tz default) and a slog line says otherwise, the
        server's own word wins from here on (a zone given as anything but UTC is taken as given)."""
        offset = app_time.utcoffset()
        if not self._infer_zone or offset is None:
            return
        if offset == self.tz.utcoffset(app_time.replace(tzinfo=None)):
            return
        self.tz = timezone(offset)
        self._days.clear()
        self._aware.clear()

    def _next_crash(self, msg: str) -> bool:
        """Inside a trace: does this line start another crash (a crash loop), not continue this one?"""
        kind = lf.crash_kind(msg) if msg[:1] in "pfSMg" else None
        if kind in ("panic", "fatal"):
            return True
        return kind == "exit" and self._trace_kind == "exit"

    def _config_event(self, msg: str, lineno: int, when: datetime | None) -> Event | None:
        found = lf.server_config(msg)
        if found is None:
            return None
        env, whole = found
        facts, settings = config_facts(env)
        detail: dict[str, Any] = {"kind": "server config", "settings": settings, "facts": facts}
        if "OLLAMA_HOST" in env or whole:  # a whole line without OLLAMA_HOST: the default, loopback
            self.bind = "exposed" if facts["exposed_bind"] else "loopback"
        self._cut_config = None
        if not whole:
            missing = [k for k in CUT_CONFIG_KEYS if k not in env]
            detail.update({"incomplete": True, "missing": missing})
            self._cut_config = (msg, lineno, self._lineno)
            self.stats.note(f"{self.source}:{lineno}: server config line cut after {len(env)} setting(s)"
                            + (f"; not known: {', '.join(missing)}" if missing else ""))
        raw = _clip(_CREDENTIALS.sub("://***@", msg))
        return Event(CONFIG, when, self.source, lineno, raw, detail=detail)

    def _config_continued(self, msg: str, lineno: int, app_time: datetime | None,
                          prefix_time: datetime | None) -> Event | None:
        """The line after a cut config line: its continuation when a paste wrapped it (no time of its
        own, and the rest of the map: more KEY:value settings or the closing ']\"')."""
        assert self._cut_config is not None
        head, first, last = self._cut_config
        self._cut_config = None
        if (lineno != last + 1 or app_time is not None or prefix_time is not None or self._prefixed
                or not _CONTINUATION.search(msg)):
            return None
        event = self._config_event(head + msg, first, self.last_time)
        if event is not None:
            event.detail["joined_lines"] = [first, lineno]
            event.detail.setdefault("incomplete", False)
            event.detail.setdefault("missing", [])
        return event

    def _app_event(self, msg: str, lineno: int, when: datetime | None) -> Event | None:
        config = self._config_event(msg, lineno, when)
        if config is not None:
            return config
        listening = lf.parse_listening(msg)
        if listening is not None:
            addr, version = listening
            exposed = bind_is_exposed(addr)
            self.bind = "exposed" if exposed else "loopback"
            return Event(LISTENING, when, self.source, lineno, msg,
                         detail={"kind": "listening", "address": addr, "version": version,
                                 "facts": {"exposed_bind": exposed}})
        transfer = lf.parse_transfer(msg)
        if transfer is not None:
            return Event(TRANSFER, when, self.source, lineno, msg,
                         detail={"direction": transfer.direction, "digest_prefix": transfer.digest_prefix,
                                 "parts": transfer.parts, "approx_bytes": transfer.approx_bytes})
        kind = lf.crash_kind(msg)
        if kind is not None:
            self._trace = [msg]
            self._trace_left = TRACE_LINES
            self._trace_kind = kind
            return Event(CRASH, when, self.source, lineno, msg,
                         detail={"crash": kind, "trace": self._trace, "context": self._context(when)})
        return None

    def _context(self, when: datetime | None) -> list[str]:
        """The last gin lines before a crash, if they are close to it in time."""
        return [f"{self.source}:{lineno}: {text}" for t, lineno, text in self.recent_requests
                if lineno >= self._lineno - CONTEXT_LINES
                and (when is None or t is None or abs((when - t).total_seconds()) <= CONTEXT_SECONDS)]

    def _adopt_context(self, context: list[tuple[int, str]]) -> None:
        self.recent_requests.clear()
        for lineno, raw in context:
            msg, _ = lf.split_prefix(lf.strip_ansi(raw).rstrip("\r"))
            gin = lf.parse_gin(msg)
            if gin is None:
                continue
            when = gin.time.replace(tzinfo=self.tz)
            if self.last_time is None or when > self.last_time:
                self.last_time = when
            self.recent_requests.append((when, lineno, msg))


_CREDENTIALS = re.compile(r"://[^/\s@\]\[]+@")
_CONTINUATION = re.compile(r"(?:^|\s)[A-Za-z_][A-Za-z0-9_]*:|\]\"?$")
CUT_CONFIG_KEYS = ("OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLAMA_DEBUG_LOG_REQUESTS")


def _clip(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def gin_message(text: str) -> str | None:
    """The message of a line as ``LineParser.parse`` sees it, when it is a gin line; else None."""
    if "\x1b" in text:
        text = lf.strip_ansi(text)
    text = text.rstrip("\r")
    msg = text if text.startswith(lf.GIN_MARKER) else lf.split_prefix(text)[0]
    return msg if lf.GIN_MARKER in msg else None
