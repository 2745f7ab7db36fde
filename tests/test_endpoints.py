"""The endpoint catalog: every Ollama route, matched exactly, with its history and risk classes."""

import pytest

from ollama_guard.ollama.endpoints import (
    CURRENT_ENDPOINTS,
    ENDPOINT_CLASSES,
    ENDPOINTS,
    endpoint,
    endpoints_in,
    endpoints_with,
    match_endpoint,
    match_endpoint_params,
    role_allows,
)
from ollama_guard.ollama.versions import parse_version

# The route table of Ollama v0.33.0-rc2 (server/routes.go GenerateRoutes), written out independently.
CURRENT_ROUTES = {
    "HEAD /", "GET /", "HEAD /api/version", "GET /api/version", "GET /api/status",
    "POST /api/pull", "POST /api/push", "HEAD /api/tags", "GET /api/tags", "POST /api/show",
    "DELETE /api/delete", "POST /api/me", "POST /api/signout", "DELETE /api/user/keys/{key}",
    "POST /api/create", "POST /api/blobs/{digest}", "HEAD /api/blobs/{digest}", "POST /api/copy",
    "POST /api/experimental/web_search", "POST /api/experimental/web_fetch",
    "GET /api/experimental/model-recommendations", "GET /api/ps", "POST /api/generate",
    "POST /api/chat", "POST /api/embed", "POST /api/embeddings", "POST /v1/chat/completions",
    "POST /v1/completions", "POST /v1/embeddings", "GET /v1/models", "GET /v1/models/{model}",
    "POST /v1/responses", "POST /v1/audio/transcriptions", "POST /v1/messages",
}  # fmt: skip


def test_current_catalog_is_exactly_ollamas_route_table():
    assert {e.key for e in CURRENT_ENDPOINTS} == CURRENT_ROUTES


def test_removed_routes_are_kept_with_their_history():
    removed = {e.key: (e.since, e.removed) for e in ENDPOINTS if e.removed}
    assert removed == {
        "GET /api/experimental/aliases": ("0.15.5", "0.18.0"),
        "POST /api/experimental/aliases": ("0.15.5", "0.18.0"),
        "DELETE /api/experimental/aliases": ("0.15.5", "0.18.0"),
        "POST /v1/images/generations": ("0.14.3", "0.32.6"),
        "POST /v1/images/edits": ("0.15.0", "0.32.6"),
    }


def test_catalog_entries_are_well_formed():
    keys = [e.key for e in ENDPOINTS]
    assert len(keys) == len(set(keys))
    for e in ENDPOINTS:
        assert e.method in {"GET", "HEAD", "POST", "DELETE"}
        assert e.path.startswith("/")
        assert e.classes and e.classes <= ENDPOINT_CLASSES
        parse_version(e.since)
        if e.removed:
            assert parse_version(e.since) < parse_version(e.removed)
        assert e.stream in (None, "ndjson", "sse")
        if e.method in ("GET", "HEAD"):
            assert e.model_fields == ()  # no request body


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/", "GET /"),
        ("HEAD", "/", "HEAD /"),
        ("GET", "/api/tags", "GET /api/tags"),
        ("HEAD", "/api/tags", "HEAD /api/tags"),
        ("GET", "/api/tags?x=1", "GET /api/tags"),
        ("POST", "/api/pull", "POST /api/pull"),
        ("HEAD", "/api/blobs/sha256:" + "a" * 64, "HEAD /api/blobs/{digest}"),
        ("POST", "/api/blobs/sha256-00", "POST /api/blobs/{digest}"),
        ("HEAD", "/api/blobs/..", "HEAD /api/blobs/{digest}"),  # the segment is the digest; validated later
        ("GET", "/v1/models/llama3:latest", "GET /v1/models/{model}"),
        ("DELETE", "/api/user/keys/c3NoLWVkMjU1MTk", "DELETE /api/user/keys/{key}"),
        ("POST", "/v1/messages", "POST /v1/messages"),
        ("POST", "/v1/images/generations", "POST /v1/images/generations"),
    ],
)
def test_match_hits_the_right_route(method, path, expected):
    hit = match_endpoint(method, path)
    assert hit is not None and hit.key == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tags/"),  # trailing slash (gin would redirect; we refuse)
        ("GET", "/API/tags"),  # case
        ("get", "/api/tags"),  # method case
        ("GET", "//api/tags"),
        ("GET", "/api//tags"),
        ("GET", "/api/./tags"),
        ("GET", "/api/x/../tags"),
        ("GET", "/api/t%61gs"),  # percent-encoded letters
        ("POST", "/api/tags"),  # wrong method
        ("HEAD", "/api/ps"),  # Ollama has no HEAD for /api/ps
        ("GET", "/api/blobs/sha256:" + "a" * 64),
        ("HEAD", "/api/blobs/"),  # empty parameter
        ("HEAD", "/api/blobs/a/b"),  # two segments
        ("GET", "/v1/models/hf.co/org/m"),
        ("GET", "/debug/pprof/"),
        ("POST", "/api/load"),
        ("GET", ""),
        ("GET", "api/tags"),
    ],
)
def test_match_is_exact_and_refuses_everything_else(method, path):
    assert match_endpoint(method, path) is None


def test_match_returns_raw_parameters():
    hit = match_endpoint_params("POST", "/api/blobs/sha256%3Aabc")
    assert hit is not None
    ep, params = hit
    assert ep.path == "/api/blobs/{digest}" and params == {"digest": "sha256%3Aabc"}


def test_removed_routes_can_be_excluded():
    assert match_endpoint("POST", "/v1/images/edits", include_removed=False) is None
    assert match_endpoint("POST", "/v1/images/edits") is not None


def test_endpoints_by_version():
    old = {e.key for e in endpoints_in("0.1.33")}
    assert "POST /api/chat" in old and "HEAD /api/blobs/{digest}" in old
    assert "GET /api/ps" not in old  # 0.1.38
    assert "POST /api/embed" not in old  # 0.2.6
    assert "/v1/models" not in {e.path for e in endpoints_in("0.1.33")}
    assert "GET /api/version" not in {e.key for e in endpoints_in("0.1.13")}
    assert "GET /api/version" in {e.key for e in endpoints_in("0.1.14")}
    assert "POST /v1/images/generations" in {e.key for e in endpoints_in("0.32.5")}
    assert "POST /v1/images/generations" not in {e.key for e in endpoints_in("0.32.6")}
    assert "GET /api/experimental/aliases" in {e.key for e in endpoints_in("0.17.9")}
    assert "GET /api/experimental/aliases" not in {e.key for e in endpoints_in("0.18.0")}
    # a 0.0.0 development build is treated as the newest: the current routes
    assert {e.key for e in endpoints_in("0.0.0")} == CURRENT_ROUTES


def test_classes_and_model_fields_of_key_routes():
    pull = endpoint("POST", "/api/pull")
    assert {"admin", "outbound"} <= pull.classes and pull.model_fields == ("model", "name")
    assert pull.stream == "ndjson"
    assert endpoint("POST", "/api/copy").model_fields == ("source", "destination")
    assert "from" in endpoint("POST", "/api/create").model_fields
    assert endpoint("DELETE", "/api/delete").is_admin
    assert endpoint("POST", "/api/generate").is_compute
    assert endpoint("POST", "/v1/chat/completions").stream == "sse"
    assert endpoint("GET", "/api/tags").is_read_only
    assert endpoint("POST", "/api/me").is_outbound and "account" in endpoint("POST", "/api/me").classes
    admin = {e.key for e in endpoints_with("admin")}
    assert {"POST /api/pull", "POST /api/push", "POST /api/create", "POST /api/copy", "DELETE /api/delete",
            "POST /api/blobs/{digest}", "POST /api/signout"} <= admin  # fmt: skip
    assert not any(e.is_admin for e in endpoints_with("read") if e.method == "GET")
    with pytest.raises(ValueError):
        endpoints_with("bogus")


def test_roles_follow_the_product_contract():
    read_routes = {"GET /", "HEAD /", "GET /api/version", "HEAD /api/version", "GET /api/tags",
                   "HEAD /api/tags", "GET /api/ps", "POST /api/show", "GET /v1/models"}  # fmt: skip
    inference_routes = {"POST /api/generate", "POST /api/chat", "POST /api/embed",
                        "POST /api/embeddings", "POST /v1/chat/completions", "POST /v1/completions",
                        "POST /v1/embeddings"}  # fmt: skip
    admin_routes = {"POST /api/pull", "POST /api/push", "POST /api/create", "POST /api/copy",
                    "DELETE /api/delete", "POST /api/blobs/{digest}", "HEAD /api/blobs/{digest}"}  # fmt: skip
    by_key = {e.key: e for e in ENDPOINTS}
    for key in read_routes:
        assert role_allows("read", by_key[key]), key
    for key in inference_routes:
        assert not role_allows("read", by_key[key]) and role_allows("inference", by_key[key]), key
    for key in admin_routes:
        assert not role_allows("inference", by_key[key]) and role_allows("admin", by_key[key]), key
    with pytest.raises(ValueError):
        role_allows("root", by_key["GET /"])
