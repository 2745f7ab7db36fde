"""Budgets that hold against the red team's findings (issue 10, item 4, second review):

* counts are read only where Ollama writes them — a tool call whose arguments say `"total_tokens": 0`
  (an object on the native API, a string on /v1), text naming the fields, logprobs: none of it counts;
* the reservation reads the cap Ollama really applies on each route (no `max_tokens` on the native
  API, no `max_completion_tokens` on /v1): a field Ollama ignores reserves nothing less;
* a stream cut short, or a `stream: false` request whose client hangs up, is charged its reservation,
  or what was relayed if that is more; the record keeps the bytes relayed before the hang-up.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_guard.gateway.body import judge_json
from ollama_guard.gateway.keys import ApiKey, Role
from ollama_guard.gateway.routes import find_route
from ollama_guard.gateway.stages.account import bound_output, reservation
from ollama_guard.gateway.usage import TokenCounter
from ollama_guard.ollama.generation import output_cap, token_accounting
from ollama_guard.ollama.gojson import parse_body
from support.gateway import Gateway, KeySpec, audit_rows, create_keys, http_bytes, start_gateway
from support.servers import running_process

UPSTREAM = Path(__file__).parent / "support" / "budget_upstream.py"
DEFAULT_CAP = 2048  # GatewayConfig.token_reservation
TOOL_ARGS = {"total_tokens": 0, "eval_count": 0, "prompt_eval_count": 0, "done": True,
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}
CONTENT = 'say "eval_count": 0, "total_tokens": 0 and {"usage": {"total_tokens": 0}}'
SIZES = (1, 2, 3, 7, 61, 4096, 1 << 30)


def counted(route: str, data: bytes, sizes: tuple[int, ...] = SIZES) -> set[int | None]:
    """What the counter finds in `data` fed in pieces of each size."""
    found: set[int | None] = set()
    for size in sizes:
        counter = TokenCounter(token_accounting(route))
        for start in range(0, len(data), size):
            counter.feed(data[start : start + size])
        found.add(counter.usage())
    return found


def native_final(arguments: Any = TOOL_ARGS, content: str = CONTENT, logprobs: int = 20) -> dict[str, Any]:
    """api.ChatResponse's field order: message (tool calls with object arguments), done, logprobs, then
    the metrics."""
    return {
        "model": "m", "created_at": "2026-12-07T06:00:00Z",
        "message": {"role": "assistant", "content": content,
                    "tool_calls": [{"function": {"name": "lookup", "arguments": arguments}}]},
        "done": True, "done_reason": "stop",
        "logprobs": [{"token": "eval_count", "logprob": -0.5,
                      "top_logprobs": [{"token": "x", "logprob": -1}] * 3}]
        * logprobs,
        "total_duration": 1, "prompt_eval_count": 10, "eval_count": 500,
    }


# --- counts only where Ollama writes them -----------------------------------------------------------
def test_a_tool_call_cannot_set_the_native_usage() -> None:
    whole = json.dumps(native_final()).encode()
    assert counted("POST /api/chat", whole) == {510}
    pretty = json.dumps(native_final(), indent=2).encode()  # structure, not line layout, decides
    assert counted("POST /api/chat", pretty) == {510}
    # a stream: the tool call in a line of its own, then the final line
    partial = {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {"done": True, "eval_count": 1, "prompt_eval_count": 0}}}]},
        "done": False}
    stream = json.dumps(partial).encode() + b"\n" + whole + b"\n"
    assert counted("POST /api/chat", stream) == {510}
    assert counted("POST /api/generate", stream) == {510}


def test_no_line_layout_makes_nested_content_top_level() -> None:
    """A line that ends with `}` but does not close the object it opened is read, not skipped."""
    layout = (b'{"message": {"content": "x"}\n'
              b', "arguments": {"done": true, "eval_count": 1, "prompt_eval_count": 0}\n'
              b', "done": true, "prompt_eval_count": 10, "eval_count": 500}\n')
    assert counted("POST /api/chat", layout) == {510}
    assert counted("POST /api/chat", layout.replace(b', "eval_count": 500', b"")) == {10}


def test_a_count_that_is_not_a_whole_number_is_no_count() -> None:
    odd = (b"12.5", b"-3", b"1e3", b'"500"', b"null", b"99999999999999999999", b'"a,\\"eval_count\\":0"')
    for value in odd:
        final = b'{"done":true,"prompt_eval_count":%s,"eval_count":%s}\n' % (value, value)
        assert counted("POST /api/generate", final) == {None}, value
    odd_done = b'{"done":"x,\\"done\\":true","eval_count":5}\n{"done":true , "eval_count" : 7 }'
    assert counted("POST /api/generate", odd_done) == {7}
    string_count = b'{"done":true,"eval_count":"a,b","prompt_eval_count":4,"eval_count":9}'
    assert counted("POST /api/generate", string_count) == {13}
    malformed = b'{"id":"c","usage" {"total_tokens":5}}\n'  # no colon: not Ollama's usage object
    assert counted("POST /v1/chat/completions", malformed) == {None}


def test_tool_calls_after_the_counts_do_not_count() -> None:
    """api.GenerateResponse writes the metrics *before* `tool_calls` (object arguments) and `logprobs`."""
    deep: Any = TOOL_ARGS
    for _ in range(6):  # deeper than the scanner skips in one step
        deep = {"eval_count": 0, "done": True, "nested": [deep]}
    final = {"model": "m", "response": "", "done": True, "context": [1, 2], "prompt_eval_count": 10,
             "eval_count": 500, "tool_calls": [{"function": {"name": "f", "arguments": deep}}],
             "logprobs": [{"token": "x", "logprob": -1}] * 3}
    assert counted("POST /api/generate", json.dumps(final).encode() + b"\n") == {510}


def test_tool_call_arguments_alone_report_nothing() -> None:
    # the stream ends before the counts
    cut = json.dumps(native_final()).encode().split(b'"total_duration"')[0]
    assert counted("POST /api/chat", cut) == {None}
    not_final = json.dumps({**native_final(), "done": False}).encode() + b"\n"
    assert counted("POST /api/chat", not_final) == {None}
    quoted = json.dumps({**native_final(), "done": "true"}).encode()
    assert counted("POST /api/chat", quoted) == {None}


def test_string_arguments_and_content_cannot_set_openai_usage() -> None:
    answer = {
        "id": "c", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT, "tool_calls": [
            {"id": "1", "type": "function", "function": {"name": "f", "arguments": json.dumps(TOOL_ARGS)}}]},
            "logprobs": {"content": [{"token": "usage", "logprob": -1}] * 30},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50},
    }
    assert counted("POST /v1/chat/completions", json.dumps(answer).encode()) == {50}
    # object-shaped arguments nested anywhere (an upstream that writes them so) do not count either
    answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = TOOL_ARGS
    assert counted("POST /v1/chat/completions", json.dumps(answer).encode()) == {50}
    del answer["usage"]
    assert counted("POST /v1/chat/completions", json.dumps(answer).encode()) == {None}


def _sse(*events: dict[str, Any], done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def test_an_unfinished_completions_stream_with_zero_usage_is_no_report() -> None:
    chunk = {"id": "c", "object": "text_completion", "choices": [{"text": "a", "index": 0}],
             "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}
    final = {"id": "c", "choices": [],
             "usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}}
    assert counted("POST /v1/completions", _sse(chunk, chunk, done=False)) == {None}
    assert counted("POST /v1/completions", _sse(chunk, chunk, final)) == {10}


def test_responses_and_messages_streams_are_read_where_ollama_writes_them() -> None:
    created = {"type": "response.created", "sequence_number": 0,
               "response": {"id": "r", "output": [], "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": CONTENT, "sequence_number": 1}
    completed = {"type": "response.completed", "sequence_number": 2, "response": {
        "id": "r", "output": [{"content": [{"text": json.dumps({"usage": {"total_tokens": 0}})}]}],
        "usage": {"input_tokens": 3, "output_tokens": 9, "total_tokens": 12}}}
    stream = b"".join(
        b"event: %s\n" % e["type"].encode() + _sse(e, done=False) for e in (created, delta, completed)
    )
    assert counted("POST /v1/responses", stream) == {12}
    assert counted("POST /v1/responses", stream.split(b"event: response.completed")[0]) == {None}
    start = {"type": "message_start", "message": {"id": "m", "content": [], "usage": {"input_tokens": 7,
                                                                                   "output_tokens": 0}}}
    block = {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta",
                                                                  "partial_json": json.dumps(TOOL_ARGS)}}
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"input_tokens": 7,
                                                                                  "output_tokens": 30}}
    assert counted("POST /v1/messages", _sse(start, block, done=False)) == {None}  # message_start is early
    assert counted("POST /v1/messages", _sse(start, block, end, done=False)) == {37}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5)
    | st.sampled_from(["total_tokens", "eval_count", '"', "\\", "{"])
    | st.text(alphabet='ab"\\{}[]:,\n', max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["total_tokens", "eval_count", "prompt_eval_count", "done", "usage", "x"]),
        inner, max_size=5,
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=_JSON, content=st.text(max_size=40), cut=st.integers(1, 97))
def test_no_generated_content_changes_the_count(arguments: Any, content: str, cut: int) -> None:
    body = json.dumps(native_final(arguments, content, logprobs=2)).encode()
    assert counted("POST /api/chat", body, (cut, 1 << 30)) == {510}
    v1 = {"choices": [{"message": {"content": content, "tool_calls": [{"function": {
        "arguments": json.dumps(arguments)}}]}}], "usage": {"total_tokens": 77}}
    assert counted("POST /v1/chat/completions", _sse(v1), (cut, 1 << 30)) == {77}


def test_the_scanner_keeps_up_with_long_answers() -> None:
    """Megabytes of logprobs in 64 KiB chunks, and a stream of ordinary lines: both well under the
    time it takes to relay them (a loose bound for a shared machine)."""
    body = json.dumps(native_final(logprobs=20_000)).encode()  # ~2 MB, the counts at the end
    started = time.perf_counter()
    assert counted("POST /api/chat", body, (65536,)) == {510}
    assert time.perf_counter() - started < 2.0, len(body)
    lines = [json.dumps({"model": "m", "message": {"content": f"w{i}"}, "done": False}).encode() + b"\n"
             for i in range(20_000)]
    counter = TokenCounter(token_accounting("POST /api/chat"))
    started = time.perf_counter()
    for line in lines:
        counter.feed(line)
    assert time.perf_counter() - started < 1.0
    assert counter.usage() is None and counter.lines == 20_000


# --- the cap Ollama really applies ------------------------------------------------------------------
def _key(budget: int | None = 100_000) -> ApiKey:
    return ApiKey(id=uuid.uuid4().hex[:16], name="k", role=Role.INFERENCE, models=("*",),
                  created_at=datetime.now(UTC), expires_at=None, revoked=False, rpm=None,
                  concurrency=None, tokens_per_day=budget)


def _reserved(path: str, body: dict[str, Any], budget: int | None = 100_000) -> int:
    raw = json.dumps(body).encode()
    found = find_route("POST", path)
    assert found is not None
    prompt = -(-len(raw) // 4)
    return reservation(found[0], _key(budget), judge_json(raw, 32), DEFAULT_CAP, len(raw)) - prompt


@pytest.mark.parametrize(("path", "fields", "output"), [
    ("/api/generate", {"options": {"num_predict": 50}}, 50),
    ("/api/chat", {"options": {"num_predict": 50}}, 50),
    ("/api/generate", {"max_tokens": 20}, DEFAULT_CAP),  # Ollama has no max_tokens here
    ("/api/chat", {"max_completion_tokens": 20, "max_output_tokens": 20}, DEFAULT_CAP),
    ("/api/chat", {"num_predict": 20}, DEFAULT_CAP),  # only inside options
    ("/api/chat", {"options": {"NUM_PREDICT": 20}}, DEFAULT_CAP),  # options keys are exact
    ("/api/chat", {"Options": {"num_predict": 20}}, 20),  # a struct field matches case-insensitively
    ("/api/chat", {"options": {"num_predict": -1}}, DEFAULT_CAP),  # until the context is full
    ("/api/chat", {"options": {"num_predict": -2}}, DEFAULT_CAP),
    ("/api/chat", {"options": {"num_predict": 0}}, DEFAULT_CAP),
    ("/api/chat", {"options": {"num_predict": 0.5}}, DEFAULT_CAP),  # FromMap truncates to 0
    ("/api/chat", {"options": {"num_predict": 7.9}}, 7),
    ("/api/chat", {"options": {"num_predict": 1e30}}, DEFAULT_CAP),
    ("/api/chat", {"options": {"num_predict": "20"}}, DEFAULT_CAP),
    ("/api/chat", {"options": {"num_predict": True}}, DEFAULT_CAP),
    ("/api/chat", {"options": 50}, DEFAULT_CAP),
    ("/v1/chat/completions", {"max_tokens": 50}, 50),
    ("/v1/chat/completions", {"MAX_TOKENS": 50}, 50),
    ("/v1/chat/completions", {"max_completion_tokens": 50}, DEFAULT_CAP),  # not in ChatCompletionRequest
    ("/v1/chat/completions", {"options": {"num_predict": 50}}, DEFAULT_CAP),
    ("/v1/chat/completions", {"max_tokens": -1}, DEFAULT_CAP),
    ("/v1/completions", {"max_tokens": 50}, 50),
    ("/v1/completions", {"max_output_tokens": 50}, DEFAULT_CAP),
    ("/v1/responses", {"max_output_tokens": 50}, 50),
    ("/v1/responses", {"max_tokens": 50}, DEFAULT_CAP),
    ("/v1/messages", {"max_tokens": 50}, 50),
])
def test_the_reservation_reads_the_cap_ollama_applies(path: str, fields: dict[str, Any], output: int) -> None:
    assert _reserved(path, {"model": "m", "prompt": "hi", **fields}) == output


def test_embeddings_reserve_their_prompt_and_keys_without_budget_nothing() -> None:
    assert _reserved("/api/embed", {"model": "m", "input": "hi", "options": {"num_predict": 50}}) == 0
    assert _reserved("/v1/embeddings", {"model": "m", "input": "hi", "max_tokens": 50}) == 0
    found = find_route("POST", "/api/chat")
    assert found is not None
    assert reservation(found[0], _key(None), judge_json(b'{"model":"m"}', 32), DEFAULT_CAP, 13) == 0


def test_output_cap_reads_numbers_as_ollama_does() -> None:
    assert [output_cap(v) for v in (1, 2.7, 2**53 - 1)] == [1, 2, 2**53 - 1]
    # from 2**53 on no cap: Go reads one near 2**63 as MinInt64, "unbounded" (test_gateway_budget_caps)
    unbounded = (None, 0, -1, 0.99, 2**53, 2**63 - 1, 2**63, float("inf"), float("nan"), "5", False, [5])
    assert {output_cap(v) for v in unbounded} == {None}


# --- through a running gateway ----------------------------------------------------------------------
KEYS = {"tool": 2000, "native": 300, "cut": 100_000, "hangup": 100_000, "relayed": 100_000, "v1": 1000}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("budget-holes")
    db = f"sqlite:///{tmp / 'guard.db'}"
    keys = create_keys(db, [KeySpec(name, "inference", tokens_per_day=n) for name, n in KEYS.items()])
    with running_process([sys.executable, str(UPSTREAM)]) as (_proc, upstream):
        with start_gateway(tmp / "gw", upstream, db_url=db) as gateway:
            gateway.keys = keys
            yield gateway


def _post(gw: Gateway, key: str, path: str, body: dict[str, Any]) -> int:
    """The status of a request whose whole answer is read (a stream to its end: `Connection: close`)."""
    data = json.dumps(body).encode()
    request = http_bytes("POST", path, headers={"Authorization": f"Bearer {gw.keys[key]}"}, body=data)
    with socket.create_connection((gw.host, gw.port), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _records(gw: Gateway, key: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        rows = [r for r in audit_rows(gw.db_url) if r["key_name"] == key]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _reservation_of(body: dict[str, Any], output: int) -> int:
    return output + -(-len(json.dumps(body).encode()) // 4)


def test_tool_call_arguments_do_not_zero_the_charge(gw: Gateway) -> None:
    """Red team: 10 answers of 510 tokens on a 2000/day budget were all 200, each charged 0."""
    body = {"model": "m:latest", "stream": False, "options": {"num_predict": 500},
            "messages": [{"role": "user", "content": "hi"}]}
    statuses = [_post(gw, "tool", "/api/chat", body) for _ in range(10)]
    assert statuses == [200] * 4 + [429] * 6, statuses
    rows = _records(gw, "tool", 10)
    assert [r["tokens"] for r in rows if r["status"] == 200] == [510] * 4


def test_a_cap_ollama_ignores_does_not_shrink_the_reservation(gw: Gateway) -> None:
    """Red team: 20 concurrent native requests with `max_tokens` on a 300/day budget all ran (4100 tokens)."""
    body = {"model": "m:latest", "prompt": "hi", "max_tokens": 20, "x_interval": 0}
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda _: _post(gw, "native", "/api/generate", body), range(20)))
    assert sorted(statuses) == [200] + [429] * 19, statuses
    charged = sum(r["tokens"] for r in _records(gw, "native", 20))
    # one answer, bounded by the gateway at its reservation (token_reservation, but never more than the
    # key's daily budget): within the budget plus one reservation
    assert charged == 5 + 300 <= 300 + _reservation_of(body, 300)


def _hang_up(gw: Gateway, key: str, path: str, body: dict[str, Any], *, lines: int, wait: float = 0) -> None:
    data = json.dumps(body).encode()
    with socket.create_connection((gw.host, gw.port), timeout=30) as sock:
        sock.sendall(http_bytes("POST", path, headers={"Authorization": f"Bearer {gw.keys[key]}"}, body=data))
        got = b""
        while got.count(b"\"done\": false") < lines:
            chunk = sock.recv(65536)
            assert chunk, got[:300]
            got += chunk
        time.sleep(wait)


def test_a_stream_cut_short_is_charged_its_reservation_and_its_bytes_recorded(gw: Gateway) -> None:
    body = {"model": "m:latest", "prompt": "hi", "options": {"num_predict": 300}, "x_interval": 0.02}
    _hang_up(gw, "cut", "/api/generate", body, lines=20)
    (row,) = _records(gw, "cut", 1)
    assert row["tokens"] == _reservation_of(body, 300), row  # not the ~20 lines relayed
    line = {"model": "m:latest", "created_at": "2026-12-07T06:00:00Z", "response": "", "done": False}
    seen = sum(len(json.dumps({**line, "response": f"w{i} "})) + 1 for i in range(20))
    assert row["bytes_out"] >= seen, row  # the 20 lines the client read (red team: recorded 0)


def test_a_client_that_hangs_up_on_a_whole_answer_is_charged_its_reservation(gw: Gateway) -> None:
    body = {"model": "m:latest", "stream": False, "options": {"num_predict": 64}, "x_delay": 3,
            "messages": [{"role": "user", "content": "hi"}]}
    _hang_up(gw, "hangup", "/api/chat", body, lines=0, wait=0.5)  # Ollama is still generating
    (row,) = _records(gw, "hangup", 1)
    assert row["tokens"] == _reservation_of(body, 64), row


def test_more_relayed_than_reserved_and_no_counts_is_charged_what_was_relayed(gw: Gateway) -> None:
    body = {"model": "m:latest", "prompt": "hi", "options": {"num_predict": 5}, "x_ignore_cap": True,
            "x_unbounded": 150, "x_interval": 0, "x_final": False}
    assert _post(gw, "relayed", "/api/generate", body) == 200
    (row,) = _records(gw, "relayed", 1)
    assert _reservation_of(body, 5) < 150
    assert row["tokens"] == 150, row


def test_v1_max_tokens_bounds_the_reservation(gw: Gateway) -> None:
    body = {"model": "m:latest", "max_tokens": 50, "x_delay": 1,
            "messages": [{"role": "user", "content": "hi"}]}
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: _post(gw, "v1", "/v1/chat/completions", body), range(3)))
    assert statuses == [200] * 3, statuses  # three reservations of ~80 fit in 1000 at once
    assert [r["tokens"] for r in _records(gw, "v1", 3)] == [60] * 3  # usage, not the tool call's zeros


# --- the reservation bounds the generation ----------------------------------------------------------
GO_DECODER = Path(__file__).parent / "go" / "jsonmerge" / "main.go"


def _bounded(path: str, body: bytes, cap: int = 64) -> bytes:
    found = find_route("POST", path)
    assert found is not None
    judged = judge_json(body, 32)
    bound_output(found[0], judged, cap)
    return judged.raw


@pytest.mark.parametrize(("path", "body", "changed"), [
    ("/api/generate", b'{"model":"m","prompt":"hi"}', True),
    ("/api/generate", b'{}', True),  # Ollama says "model is required"; the body stays JSON
    ("/api/chat", b'{"model":"m","options":{"num_predict":-1,"temperature":0.5}} \n', True),
    ("/api/chat", b'{"model":"m","Options":{"num_predict":0}}', True),
    ("/api/chat", b'{"model":"m","options":null}', True),
    ("/api/chat", b'{"model":"m","options":{"num_predict":10}}', False),
    ("/v1/chat/completions", b'{"model":"m","MAX_TOKENS":-1}', True),
    ("/v1/chat/completions", b'{"model":"m","max_tokens":10}', False),
    ("/v1/completions", b'{"model":"m","max_completion_tokens":10}', True),
    ("/v1/responses", b'{"model":"m","max_output_tokens":-5}', True),
    ("/v1/messages", b'{"model":"m"}', False),  # Ollama refuses it without max_tokens: left to say so
    ("/api/embed", b'{"model":"m","input":"x"}', False),
])
def test_an_unbounded_request_is_bounded_by_its_reservation(path: str, body: bytes, changed: bool) -> None:
    forwarded = _bounded(path, body)
    assert (forwarded != body) is changed
    if changed:
        # what was judged goes out as it was, the cap after it
        assert forwarded.startswith(body.rstrip()[:-1])
        cap = token_accounting(f"POST {path}").cap
        assert cap is not None
        last_key, last_value = parse_body(forwarded)[-1]  # one JSON object, the cap its last member
        for name in cap[1:]:
            last_value = last_value[name]
        assert (last_key, last_value) == (cap[0], 64)


def test_go_reads_the_appended_cap_over_the_body_and_keeps_the_other_options(tmp_path: Path) -> None:
    """The premise of bound_output, checked with Go's own encoding/json (structs shaped as Ollama's)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain")
    bodies = [
        _bounded("/api/chat", b'{"model":"m","options":{"num_predict":-1,"temperature":0.5,"seed":3}}'),
        _bounded("/api/generate", b'{"model":"m","prompt":"hi"}'),
        _bounded("/api/chat", b'{"model":"m","Options":{"num_predict":0,"top_k":2}}'),
        _bounded("/v1/chat/completions", b'{"model":"m","MAX_TOKENS":-1}'),
        _bounded("/v1/responses", b'{"model":"m","max_output_tokens":-5}'),
        # INT64_MAX: Go would read MinInt64 (unbounded); the gateway reads no cap and appends its own
        _bounded("/api/generate", b'{"model":"m","options":{"num_predict":9223372036854775807}}'),
        _bounded("/api/chat", b'{"model":"m","options":{"num_predict":1000000000}}'),
    ]
    run = subprocess.run([go, "run", str(GO_DECODER)], input=b"\n".join(bodies) + b"\n", capture_output=True,
                         timeout=240, cwd=tmp_path, env={**os.environ, "GOFLAGS": "", "GO111MODULE": "off"})
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    seen = [json.loads(line) for line in run.stdout.splitlines()]
    assert [s.get("error") for s in seen] == [None] * 7
    assert seen[0]["options"] == {"num_predict": 64, "temperature": 0.5, "seed": 3}
    assert seen[1]["options"] == {"num_predict": 64}
    assert seen[2]["options"] == {"num_predict": 64, "top_k": 2}
    assert seen[3]["max_tokens"] == 64
    assert seen[4]["max_output_tokens"] == 64
    assert seen[5]["options"] == seen[6]["options"] == {"num_predict": 64}


def test_through_serve_ollama_generates_no_more_than_was_reserved(tmp_path: Path) -> None:
    """Red team: Ollama treats an absent num_predict as unbounded, so the reservation bounded nothing."""
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("bounded", "inference", tokens_per_day=100_000),
                            KeySpec("free", "inference")])
    with running_process([sys.executable, str(UPSTREAM)]) as (_proc, upstream):
        with start_gateway(tmp_path / "gw", upstream, db_url=db,
                           config_toml="[gateway]\ntoken_reservation = 50\n") as gateway:
            gateway.keys = keys
            body = {"model": "m:latest", "prompt": "hi", "x_interval": 0, "options": {"num_predict": -1}}
            assert _post(gateway, "bounded", "/api/generate", body) == 200
            v1 = {"model": "m:latest", "messages": [{"role": "user", "content": "hi"}]}
            assert _post(gateway, "bounded", "/v1/chat/completions", v1) == 200
            assert _post(gateway, "free", "/api/generate", body) == 200  # no budget: the body is left alone
            # unbounded: 1005 and 1010
            assert [r["tokens"] for r in _records(gateway, "bounded", 2)] == [55, 60]
            assert [r["tokens"] for r in _records(gateway, "free", 1)] == [1005]
