"""Go's and Ollama's refusals of decoded values (decoy/govalues.py, bodies.py), without a server."""

from __future__ import annotations

import pytest

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.govalues import options_error


@pytest.mark.parametrize(
    ("raw", "literal"),
    [
        (b'{"dimensions":1.5}', "1.5"),
        (b'{"dimensions":1e3}', "1e3"),
        (b'{"dimensions":9223372036854775808}', "9223372036854775808"),
    ],
)
def test_an_int_field_takes_only_an_int64_literal(raw: bytes, literal: str) -> None:
    with pytest.raises(rq.BadRequest) as refused:
        rq.decode(raw, rq.EMBED)
    assert refused.value.message == (
        f"json: cannot unmarshal number {literal} into Go struct field EmbedRequest.dimensions of type int"
    )
    assert rq.decode(b'{"dimensions":-9223372036854775808}', rq.EMBED) == {"dimensions": -(1 << 63)}


def test_options_are_checked_like_api_options_frommap() -> None:
    assert options_error({"temperature": 0.5, "num_ctx": 4096, "stop": ["x"], "unknown": "kept"}) is None
    assert options_error({"num_ctx": "big"}) == 'option "num_ctx" must be of type integer'
    assert options_error({"use_mmap": 1}) == 'option "use_mmap" must be of type boolean'
    assert options_error({"stop": "x"}) == 'option "stop" must be of type array'
    assert options_error({"stop": ["x", 1]}) == 'option "stop" must be of an array of strings'
    assert options_error({"temperature": None}) is None
