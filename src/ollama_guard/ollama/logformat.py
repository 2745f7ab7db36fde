"""What Ollama's server log looks like, and how to read each kind of line.

Ollama writes to stderr (journald, `docker logs`, ``~/.ollama/logs/server.log``):

* gin's access line, one per finished request (gin v1.10 ``LoggerWithConfig`` default formatter)::

      [GIN] 2024/08/19 - 14:13:01 | 404 |     414.019µs |       127.0.0.1 | POST     "/api/chat"

  The time is the server's *local* time when the response finished (for streams: the end of the
  stream); the latency is a Go ``time.Duration`` string (``971.777µs``, ``1.19ms``, ``32.77s``,
  ``16m31s``, ``0s``); the client column is gin's ``ClientIP()`` — it believes ``X-Forwarded-For`` /
  ``X-Real-IP`` from any peer, so it can be forged — and may be empty; the path is Go-quoted
  (``%#v``) and carries ``?query``. On a terminal gin adds ANSI colours.
* ``log/slog`` lines: ``time=… level=INFO source=routes.go:1123 msg="server config" env="map[…]"``
  (older releases: ``2024/05/01 10:00:00 routes.go:1008: INFO server config env="map[…]"``),
  ``Listening on 127.0.0.1:11434 (version 0.3.5)``, ``downloading <hex> in N <size> part(s)`` and
  ``uploading …`` for registry transfers.
* Go crash output: ``panic: …``, ``fatal error: …``, ``[signal SIGSEGV: …]``, ``goroutine N [running]:``
  and stack frames.

Each line may carry a prefix added by whatever collected it: journald's short format
(``janv. 20 23:15:37 host ollama[1232]: `` — month names are localised), ``docker logs -t``
(RFC 3339 with nanoseconds), Docker Desktop's ``2024-08-27 19:10:09 ``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# --- prefixes added by log collectors ------------------------------------------------------------

# journald short/short-precise: "Aug 07 13:30:29 host ollama[17408]: " — the month localised ("janv.",
# "Mär", "1月", "11월"), the host left out by `--no-hostname` or a paste ("Sep 24 08:27:48 ollama[1940]: ")
_JOURNAL_SHORT = (
    r" ?(?:[^\W\d_]{3,5}\.?|\d{1,2}[^\W\d_]) {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)? (?:[^\s:]+ )?"
    r"[^\s:\[]+(?:\[\d+\])?: "
)
# journald short-iso: "2024-08-07T13:30:29+0200 host ollama[17408]: "
_JOURNAL_ISO = (
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d) \S+ [^\s:\[]+(?:\[\d+\])?: "
)
# docker logs -t: RFC 3339 (nano) UTC timestamp and one space
_DOCKER_TS = r"(?P<docker>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) "
# Docker Desktop's log view: "2024-08-27 19:10:09 "
_DESKTOP_TS = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "

PREFIX_RE = re.compile(rf"(?:{_JOURNAL_ISO}|{_JOURNAL_SHORT}|{_DOCKER_TS}|{_DESKTOP_TS})+")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text) if "\x1b" in text else text


def split_prefix(text: str) -> tuple[str, datetime | None]:
    """The message without collector prefixes, and the prefix's absolute time when it has one
    (``docker logs -t`` and our journald export carry UTC times; the other prefixes have no zone)."""
    m = PREFIX_RE.match(text)
    if m is None:
        return text, None
    stamp = None
    if m.group("docker"):
        stamp = parse_rfc3339(m.group("docker"))
    return text[m.end() :], stamp


def parse_rfc3339(value: str) -> datetime | None:
    """RFC 3339 with up to nanosecond precision (Python keeps microseconds)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", value.strip())
    if m is None:
        return None
    frac = (m.group(3) or "")[:6].ljust(6, "0")
    zone = m.group(4) or "Z"
    if zone == "Z":
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}.{frac}{zone}")
    except ValueError:
        return None


# --- Go durations ---------------------------------------------------------------------------------

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 MICRO SIGN (what Go prints)
    "μs": 1e-6,  # U+03BC GREEK SMALL LETTER MU (also accepted by Go)
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SIMPLE_UNITS = (("µs", 1e-6), ("ms", 1e-3), ("ns", 1e-9), ("us", 1e-6), ("μs", 1e-6), ("s", 1.0))
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
DURATION_RE = r"(?:-?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|0)"


def parse_go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.Duration`` string (``1h2m3.5s``, ``971.777µs``, ``0s``); None if invalid."""
    s = text.strip()
    for suffix, unit in _SIMPLE_UNITS:  # the common one-unit forms, without the regex
        if s.endswith(suffix):
            number = s[: -len(suffix)]
            digits = number.replace(".", "", 1)
            if digits and digits.isascii() and digits.isdigit():
                return float(number) * unit
            break
    negative = s.startswith("-")
    if negative:
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        return None
    return -total if negative else total


# --- Go string literals -------------------------------------------------------------------------

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)


def go_unquote(literal: str) -> str:
    """The string a Go double-quoted literal (``strconv.Quote`` / ``%#v`` / slog) stands for.

    ``\\xHH`` escapes are raw bytes in Go; runs of them are decoded as UTF-8 (invalid bytes become
    U+FFFD) so the result is always text.
    """
    body = literal[1:-1] if len(literal) >= 2 and literal[0] == literal[-1] == '"' else literal
    if "\\" not in body:
        return body
    out = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(body):
        out += body[pos : m.start()].encode("utf-8", "surrogatepass")
        esc = m.group(1)
        if esc[0] == "x":
            out.append(int(esc[1:], 16))
        elif esc[0] in "uU" and len(esc) > 1:
            code = int(esc[1:], 16)
            out += chr(code).encode("utf-8", "surrogatepass") if code <= 0x10FFFF else b"\xef\xbf\xbd"
        elif len(esc) == 3 and esc.isdigit():
            out.append(int(esc, 8) & 0xFF)
        else:
            out += _SIMPLE_ESCAPES.get(esc, esc).encode("utf-8", "surrogatepass")
        pos = m.end()
    out += body[pos:].encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "replace")


def go_quote(text: str) -> str:
    """``strconv.Quote`` (what gin's ``%#v`` prints for the path): the inverse of ``go_unquote``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF or code == 0xFFFD:
            out.append("\\ufffd")
        elif not ch.isprintable() and code >= 0x80:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# --- gin access lines ---------------------------------------------------------------------------

GIN_MARKER = "[GIN] "
_GIN_RE = re.compile(
    r"\[GIN\] (\d{4}/\d\d/\d\d - \d\d:\d\d:\d\d) \|\s*(\d{3})\s*\|\s*(\S+)\s*\|"
    r"([^|]*)\|\s*([A-Z]+)\s+(\"(?:[^\"\\]|\\.)*\")\s*$"
)
_DAY_CACHE: dict[str, datetime | None] = {}


@dataclass(frozen=True, slots=True)
class GinLine:
    """One access-log line. ``time`` is naive: gin prints local time without a zone."""

    time: datetime
    status: int
    latency: float  # seconds
    client: str
    method: str
    path: str  # decoded, without the query
    query: str  # decoded, without "?"


# (stamp "YYYY/MM/DD - HH:MM:SS", status, latency seconds, client, method, path, query): plain values,
# cheap to pickle between processes; the stamp is known to be a valid date and time.
GinFields = tuple[str, int, float, str, str, str, str]


def parse_gin_fields(message: str) -> GinFields | None:
    """``parse_gin`` without building the datetime and the record (same acceptance)."""
    m = _GIN_RE.search(message)
    if m is None:
        return None
    stamp, status, latency_text, client, method, target = m.groups()
    latency = parse_go_duration(latency_text)
    if latency is None or gin_time(stamp) is None:
        return None
    if "\\" in target:
        path, _, query = go_unquote(target).partition("?")
    else:
        path, _, query = target[1:-1].partition("?")
    return stamp, int(status), latency, client.strip(), method, path, query


def parse_gin(message: str) -> GinLine | None:
    """Parse a gin line (prefix and colours already removed); None when it is not one or is malformed."""
    fields = parse_gin_fields(message)
    if fields is None:
        return None
    stamp, status, latency, client, method, path, query = fields
    return GinLine(gin_time(stamp), status, latency, client, method, path, query)  # type: ignore[arg-type]


def gin_time(stamp: str) -> datetime | None:
    """``2024/08/19 - 14:13:01`` → naive datetime (the date part is cached: a log has few days)."""
    day = _DAY_CACHE.get(stamp[:10], False)
    if day is False:
        try:
            day = datetime(int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10]))
        except ValueError:
            day = None
        if len(_DAY_CACHE) > 4096:
            _DAY_CACHE.clear()
        _DAY_CACHE[stamp[:10]] = day
    if day is None:
        return None
    try:
        return day.replace(hour=int(stamp[13:15]), minute=int(stamp[16:18]), second=int(stamp[19:21]))  # type: ignore[union-attr]
    except ValueError:
        return None


def format_gin(line: GinLine, latency_text: str, *, color: bool = False) -> str:
    """The line gin would print (used by tests and the benchmark generator)."""
    target = line.path + ("?" + line.query if line.query else "")
    stamp = line.time.strftime("%Y/%m/%d - %H:%M:%S")
    lat = latency_text.rjust(13)
    if not color:
        return (f"[GIN] {stamp} | {line.status:3d} | {lat} | {line.client:>15} | "
                f"{line.method:<7}  {go_quote(target)}")
    return (f"[GIN] {stamp} |\x1b[97;42m {line.status:3d} \x1b[0m| {lat} | {line.client:>15} |"
            f"\x1b[97;46m {line.method:<7} \x1b[0m {go_quote(target)}")


# --- slog / Go log application lines ------------------------------------------------------------

_SLOG_PAIR = re.compile(r'([A-Za-z_][\w.]*)=("(?:[^"\\]|\\.)*"|\S*)')
_GOLOG_TIME = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? ")


def slog_fields(message: str) -> dict[str, str]:
    """``key=value`` pairs of a slog TextHandler line, values unquoted."""
    out: dict[str, str] = {}
    for m in _SLOG_PAIR.finditer(message):
        value = m.group(2)
        out.setdefault(m.group(1), go_unquote(value) if value.startswith('"') else value)
    return out


def app_line_time(message: str, tz: tzinfo) -> datetime | None:
    """The time of a slog (``time=…`` with zone) or Go ``log`` (``2024/05/01 10:00:00``, local) line."""
    if message.startswith("time="):
        end = message.find(" ")
        return parse_rfc3339(message[5 : end if end > 0 else None])
    m = _GOLOG_TIME.match(message)
    if m:
        try:
            return datetime(*(int(m.group(i)) for i in range(1, 7)), tzinfo=tz)  # type: ignore[misc]
        except ValueError:
            return None
    return None


_ENV_RE = re.compile(r'server config"? env=("(?:[^"\\]|\\.)*")')
_ENV_KEY = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*):")
_ENV_KEY_AT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:")


def parse_env_map(text: str) -> dict[str, str]:
    """Go's ``fmt`` rendering of a ``map[string]string``/``map[string]any``: ``map[K:V K2:[a b] …]``.

    Values may contain colons (URLs) and, inside ``[…]`` lists, spaces; keys are identifiers.
    """
    body = text.strip()
    if body.startswith("map[") and body.endswith("]"):
        body = body[4:-1]
    out: dict[str, str] = {}
    pos = 0
    n = len(body)
    while pos < n:
        while pos < n and body[pos] == " ":
            pos += 1
        m = _ENV_KEY_AT.match(body, pos)
        if m is None:
            break
        key = m.group(0)[:-1]
        pos = m.end()
        if pos < n and body[pos] == "[":
            depth = 0
            start = pos
            while pos < n:
                if body[pos] == "[":
                    depth += 1
                elif body[pos] == "]":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
            if pos < n and body[pos] != " ":  # "[::]:11434" — a bracketed host, not a list
                nxt = _ENV_KEY.search(body, pos)
                pos = nxt.start() if nxt else n
            out[key] = body[start:pos].strip()
        else:
            nxt = _ENV_KEY.search(body, pos)
            end = nxt.start() if nxt else n
            out[key] = body[pos:end].strip()
            pos = end
    return out


def parse_list_value(value: str) -> list[str]:
    """``[a b c]`` → ``["a", "b", "c"]``; a bare value → a one-item list (comma-separated is split too)."""
    v = value.strip()
    if v.startswith("[") and v.endswith("]"):
        return [item for item in v[1:-1].split() if item]
    return [item.strip() for item in v.split(",") if item.strip()]


def server_config_env(message: str) -> dict[str, str] | None:
    """The environment map of a ``server config`` line, or None when the line is not one."""
    found = server_config(message)
    return found[0] if found is not None else None


_ENV_CUT_RE = re.compile(r'server config"? env="(.*)$')


def server_config(message: str) -> tuple[dict[str, str], bool] | None:
    """(environment map, whether the line is whole) of a ``server config`` line; None when it is not one.

    A line cut short — a terminal or pager that truncated it, a paste that wrapped it — keeps the
    settings before the cut; the last one, whose value may be cut, is dropped.
    """
    if "server config" not in message:
        return None
    m = _ENV_RE.search(message)
    if m is not None:
        return parse_env_map(go_unquote(m.group(1))), True
    m = _ENV_CUT_RE.search(message)
    if m is None:
        return None
    body = m.group(1).rstrip("\\")
    body = body[4:] if body.startswith("map[") else body
    env = parse_env_map(go_unquote('"' + body + '"'))
    if env:
        env.pop(next(reversed(env)))
    return env, False


_LISTENING_RE = re.compile(r"Listening on (\S+) \(version ([^)\s]+)\)")


def parse_listening(message: str) -> tuple[str, str] | None:
    """``Listening on ADDR (version V)`` → (ADDR, V)."""
    m = _LISTENING_RE.search(message)
    return (m.group(1), m.group(2)) if m else None


_TRANSFER_RE = re.compile(
    r"\b(uploading|downloading) ([0-9a-f]{6,64}) in (\d+) (\d+(?:\.\d+)?) ?([KMGTPE]?i?B) part\(s\)"
)
_SIZE_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15, "EB": 10**18,
               "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@dataclass(frozen=True, slots=True)
class Transfer:
    direction: str  # "upload" | "download"
    digest_prefix: str
    parts: int
    approx_bytes: int  # parts × part size, as printed (rounded by Ollama's HumanBytes)


def parse_transfer(message: str) -> Transfer | None:
    m = _TRANSFER_RE.search(message)
    if m is None:
        return None
    parts = int(m.group(3))
    size = float(m.group(4)) * _SIZE_UNITS.get(m.group(5), 1)
    return Transfer("upload" if m.group(1) == "uploading" else "download", m.group(2), parts,
                    int(parts * size))


# --- crashes ------------------------------------------------------------------------------------

_CRASH_RE = re.compile(
    r"^(?:panic: |fatal error: |SIGSEGV: |SIGBUS: |SIGILL: |SIGABRT: )|\[signal SIG[A-Z]+: "
    r"|Main process exited, code=(?:killed|dumped)|Main process exited, code=exited, status=[1-9]"
    r"|^goroutine \d+ (?:gp=\S+ m=\S+ (?:mp=\S+ )?)?\[running\]:"
)
# a frame's file line: a tab (rsyslog writes it as "#011"), spaces (journalctl and pastes turn the tab
# into them), or nothing (Docker Desktop's view drops it)
_FRAME_RE = re.compile(r"^(?:\t|#011| +)?(\S+\.go):(\d+)(?: \+0x[0-9a-f]+| |$)")
_FRAME_ARGS = re.compile(r"\((?:[^()]|\(\.\.\.\))*\)$")


def crash_kind(message: str) -> str | None:
    """``panic`` / ``fatal`` / ``signal`` / ``exit`` when the line starts or reports a crash."""
    m = _CRASH_RE.search(message)
    if m is None:
        return None
    head = m.group(0)
    if head.startswith("panic"):
        return "panic"
    if head.startswith("fatal"):
        return "fatal"
    if head.startswith("Main process"):
        return "exit"
    if head.startswith("goroutine"):
        return "trace"  # a dump whose header line ("panic: …") is missing
    return "signal"


def stack_frames(lines: list[str], limit: int = 4) -> list[str]:
    """The first function frames (``pkg.Func`` at ``file.go:N``) of a Go stack trace."""
    frames: list[str] = []
    for i, line in enumerate(lines):
        fm = _FRAME_RE.match(line)
        if fm and i > 0:
            # "pkg.Func(args)", "pkg.(*Type).Method(args)", "pkg.Type.Method(...)": drop the arguments only
            func = _FRAME_ARGS.sub("", lines[i - 1].replace("#011", "").strip())
            if func.startswith(("runtime.", "panic(", "goroutine ", "created by ")) or not func:
                continue
            frames.append(f"{func} ({fm.group(1).rsplit('/', 1)[-1]}:{fm.group(2)})")
            if len(frames) >= limit:
                break
    return frames


# --- zones --------------------------------------------------------------------------------------


def parse_tz(value: str | None) -> tzinfo:
    """``UTC``, ``local``, ``+02:00``/``-0530`` or an IANA name (``Europe/Paris``)."""
    if value is None or value.upper() in ("UTC", "Z"):
        return UTC
    if value.lower() == "local":
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    m = re.fullmatch(r"([+-])(\d\d):?(\d\d)", value)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(-delta if m.group(1) == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
