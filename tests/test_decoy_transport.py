"""The decoy's HTTP/1.x transport against Go's own net/http, byte for byte.

A reference server written with Go's standard library only (tests/go/refserver) is built with `go build`
and run next to our transport serving an ASGI twin of the same handler (tests/support/goecho.py). The
same raw bytes go to both; the answers must be identical except for the Date value. Hand-picked cases
cover what unmasked the old uvicorn transport; a seeded generator adds a few hundred more.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.goecho import echo_app
from support.wire import build_reference, exchange, mask_date, run_reference, run_transport


@pytest.fixture(scope="module")
def go_server(tmp_path_factory: pytest.TempPathFactory):
    binary = build_reference(tmp_path_factory.mktemp("go"))
    if binary is None:
        pytest.skip("no Go toolchain (`go`) on PATH: the differential reference cannot be built")
    with run_reference(binary) as address:
        yield address


@pytest.fixture(scope="module")
def our_server():
    with run_transport(echo_app) as address:
        yield address


HOST = b"Host: a\r\n"
HANDPICKED = [
    b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET / HTTP/1.0\r\n\r\n",  # answered as HTTP/1.0
    b"GET / HTTP/1.1\r\n\r\n",  # 400 Bad Request: missing required Host header
    b"garbage\r\n\r\n",  # 400 Bad Request
    b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",  # 501
    b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /stream HTTP/1.1\r\n" + HOST + b"\r\n",  # chunk per flush
    b"GET /big HTTP/1.1\r\n" + HOST + b"\r\n",  # one write over 2048 bytes: chunked, no length
    b"GET /two HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /exact HTTP/1.1\r\n" + HOST + b"\r\n",  # 2048 bytes still get a Content-Length
    b"GET /empty HTTP/1.1\r\n" + HOST + b"\r\n",
    b"HEAD /empty HTTP/1.1\r\n" + HOST + b"\r\n",  # no Content-Length at all
    b"HEAD / HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /sniff HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /declared HTTP/1.1\r\n" + HOST + b"\r\n",  # handler headers sorted, then Date, Content-Type
    b"GET /status/204 HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /status/599 HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /stream HTTP/1.0\r\n\r\n",  # close-delimited
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"POST /x HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /x HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST /x HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nabc",
    b"GET http://evil.example/x?y HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET /%zz HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",  # 505
    b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"X: \x01\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"X: \xff\xfe\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"Expect: foo\r\n\r\n",  # 417
    b"POST / HTTP/1.1\r\n" + HOST + b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"X: a\r\n  b\r\n\r\n",
    b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"Pragma: no-cache\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET / HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n",
    b"GET /noread HTTP/1.1\r\n" + HOST + b"Content-Length: 300000\r\n\r\n" + b"a" * 300000,
    b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"\xff" * ((1 << 20) + 10000) + b"\r\n\r\n",  # 431
]


def _differences(go: tuple[str, int], ours: tuple[str, int], cases: list[bytes]) -> list[str]:
    found = []
    for raw in cases:
        theirs, mine = mask_date(exchange(go, raw)), mask_date(exchange(ours, raw))
        if theirs != mine:
            found.append(f"{raw[:120]!r}\n  go:   {theirs[:400]!r}\n  ours: {mine[:400]!r}")
    return found


def test_handpicked_requests_answer_as_go(go_server, our_server) -> None:
    assert _differences(go_server, our_server, HANDPICKED) == []


def test_the_reference_is_really_go(go_server) -> None:
    """Guards the comparison itself: Go's own texts, which uvicorn never produced."""
    assert exchange(go_server, b"GET / HTTP/1.1\r\n\r\n").startswith(
        b"HTTP/1.1 400 Bad Request: missing required Host header\r\n"
    )
    assert exchange(go_server, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK\r\nContent-Type")


# --- generated requests -------------------------------------------------------------------------------
_METHODS = ["GET", "POST", "HEAD", "DELETE", "OPTIONS", "get", "CONNECT", "G(T", ""]
_TARGETS = [
    "/",
    "/x?y=1",
    "//api/tags",
    "/api//tags",
    "/a%20b",
    "/%zz",
    "/%2",
    "*",
    "http://h.example/p?q",
    "http://h.example:bad/",
    "http://[::1/",
    "https://u@h.example/x",
    "mailto:x",
    "x",
    "",
    "/\x7f",
    "/caf\xc3\xa9",
    "/stream",
    "/big",
    "/two",
    "/exact",
    "/empty",
    "/sniff",
    "/declared",
    "/noread",
    "/status/204",
    "/status/304",
    "/status/404",
    "/status/413",
    "/status/418",
    "/status/599",
    "/a b",
]
_VERSIONS = (
    ["HTTP/1.1"] * 6
    + ["HTTP/1.0"] * 3
    + ["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/1", "http/1.1", "HTTP/a.b", "HTTP/1.1 "]
)
_GOOD_HEADERS = [
    "Connection: close",
    "Connection: keep-alive",
    "connection: Keep-Alive, Upgrade",
    "X-Y: \xff\xfe",
    "x-lower-case: v",
    "User-Agent: curl/8.5.0",
    "Pragma: no-cache",
    "Content-Length: 5",
    "Content-Length: 0",
    "Transfer-Encoding: chunked",
    "Expect: 100-continue",
    "Accept:   spaced  ",
    "X-Fold: a\r\n  folded",
    ":empty-name",
    "Cache-Control: no-store",
]
_BAD_HEADERS = [
    "Host: a b",
    "Host: b",
    "X-Y: \x01",
    "Bad Name: v",
    "NoColon",
    "\xff: v",
    "Content-Length: -1",
    "Content-Length: 0x5",
    "Content-Length: 7",
    "Transfer-Encoding: gzip",
    "Transfer-Encoding: chunked, gzip",
    "Expect: nope",
    "Trailer: Content-Length",
    " leading: x",
]
_BODIES = [
    b"",
    b"hello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n0\r\n\r\n",
    b"zz\r\n",
    b"5\r\nhelloXX",
    b"0\r\nX-T: v\r\n\r\n",
    b"10000000000000000\r\n",
    b"5\r\nhel",
    b"\r\n",
]


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    method, target = draw(st.sampled_from(_METHODS)), draw(st.sampled_from(_TARGETS))
    line = f"{method} {target} {draw(st.sampled_from(_VERSIONS))}"
    headers = []
    if draw(st.integers(0, 5)):
        headers.append("Host: a")
    headers += draw(st.lists(st.sampled_from(_GOOD_HEADERS), max_size=3, unique=True))
    if draw(st.integers(0, 2)) == 0:
        headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(_BAD_HEADERS)))
    head = eol.join([line, *headers]) + eol + eol
    raw = head.encode("latin-1") + draw(st.sampled_from(_BODIES))
    if draw(st.integers(0, 4)) == 0:
        raw += b"GET /second HTTP/1.1\r\nHost: b\r\n\r\n"
    return raw


@settings(
    max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(raw=raw_requests())
def test_generated_requests_answer_as_go(go_server, our_server, raw: bytes) -> None:
    assert _differences(go_server, our_server, [raw]) == []


# --- Go's encoding/json Decoder, as Ollama's handlers meet it ------------------------------------------
_JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"1",
    b"-",
    b".",
    b"e",
    b"E+",
    b"0",
    b"tru",
    b"true",
    b"nul",
    b"null",
    b"false",
    b'"ab"',
    b"\\",
    b"\\u12",
    b"\\u00e9",
    b"\\n",
    b" ",
    b"\n",
    b"\x01",
    b"\xff",
    b"x",
    b"'",
    b'"k":',
    b"12.5e-3",
]


def _go_decoder_says(go: tuple[str, int], body: bytes) -> str:
    raw = b"POST /json HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    answer = exchange(go, raw)
    return answer.split(b"\r\n\r\n", 1)[1].decode("utf-8")


def _we_say(body: bytes) -> str:
    from ollama_guard.ollama.gojson_scan import EOF, GoSyntaxError, scan_first_value

    try:
        return f"ok {scan_first_value(body)}"
    except GoSyntaxError as exc:
        return f"err {exc}" if str(exc) != EOF else "err EOF"


JSON_HANDPICKED = [
    b"{bad}",
    b'{"model":"x"',
    b'{"model":"x"}garbage',
    b"",
    b"  ",
    b'{"a":1.}',
    b'{"a":tru}',
    b"[1]",
    b'{"m":"\\ud800"}',
    b'{"model" 1}',
    b'{"a":1 "b"}',
    b"\xff",
    b'{"a":"\x01"}',
    b"123",
    b"-",
    b"1.",
    b"1e",
    b"1e+",
    b"01",
    b'"\\x"',
    b'"\\u12g4"',
    b"{,}",
    b"[1,]",
    b"[,",
    b"{}{}",
    b'{"a":[1,2,{"b":null}]} trailing',
    b"\xc2\xa0",
    b"\x7f",
    b"'",
]


def test_json_errors_are_go_encoding_json_texts(go_server) -> None:
    for body in JSON_HANDPICKED:
        assert _we_say(body) == _go_decoder_says(go_server, body), body


@settings(
    max_examples=300, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(parts=st.lists(st.sampled_from(_JSON_TOKENS), max_size=12))
def test_generated_json_bodies_decode_as_go_decodes_them(go_server, parts: list[bytes]) -> None:
    body = b"".join(parts)
    assert _we_say(body) == _go_decoder_says(go_server, body), body


def _go_base64_says(go: tuple[str, int], text: bytes) -> str:
    raw = b"POST /b64 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text)
    return exchange(go, raw).split(b"\r\n\r\n", 1)[1].decode()


@settings(
    max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
@given(text=st.text(alphabet="QUFBYWJj+/=\n\r!x", max_size=14))
def test_image_base64_errors_are_go_s(go_server, text: str) -> None:
    from ollama_guard.decoy.govalues import go_base64_error

    problem = go_base64_error(text)
    assert ("ok" if problem is None else f"err {problem}") == _go_base64_says(go_server, text.encode())
