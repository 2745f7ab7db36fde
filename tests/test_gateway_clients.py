"""What client libraries see (issue 9, item 9): the gateway's own errors on /v1/* are OpenAI-shaped, so
the official `openai` client shows the reason; Ollama routes keep `{"error": "…"}`; an API key sent
next to a placeholder (`x-api-key: ollama`, as Ollama's Anthropic-compatibility docs have clients
send) is not a disagreement."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from support.gateway import Gateway, KeySpec, create_keys, http_bytes, raw_request, start_gateway
from support.servers import start_decoy


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("clients")
    db = f"sqlite:///{work / 'guard.db'}"
    keys = create_keys(db, [KeySpec("user", "inference", models=["llama3.2:1b"]),
                            KeySpec("other", "inference", rpm=1)])
    with start_decoy(work, seed_models=2) as decoy, start_gateway(work / "gw", decoy.url, db_url=db) as g:
        g.keys = keys
        g.decoy = decoy  # type: ignore[attr-defined]
        yield g


def _client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=10)


def test_openai_client_shows_the_gateways_reason_for_a_bad_key(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(gw, "og_not_a_key").models.list()
    error = caught.value
    assert error.status_code == 401
    assert error.code == "bad-key" and error.type == "authentication_error"
    assert isinstance(error.body, dict) and error.body["message"] == "invalid API key"
    assert error.body["param"] is None


def test_openai_client_shows_a_refused_model(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _client(gw, gw.keys["user"]).chat.completions.create(
            model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "model-not-allowed"
    assert "qwen2.5:0.5b" in caught.value.body["message"]  # type: ignore[index]


def test_openai_client_sees_rate_limits_with_retry_after(gw: Gateway) -> None:
    client = _client(gw, gw.keys["other"])
    client.models.list()
    with pytest.raises(openai.RateLimitError) as caught:
        client.models.list()
    assert caught.value.code == "rate-limited" and caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"]


def test_ollama_routes_keep_ollamas_error_shape(gw: Gateway) -> None:
    resp = raw_request(gw.host, gw.port, http_bytes("GET", "/api/tags"))
    assert resp.status == 401 and json.loads(resp.body) == {"error": "API key required"}


@pytest.mark.parametrize(
    ("authorization", "api_key", "status"),
    [
        ("Bearer {key}", "ollama", 200),  # Ollama's Anthropic-compatibility docs: x-api-key: ollama
        ("Bearer ollama", "{key}", 200),
        ("Bearer {key}", "{key}", 200),
        ("Bearer {key}", "og_0123456789abcdef_" + "A" * 43, 401),  # two keys of ours that differ
        ("Bearer ollama", "placeholder", 401),  # no key of ours at all
    ],
)
def test_a_placeholder_next_to_a_key_is_not_a_disagreement(
    gw: Gateway, authorization: str, api_key: str, status: int
) -> None:
    key = gw.keys["user"]
    headers = {"Authorization": authorization.format(key=key), "x-api-key": api_key.format(key=key)}
    resp = raw_request(gw.host, gw.port, http_bytes("GET", "/api/version", headers=headers))
    assert resp.status == status, resp.body
