"""Tests that kill mutants which survived the suite (issue 10, "Tests that could not fail"): each test
here goes red under one single-line change of the security code it names."""

from __future__ import annotations

import ipaddress

import pytest

from ollama_guard.gateway.patterns import compile_model_patterns, key_model_matcher
from ollama_guard.gateway.stages.authorise import role_allows
from ollama_guard.gateway.stages.client import client_address
from ollama_guard.ollama.gojson import BodyError, parse_body
from ollama_guard.ollama.names import canonical_model_name
from ollama_guard.scan import gate


# --- model patterns: fullmatch, never match ---------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("llama3:8b", "llama3:8b-x"),
        ("llama3:8b", "llama3:8b-instruct-q4_0"),
        ("llama3", "llama3:latest-evil"),
        ("qwen*:7b", "qwen2:7b-extra"),
        ("library/mistral:7b", "mistral:7b0"),
    ],
)
def test_a_pattern_does_not_allow_a_longer_name(pattern: str, name: str) -> None:
    matcher = key_model_matcher((pattern,))
    assert matcher(canonical_model_name(name)) is False
    assert compile_model_patterns((pattern, "other:1b"))(canonical_model_name(name)) is False


def test_a_pattern_allows_exactly_its_name() -> None:
    assert key_model_matcher(("llama3:8b",))(canonical_model_name("llama3:8b")) is True


# --- X-Forwarded-For: the rightmost hop that is not a trusted proxy ---------------------------------
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32"))


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (b"203.0.113.9", "203.0.113.9"),
        (b"198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the left hop was written by the client
        (b"198.51.100.1, 203.0.113.9, 10.0.0.7", "203.0.113.9"),  # a second proxy of ours
        (b"1.1.1.1,2.2.2.2,3.3.3.3,10.1.1.1,10.2.2.2", "3.3.3.3"),
        (b"10.1.1.1, 10.2.2.2", "10.1.1.1"),  # only proxies: the leftmost
    ],
)
def test_the_client_is_the_rightmost_untrusted_hop(forwarded: bytes, client: str) -> None:
    assert client_address("127.0.0.1", forwarded, TRUSTED) == client


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_address("203.0.113.50", b"10.0.0.1, 127.0.0.1", TRUSTED) == "203.0.113.50"
    assert client_address("127.0.0.1", b"198.51.100.1", ()) == "127.0.0.1"


# --- roles: an unknown role reaches nothing -----------------------------------------------------------
@pytest.mark.parametrize("role", ["root", "superuser", "", "ADMIN", "Admin", "admin ", "None"])
def test_an_unknown_role_reaches_nothing(role: str) -> None:
    for needed in ("read", "inference", "admin"):
        assert role_allows(role, needed) is False


def test_the_known_roles_rank_read_inference_admin() -> None:
    assert role_allows("admin", "admin") and role_allows("inference", "read")
    assert not role_allows("inference", "admin") and not role_allows("read", "inference")


# --- lone surrogates, in either case, in keys and in values -------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"x","prompt":"\\uD800"}',
        b'{"model":"x","prompt":"\\ud800"}',
        b'{"model":"x","prompt":"\\uDFFF tail"}',
        b'{"model":"x","options":{"stop":["\\uDBFF"]}}',
        b'{"\\uD83D":"x"}',
        b'{"model":"x","messages":[{"content":"\\uDc00"}]}',
    ],
)
def test_unpaired_surrogate_escapes_are_refused_in_any_case(body: bytes) -> None:
    with pytest.raises(BodyError, match="surrogate"):
        parse_body(body, max_depth=16)


def test_a_paired_surrogate_escape_is_a_character() -> None:
    assert parse_body(b'{"prompt":"\\uD83D\\uDE00"}')[0][1] == "\U0001f600"


# --- the scanner's own deny-list, alone ---------------------------------------------------------------
DANGEROUS = [
    "/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/signout", "/api/me",
    "/api/user/keys/abc", "/api/generate", "/api/chat", "/api/embed", "/api/embeddings",
    "/api/experimental/web_search", "/api/load", "/api/unload", "/v1/chat/completions", "/v1/completions",
    "/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/audio/transcriptions",
    "/v1/images/generations", "/completion", "/completions", "/prompt", "/infill", "/tokenize",
    "/detokenize", "/embedding", "/embeddings", "/rerank", "/reranking", "/slots", "/upload", "/queue",
    "/interrupt", "/free", "/api/pull/", "/v1/chat/",
]


@pytest.mark.parametrize("path", DANGEROUS)
def test_the_deny_list_alone_refuses_every_state_changing_or_compute_route(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the allowlist and the catalog's second opinion out of the way: only the deny-list decides
    every_method = frozenset({(m, path) for m in ("GET", "POST", "HEAD", "OPTIONS")})
    monkeypatch.setattr(gate, "_ALLOWED", every_method)
    monkeypatch.setattr(gate, "match_endpoint", lambda _method, _path: None)
    for method in ("GET", "POST", "HEAD"):
        with pytest.raises(gate.ProbeNotAllowed, match="can change the target or spend compute"):
            gate.check_probe(method, path)


@pytest.mark.parametrize("path", ["/api/tags", "/api/version", "/api/pullx", "/v1/models", "/api/ps", "/"])
def test_the_deny_list_leaves_read_only_routes_alone(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gate, "_ALLOWED", frozenset({("GET", path)}))
    monkeypatch.setattr(gate, "match_endpoint", lambda _method, _path: None)
    gate.check_probe("GET", path)


# --- listings: what cannot be decoded is an empty listing, never the bytes as they came ----------------
def test_a_listing_in_an_unknown_or_undecodable_encoding_is_empty() -> None:
    import gzip

    from ollama_guard.gateway.listing import MAX_DECODED_LISTING, decode_listing

    plain = b'{"models":[{"name":"secret:latest"}]}'
    assert decode_listing(plain, b"br") == b""  # plain JSON labelled with a coding we cannot undo
    assert decode_listing(gzip.compress(plain), b"gzip") == plain
    assert decode_listing(gzip.compress(plain)[:-8], b"gzip") == b""  # truncated
    bomb = gzip.compress(b" " * (MAX_DECODED_LISTING + 1024))
    assert decode_listing(bomb, b"gzip") == b""  # larger than the bound
