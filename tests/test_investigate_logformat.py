"""Ollama log-format knowledge: gin access lines, slog lines, prefixes, durations, crashes."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ollama_guard.ollama import logformat as lf
from test_investigate_gen import gin, go_duration


def parse_full(line: str) -> lf.GinLine | None:
    msg, _ = lf.split_prefix(lf.strip_ansi(line))
    return lf.parse_gin(msg)


# Verbatim lines quoted in the research notes (GitHub issues #13805, #6225, #5816, #6408, #3652).
REAL = [
    (
        "janv. 20 23:15:37 jarvis-server ollama[1232]: [GIN] 2026/01/20 - 23:15:37 | 200 | 32.779561288s |"
        '       127.0.0.1 | POST     "/api/generate"',
        (datetime(2026, 1, 20, 23, 15, 37), 200, 32.779561288, "127.0.0.1", "POST", "/api/generate"),
    ),
    (
        "janv. 20 23:15:46 jarvis-server ollama[1232]: [GIN] 2026/01/20 - 23:15:46 | 200 |    1.193025ms |"
        '       127.0.0.1 | GET      "/api/ps"',
        (datetime(2026, 1, 20, 23, 15, 46), 200, 0.001193025, "127.0.0.1", "GET", "/api/ps"),
    ),
    (
        "Aug 07 13:30:29 chh-litb-sd-webui4 ollama[17408]: "
        "[GIN] 2024/08/07 - 13:30:29 | 500 | 20.000781644s |"
        ' ip xxx | POST "/api/generate"',
        (datetime(2024, 8, 7, 13, 30, 29), 500, 20.000781644, "ip xxx", "POST", "/api/generate"),
    ),
    (
        '[GIN] 2024/07/21 - 15:52:51 | 403 |            0s |       127.0.0.1 | POST     "/api/generate"',
        (datetime(2024, 7, 21, 15, 52, 51), 403, 0.0, "127.0.0.1", "POST", "/api/generate"),
    ),
    (
        '[GIN] 2024/08/19 - 14:13:01 | 404 |     414.019µs |       127.0.0.1 | POST     "/api/chat"',
        (datetime(2024, 8, 19, 14, 13, 1), 404, 0.000414019, "127.0.0.1", "POST", "/api/chat"),
    ),
    (
        "2024-08-27 19:10:09 [GIN] 2024/08/27 - 17:10:09 | 200 |   36.584739ms |       127.0.0.1 | GET      "
        '"/api/tags"',
        (datetime(2024, 8, 27, 17, 10, 9), 200, 0.036584739, "127.0.0.1", "GET", "/api/tags"),
    ),
]


@pytest.mark.parametrize(("line", "expected"), REAL)
def test_real_gin_lines(line: str, expected: tuple) -> None:
    parsed = parse_full(line)
    assert parsed is not None
    got = (parsed.time, parsed.status, parsed.latency, parsed.client, parsed.method, parsed.path)
    assert got[:2] == expected[:2] and got[3:] == expected[3:]
    assert parsed.latency == pytest.approx(expected[2], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("971.777µs", 971.777e-6),
        ("971.777μs", 971.777e-6),
        ("971.777us", 971.777e-6),
        ("1.19ms", 1.19e-3),
        ("32.77s", 32.77),
        ("16m31s", 991),
        ("1h2m3s", 3723),
        ("0s", 0),
        ("0", 0),
        ("250ns", 250e-9),
        ("1h0m0.5s", 3600.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert lf.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "s", "1.2", "12xs", "1h2", "ms12", "1 s"])
def test_bad_durations(bad: str) -> None:
    assert lf.parse_go_duration(bad) is None


def test_empty_client_query_and_escapes() -> None:
    line = (
        "[GIN] 2024/08/19 - 14:13:01 | 200 |    1.193025ms |                 | "
        'GET      "/api/tags?a=\\"b\\"&c=\\xff\\u00e9"'
    )
    parsed = lf.parse_gin(line)
    assert parsed is not None
    assert parsed.client == ""
    assert parsed.path == "/api/tags"
    assert parsed.query == 'a="b"&c=\ufffdé'


def test_prefixes_and_colours_are_removed() -> None:
    t = datetime(2024, 8, 19, 14, 13, 1)
    plain = gin(t, "203.0.113.7", "GET", "/api/tags", 200, "1.2ms")
    coloured = gin(t, "203.0.113.7", "GET", "/api/tags", 200, "1.2ms", color=True)
    assert "\x1b[" in coloured
    variants = [
        plain,
        coloured,
        f"Aug 19 14:13:01 host ollama[1232]: {plain}",
        f"août 19 14:13:01 host ollama[1232]: {coloured}",
        f"2024-08-19T14:13:01+0200 host ollama[1232]: {plain}",
        f"2024-08-19T12:13:01.123456789Z {plain}",
        f"2024-08-19 16:13:01 {plain}",
    ]
    expected = parse_full(plain)
    assert expected is not None
    for v in variants:
        assert parse_full(v) == expected, v
    msg, stamp = lf.split_prefix(f"2024-08-19T12:13:01.123456789Z {plain}")
    assert msg == plain
    assert stamp == datetime(2024, 8, 19, 12, 13, 1, 123456, tzinfo=UTC)


def test_server_config_env_map() -> None:
    line = (
        'time=2024-08-19T14:00:00.000+02:00 level=INFO source=routes.go:1123 msg="server config" '
        'env="map[CUDA_VISIBLE_DEVICES: HTTPS_PROXY:http://u:p@proxy:3128 OLLAMA_DEBUG:false '
        "OLLAMA_HOST:http://0.0.0.0:11434 OLLAMA_ORIGINS:[* http://localhost https://localhost:* app://*] "
        'OLLAMA_KEEP_ALIVE:5m0s no_proxy:]"'
    )
    env = lf.server_config_env(line)
    assert env is not None
    assert env["OLLAMA_HOST"] == "http://0.0.0.0:11434"
    assert lf.parse_list_value(env["OLLAMA_ORIGINS"]) == [
        "*",
        "http://localhost",
        "https://localhost:*",
        "app://*",
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["no_proxy"] == ""
    assert env["OLLAMA_KEEP_ALIVE"] == "5m0s"
    assert lf.app_line_time(line, UTC) == datetime(2024, 8, 19, 12, 0, tzinfo=UTC)
    # the older Go-log layout of the same line
    old = (
        "2024/05/01 10:00:00 routes.go:1008: INFO server config "
        'env="map[OLLAMA_HOST:0.0.0.0 OLLAMA_ORIGINS:[*]]"'
    )
    env_old = lf.server_config_env(old)
    assert env_old == {"OLLAMA_HOST": "0.0.0.0", "OLLAMA_ORIGINS": "[*]"}
    assert lf.app_line_time(old, timezone(timedelta(hours=2))) == datetime(
        2024, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))
    )


def test_listening_transfer_and_crash_lines() -> None:
    assert lf.parse_listening('msg="Listening on 127.0.0.1:11434 (version 0.3.5)"') == (
        "127.0.0.1:11434",
        "0.3.5",
    )
    assert lf.parse_listening("routes.go:1054: Listening on [::]:11434 (version 0.1.33)") == (
        "[::]:11434",
        "0.1.33",
    )
    up = lf.parse_transfer('msg="uploading 6a0746a1ec1a in 16 292 MB part(s)"')
    assert up == lf.Transfer("upload", "6a0746a1ec1a", 16, 16 * 292_000_000)
    down = lf.parse_transfer("download.go:136: downloading 8eeb52dfb3bb in 1 485 B part(s)")
    assert down is not None and down.direction == "download" and down.approx_bytes == 485
    assert lf.crash_kind("panic: runtime error: slice bounds out of range [:19] with length 0") == "panic"
    assert lf.crash_kind("fatal error: concurrent map writes") == "fatal"
    assert lf.crash_kind("[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x5f2a1c]") == "signal"
    assert (
        lf.crash_kind("ollama.service: Main process exited, code=exited, status=2/INVALIDARGUMENT") == "exit"
    )
    assert lf.crash_kind("ollama.service: Main process exited, code=exited, status=0/SUCCESS") is None
    assert lf.crash_kind('msg="no panic: all good"') is None
    trace = [
        "panic: boom",
        "",
        "goroutine 51 [running]:",
        "github.com/ollama/ollama/server.downloadBlob({0x1, 0x2}, ...)",
        "\t/go/src/github.com/ollama/ollama/server/download.go:478 +0x6b8",
    ]
    assert lf.stack_frames(trace) == ["github.com/ollama/ollama/server.downloadBlob (download.go:478)"]


def test_go_quote_round_trip_examples() -> None:
    for text in ["/api/tags", '/a"b', "/a\\b", "/\x00\x7f\n\t", "/é€😀", "/a?x=1&y=%20"]:
        assert lf.go_unquote(lf.go_quote(text)) == text


def test_parse_tz() -> None:
    assert lf.parse_tz("UTC") is UTC
    assert lf.parse_tz("+02:00").utcoffset(None) == timedelta(hours=2)
    assert lf.parse_tz("-0530").utcoffset(None) == -timedelta(hours=5, minutes=30)
    assert lf.parse_tz("Europe/Paris").utcoffset(datetime(2024, 8, 1)) == timedelta(hours=2)
    with pytest.raises(ValueError):
        lf.parse_tz("Mars/Olympus")


# --- property: whatever gin prints, we read back ------------------------------------------------

_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(lambda p: ":".join(f"{x:x}" for x in p))
_clients = st.one_of(_ipv4, _ipv6, st.just(""), st.just("::1"))
_path_chars = string.ascii_letters + string.digits + "/-_.~%:@!$&'()*+,;=[] \"\\\x00\x1f\x7féµ😀"
_paths = st.text(alphabet=_path_chars, min_size=0, max_size=60).map(lambda s: "/" + s)
_queries = st.one_of(st.just(""), st.text(alphabet=_path_chars.replace("?", ""), min_size=1, max_size=30))
_methods = st.sampled_from(["GET", "POST", "HEAD", "DELETE", "PUT", "OPTIONS", "PATCH"])
_latency_ns = st.one_of(
    st.integers(0, 999),
    st.integers(1_000, 999_999_999),
    st.integers(1, 59_999_999_999),
    st.integers(60, 400_000).map(lambda s: s * 1_000_000_000),
)
_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)


@settings(max_examples=300, deadline=None)
@given(
    t=_times,
    status=st.integers(100, 599),
    ns=_latency_ns,
    client=_clients,
    method=_methods,
    path=_paths,
    query=_queries,
    color=st.booleans(),
    prefix=st.sampled_from(["", "journald", "docker", "desktop"]),
)
def test_gin_line_round_trip(
    t: datetime,
    status: int,
    ns: int,
    client: str,
    method: str,
    path: str,
    query: str,
    color: bool,
    prefix: str,
) -> None:
    latency = go_duration(ns)
    line = lf.format_gin(
        lf.GinLine(t, status, 0.0, client, method, path.split("?")[0], query), latency, color=color
    )
    if prefix == "journald":
        line = f"Aug {t.day:02d} {t:%H:%M:%S} host ollama[42]: {line}"
    elif prefix == "docker":
        line = f"{t:%Y-%m-%dT%H:%M:%S}.123456789Z {line}"
    elif prefix == "desktop":
        line = f"{t:%Y-%m-%d %H:%M:%S} {line}"
    parsed = parse_full(line)
    assert parsed is not None, line
    assert parsed.time == t
    assert parsed.status == status
    assert parsed.client == client
    assert parsed.method == method
    assert parsed.path == path.split("?")[0]
    assert parsed.query == query
    assert parsed.latency == pytest.approx(ns / 1e9, rel=1e-9, abs=1e-12)
