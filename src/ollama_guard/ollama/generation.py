"""How Ollama bounds and reports token use, per route, as data: the request field it turns into
``num_predict`` (the only bound on generation) and where its answer carries the token counts.

Source: github.com/ollama/ollama at v0.33.0-rc2 (fb3076099):

* ``api/types.go`` — ``GenerateRequest``/``ChatRequest`` have **no** ``max_tokens``: the output is
  bounded only by ``options.num_predict``, read from the ``options`` map by ``Options.FromMap`` (exact
  key; a JSON number, truncated to an integer; the default ``-1`` and any value ``<= 0`` generate
  until a stop condition — ``llm/llama_server.go`` ``boundedNumPredict``, ``x/mlxrunner``). The
  counts are the top-level ``prompt_eval_count``/``eval_count`` (``Metrics``, embedded, omitempty) of
  the final object (``"done": true``) — a stream line or the whole body; ``ChatResponse`` writes its
  ``logprobs`` array *before* them. ``EmbedResponse`` has a top-level ``prompt_eval_count``;
  ``/api/embeddings`` reports nothing.
* ``openai/openai.go`` — ``ChatCompletionRequest`` and ``CompletionRequest`` map ``max_tokens``
  (``*int``) to ``num_predict``; there is no ``max_completion_tokens``. Answers carry a top-level
  ``usage`` object (``prompt_tokens``, ``completion_tokens``, ``total_tokens``); streams only in the
  chunk before ``[DONE]`` when ``stream_options.include_usage`` is set — ``/v1/completions`` then
  also puts an all-zero ``usage`` in every earlier chunk (``middleware/openai.go``).
* ``openai/responses.go`` — ``max_output_tokens`` → ``num_predict``; ``usage.total_tokens`` at the top
  of the answer, in a stream inside ``response`` of the ``response.completed`` event (``null``
  before).
* ``anthropic/anthropic.go`` — ``max_tokens`` (required, > 0, ``middleware/anthropic.go``) →
  ``num_predict``; ``usage.input_tokens`` + ``usage.output_tokens`` at the top of the answer and of
  the stream's ``message_delta`` event (``message_start`` carries only an early ``input_tokens``).

Generated content (text, tool-call arguments, which the native API writes as JSON objects) sits
deeper in these objects and is never a place a count is read from.
"""

from __future__ import annotations

from dataclasses import dataclass

FieldPath = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TokenAccounting:
    """Where one route's request bounds the output, and where its answer reports the counts."""

    cap: FieldPath | None  # the request field Ollama maps to num_predict (None: no field bounds it)
    # ways the answer reports its use, tried in order: each is a set of field paths (from the top of
    # an answer object, a stream line or SSE event's data) whose values are added
    counts: tuple[tuple[FieldPath, ...], ...]
    final: str | None = None  # a top-level field that is true only in the object that carries counts
    generates: bool = True  # False for embeddings: the prompt is all they cost
    cap_required: bool = False  # Ollama refuses a request without a positive cap (/v1/messages)


_NATIVE = TokenAccounting(
    cap=("options", "num_predict"),
    counts=((("prompt_eval_count",), ("eval_count",)),),
    final="done",
)
_OPENAI = TokenAccounting(cap=("max_tokens",), counts=((("usage", "total_tokens"),),))

TOKEN_ACCOUNTING: dict[str, TokenAccounting] = {
    "POST /api/generate": _NATIVE,
    "POST /api/chat": _NATIVE,
    "POST /api/embed": TokenAccounting(cap=None, counts=((("prompt_eval_count",),),), generates=False),
    "POST /api/embeddings": TokenAccounting(cap=None, counts=(), generates=False),
    "POST /v1/chat/completions": _OPENAI,
    "POST /v1/completions": _OPENAI,
    "POST /v1/embeddings": TokenAccounting(cap=None, counts=((("usage", "total_tokens"),),), generates=False),
    "POST /v1/responses": TokenAccounting(
        cap=("max_output_tokens",),
        counts=((("usage", "total_tokens"),), (("response", "usage", "total_tokens"),)),
    ),
    "POST /v1/messages": TokenAccounting(
        cap=("max_tokens",), counts=((("usage", "input_tokens"), ("usage", "output_tokens")),),
        cap_required=True,
    ),
}

# a compute route missing above: no known cap, no known counts (the reservation is charged)
UNKNOWN = TokenAccounting(cap=None, counts=())

# Caps from 2**53 on are read as no bound: Go decodes a JSON number into a float64 first (the
# ``options`` map) and converts it to int; at 2**63 - 511 and above the float64 is 2**63, which amd64
# turns into MinInt64 — "generate until the context is full". Far below that no bound means anything.
MAX_CAP = 2**53 - 1


def output_cap(value: object) -> int | None:
    """The bound a cap field's JSON value puts on generation, as Ollama reads it; None when it puts
    none (absent, ``<= 0`` — ``-1``/``-2`` mean "until the context is full" — or not a number, which
    Ollama refuses anyway) or none that can be relied on (above ``MAX_CAP``, infinite, NaN). A float is
    truncated, as ``Options.FromMap`` does."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        value = int(value)
    if value <= 0 or value > MAX_CAP:
        return None
    return value


def cap_member(cap: FieldPath, value: int) -> bytes:
    """The JSON object member that sets the cap field `cap` to `value` (``"options":{"num_predict":N}``).

    Appended as the last member of a request body it is what Ollama reads, whatever the body said
    before: Go's encoding/json lets a later key overwrite an earlier one, and decodes a second object
    for a map field (``options``) *into the same map*, keeping the other options."""
    member = b"%d" % value
    for name in reversed(cap):
        member = b'{"%s":%s}' % (name.encode(), member)
    return member[1:-1]


def token_accounting(route_key: str) -> TokenAccounting:
    """The accounting of a catalog route (``"POST /api/chat"``); UNKNOWN for routes without one."""
    return TOKEN_ACCOUNTING.get(route_key, UNKNOWN)
