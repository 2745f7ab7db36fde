"""The `authenticate` stage's own checks, with a key store that hands back whatever it is given: a revoked
or expired key is refused even when the store returns it (defence in depth; mutants of these lines
survived every test that went through the real store, which filters such keys itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts, RequestHeaders
from ollama_guard.gateway.stages.authenticate import authenticate
from ollama_guard.gateway.stages.judge_body import chunked

TOKEN = "og_0123456789abcdef_" + "A" * 43


class Store:
    def __init__(self, key: ApiKey) -> None:
        self.key = key

    async def authenticate(self, presented: str) -> ApiKey:
        assert presented == TOKEN
        return self.key


def _key(*, revoked: bool = False, expires_at: datetime | None = None) -> ApiKey:
    return ApiKey("0123456789abcdef", "k", Role("read"), ("*",), None, None, None,
                  datetime.now(UTC) - timedelta(days=30), expires_at, revoked)


async def _outcome(key: ApiKey) -> str:
    headers = RequestHeaders([(b"authorization", f"Bearer {TOKEN}".encode())])
    facts = AuditFacts(method="GET", path="/api/tags", client="127.0.0.1", request_id="r")
    try:
        await authenticate(headers, facts, Store(key))
    except Refusal as refusal:
        assert refusal.status == 401
        return refusal.reason
    return "ok"


@pytest.mark.parametrize(
    ("key", "outcome"),
    [
        (_key(), "ok"),
        (_key(revoked=True), "revoked-key"),
        (_key(expires_at=datetime.now(UTC) - timedelta(hours=1)), "expired-key"),
        (_key(expires_at=datetime.now(UTC) - timedelta(seconds=1)), "expired-key"),
        (_key(expires_at=(datetime.now(UTC) - timedelta(hours=1)).replace(tzinfo=None)), "expired-key"),
        (_key(expires_at=datetime.now(UTC) + timedelta(hours=1)), "ok"),
    ],
)
async def test_revoked_and_expired_keys_are_refused_by_the_stage_itself(key: ApiKey, outcome: str) -> None:
    assert await _outcome(key) == outcome


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b" chunked ", b"chunked\t"])
def test_one_chunked_transfer_coding_is_chunked(value: bytes) -> None:
    assert chunked(value, "1.1") is True
    assert chunked(None, "1.1") is False and chunked(None, "1.0") is False


@pytest.mark.parametrize("value", [b"identity, chunked", b"gzip, chunked", b"chunked, chunked", b"identity",
                                   b"x-chunked", b"chunkedx", b""])
def test_any_other_transfer_coding_is_501_as_in_go(value: bytes) -> None:
    # Go's net/http: `!ascii.EqualFold(raw[0], "chunked")` → unsupportedTEError → 501
    with pytest.raises(Refusal) as refused:
        chunked(value, "1.1")
    assert refused.value.status == 501 and refused.value.reason == "unsupported-transfer-encoding"


def test_transfer_encoding_on_http_1_0_is_refused() -> None:
    with pytest.raises(Refusal) as refused:  # Go ignores it and would read the chunks as a request
        chunked(b"chunked", "1.0")
    assert refused.value.status == 400 and refused.value.reason == "bad-transfer-encoding"
