"""Builders for Ollama log lines used by the investigate tests (gin layout, collector prefixes),
and checks that the builders produce the real layout."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from ollama_guard.ollama.logformat import GinLine, format_gin

T0 = datetime(2024, 8, 19, 14, 0, 0)

JOURNAL_MONTHS_FR = [
    "janv.",
    "févr.",
    "mars",
    "avr.",
    "mai",
    "juin",
    "juil.",
    "août",
    "sept.",
    "oct.",
    "nov.",
    "déc.",
]


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() for a non-negative duration."""
    if ns == 0:
        return "0s"
    if ns < 1_000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _frac(ns, 1_000) + "µs"
    if ns < 1_000_000_000:
        return _frac(ns, 1_000_000) + "ms"
    hours, rem = divmod(ns, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _frac(rem, 1_000_000_000) + "s"


def _frac(value: int, unit: int) -> str:
    whole, part = divmod(value, unit)
    if not part:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{str(part).rjust(digits, '0').rstrip('0')}"


def gin(
    t: datetime,
    client: str,
    method: str,
    path: str,
    status: int = 200,
    latency: str = "1.193025ms",
    color: bool = False,
) -> str:
    target, _, query = path.partition("?")
    return format_gin(GinLine(t, status, 0.0, client, method, target, query), latency, color=color)


def journald(
    line: str, t: datetime, host: str = "jarvis-server", pid: int = 1232, french: bool = False
) -> str:
    month = JOURNAL_MONTHS_FR[t.month - 1] if french else t.strftime("%b")
    return f"{month} {t.day:02d} {t:%H:%M:%S} {host} ollama[{pid}]: {line}"


def docker_t(line: str, t: datetime) -> str:
    return f"{t.replace(tzinfo=UTC):%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}123Z {line}"


def desktop(line: str, t: datetime) -> str:
    return f"{t + timedelta(hours=2):%Y-%m-%d %H:%M:%S} {line}"


def config_line(
    t: datetime,
    host: str = "http://127.0.0.1:11434",
    origins: str = "[http://localhost app://*]",
    extra: str = "",
) -> str:
    stamp = t.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return (
        f'time={stamp} level=INFO source=routes.go:1123 msg="server config" env="map[HTTPS_PROXY: '
        f"OLLAMA_DEBUG:false OLLAMA_HOST:{host} OLLAMA_KEEP_ALIVE:5m0s "
        f"OLLAMA_MODELS:/usr/share/ollama/.ollama/models OLLAMA_ORIGINS:{origins}{extra} "
        f'OLLAMA_SCHED_SPREAD:false]"'
    )


LOCAL_ENDPOINTS = [
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("POST", "/api/embed"),
    ("GET", "/api/version"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/api/show"),
    ("GET", "/"),
]
LATENCIES = ["971.777µs", "1.193025ms", "32.779561288s", "414.019µs", "16m31s", "0s", "36.584739ms"]


def mixed_log(lines: int, seed: int = 7) -> list[str]:
    """Owner traffic with every kind of interesting line sprinkled in (for fast/slow equivalence)."""
    rnd = random.Random(seed)
    t = T0
    out = [
        config_line(t, host="http://0.0.0.0:11434", origins="[* http://localhost]"),
        'time=2024-08-19T14:00:00.100Z level=INFO source=routes.go:1170 msg="Listening on [::]:11434 '
        '(version 0.3.5)"',
    ]
    while len(out) < lines:
        t += timedelta(seconds=rnd.randint(0, 3))
        r = rnd.random()
        if r < 0.80:
            method, path = rnd.choice(LOCAL_ENDPOINTS)
            status = rnd.choice([200] * 20 + [404, 400, 500, 401])
            client = "127.0.0.1" if rnd.random() < 0.9 else "::1"
            out.append(gin(t, client, method, path, status, rnd.choice(LATENCIES)))
        elif r < 0.86:
            client = f"203.0.113.{rnd.randint(1, 40)}"
            method, path = rnd.choice(
                [
                    *LOCAL_ENDPOINTS,
                    ("DELETE", "/api/delete"),
                    ("POST", "/api/pull"),
                    ("POST", "/api/push"),
                    ("POST", "/api/copy"),
                ]
            )
            out.append(gin(t, client, method, path, rnd.choice([200, 200, 404]), rnd.choice(LATENCIES)))
        elif r < 0.87:
            out.append(gin(t, "127.0.0.1", "DELETE", "/api/delete", 200))
        elif r < 0.875:
            out.append(gin(t, "127.0.0.1", "GET", "/api/tags?x=1", 200))
        elif r < 0.88:
            out.append(gin(t, "2001:db8::1234:5678:9abc", "GET", "/api/tags", 200))
        elif r < 0.95:
            out.append(
                f"time={t:%Y-%m-%dT%H:%M:%S}.000Z level=INFO source=server.go:626 "
                f'msg="llama runner started in 1.02 seconds"'
            )
            out.extend(
                f"llama_model_loader: - kv  {k:2d}: general.architecture str = llama" for k in range(5)
            )
        elif r < 0.955:
            out.append(
                f"time={t:%Y-%m-%dT%H:%M:%S}.000Z level=INFO source=upload.go:114 "
                f'msg="uploading 6a0746a1ec1a in 4 100 MB part(s)"'
            )
        elif r < 0.957:
            out.append("panic: runtime error: invalid memory address or nil pointer dereference")
            out.append("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x5f2a1c]")
            out.append("")
            out.append("goroutine 12 [running]:")
            out.append("github.com/ollama/ollama/server.(*Server).CreateHandler(0xc0001, 0xc0002)")
            out.append("\t/go/src/github.com/ollama/ollama/server/create.go:120 +0x1d")
        elif r < 0.96:
            out.append("[GIN] 2024/08/19 - 99:99 | broken")
        else:
            out.append(gin(t, "127.0.0.1", "POST", "/api/chat", 200, color=True))
    return out


def test_gin_builder_matches_real_layout() -> None:
    real = '[GIN] 2024/08/19 - 14:13:01 | 404 |     414.019µs |       127.0.0.1 | POST     "/api/chat"'
    assert gin(datetime(2024, 8, 19, 14, 13, 1), "127.0.0.1", "POST", "/api/chat", 404, "414.019µs") == real
    real2 = '[GIN] 2024/07/21 - 15:52:51 | 403 |            0s |       127.0.0.1 | POST     "/api/generate"'
    assert gin(datetime(2024, 7, 21, 15, 52, 51), "127.0.0.1", "POST", "/api/generate", 403, "0s") == real2


def test_go_duration_builder() -> None:
    assert go_duration(971_777) == "971.777µs"
    assert go_duration(1_193_025) == "1.193025ms"
    assert go_duration(32_779_561_288) == "32.779561288s"
    assert go_duration(991 * 1_000_000_000) == "16m31s"
    assert go_duration(3723 * 1_000_000_000) == "1h2m3s"
    assert go_duration(0) == "0s"
