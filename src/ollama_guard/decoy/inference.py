"""The simulated runner shared by the native and OpenAI-compatible inference routes: model lookup with
Ollama's error texts, the load/unload bookkeeping behind /api/ps, deterministic output and metrics."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from ollama_guard.decoy.bodies import BadRequest, keep_alive_seconds
from ollama_guard.decoy.catalog import ModelRecord
from ollama_guard.decoy.govalues import options_error
from ollama_guard.decoy.modelinfo import capabilities, read_gguf
from ollama_guard.decoy.respond import model_not_found, try_pulling
from ollama_guard.decoy.state import DecoyState
from ollama_guard.decoy.textgen import (
    EVAL_NS_PER_TOKEN,
    LOAD_NS_COLD,
    LOAD_NS_WARM,
    PROMPT_NS_PER_TOKEN,
    Completion,
    complete,
    count_tokens,
)
from ollama_guard.ollama.names import ModelName, try_parse_model_name

TEMPLATE_OVERHEAD_TOKENS = 26  # what a chat template adds around the prompt, roughly


def record_capabilities(record: ModelRecord) -> list[str]:
    digest = record.model_layer_digest
    if not digest:
        return []
    summary = read_gguf(record.store.blob_path(digest))
    return capabilities(summary, record.template, has_projector=record.has_projector)


def generate_not_found(state: DecoyState, model: str) -> BadRequest:
    """GenerateHandler's answer for a missing or unknown model, as it changed: before 0.2.2 its own
    checks (single quotes), until 0.3.10 scheduleRunner's errors (%q), from 0.3.11 a name check first."""
    if state.at_least("0.3.11"):
        return model_not_found(model)
    if not model:
        return BadRequest(400, "model is required")
    if state.at_least("0.2.2"):
        return BadRequest(
            404, f"model {json.dumps(model, ensure_ascii=False)} not found, try pulling it first"
        )
    return BadRequest(404, f"model '{model}' not found, try pulling it first")


def check_options(body: dict[str, Any]) -> None:
    """Request options as api.Options.FromMap checks them when the runner is scheduled (500)."""
    problem = options_error(body.get("options"))
    if problem is not None:
        raise BadRequest(500, problem)


def lookup(state: DecoyState, raw: str) -> tuple[ModelName | None, ModelRecord | None]:
    """(parsed name or None if invalid, stored record or None if absent)."""
    name = try_parse_model_name(raw)
    if name is None:
        return None, None
    return name, state.catalog.get(name)


@dataclass
class Run:
    """One simulated inference: who asked for what, what comes out, and how long it "took"."""

    model: str  # the model as the client named it (Ollama echoes req.Model)
    record: ModelRecord
    completion: Completion
    started_ns: int
    load_ns: int

    def metrics(self) -> dict[str, Any]:
        prompt_ns = self.completion.prompt_eval_count * PROMPT_NS_PER_TOKEN
        eval_ns = max(self.completion.eval_count, 1) * EVAL_NS_PER_TOKEN
        elapsed = time.perf_counter_ns() - self.started_ns
        total = max(elapsed, self.load_ns + prompt_ns + eval_ns)
        return {
            "total_duration": total,
            "load_duration": self.load_ns,
            "prompt_eval_count": self.completion.prompt_eval_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": self.completion.eval_count,
            "eval_duration": eval_ns,
        }

    def context_tokens(self) -> list[int]:
        """Token ids for /api/generate's deprecated `context` (deterministic)."""
        count = self.completion.prompt_eval_count + self.completion.eval_count
        seed = hashlib.sha256(f"{self.model}|{self.completion.text}".encode()).digest()
        return [128000 + (seed[i % len(seed)] * 131 + i * 7919) % 100000 for i in range(count)]


def _max_tokens(options: dict[str, Any] | None) -> int | None:
    if not options:
        return None
    value = options.get("num_predict")
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _json_format(fmt: Any) -> bool:
    return fmt == "json" or isinstance(fmt, dict)


def load(state: DecoyState, record: ModelRecord, keep_alive: Any) -> int:
    """Mark the model loaded; returns the simulated load time (cold the first time)."""
    try:
        seconds = keep_alive_seconds(keep_alive, state.settings.keep_alive)
    except ValueError as exc:
        raise BadRequest(400, str(exc)) from None
    warm = state.is_loaded(record)
    state.touch(record, seconds)
    return LOAD_NS_WARM if warm else LOAD_NS_COLD


def is_zero_keep_alive(value: Any) -> bool:
    try:
        return value is not None and keep_alive_seconds(value, 1.0) == 0
    except ValueError:
        return False


# --- /api/generate ---------------------------------------------------------------------------------
def prepare_generate(state: DecoyState, body: dict[str, Any]) -> Run | dict[str, Any]:
    """A Run, or an immediate response (load/unload), or BadRequest with Ollama's text."""
    started = time.perf_counter_ns()
    model = body.get("model", "")
    name, record = lookup(state, model)
    if name is None or record is None:
        raise generate_not_found(state, model)
    prompt = body.get("prompt", "")
    if prompt == "" and is_zero_keep_alive(body.get("keep_alive")):
        state.unload(record)
        return {"model": model, "done_reason": "unload"}
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise BadRequest(400, "raw mode does not support template, system, or context")
    caps = record_capabilities(record)
    if "completion" not in caps:
        raise BadRequest(400, f'"{model}" does not support generate')
    if body.get("suffix") and "insert" not in caps:
        raise BadRequest(400, f"{name.full()} does not support insert")
    check_options(body)
    load_ns = load(state, record, body.get("keep_alive"))
    if prompt == "":
        return {"model": model, "done_reason": "load"}
    system = body.get("system") or record.system
    text_in = prompt if body.get("raw") else f"{system}\n{prompt}" if system else prompt
    overhead = 0 if body.get("raw") else TEMPLATE_OVERHEAD_TOKENS
    completion = complete(
        record.display,
        text_in,
        max_tokens=_max_tokens(body.get("options")),
        json_format=_json_format(body.get("format")),
        prompt_overhead=overhead,
    )
    return Run(model=model, record=record, completion=completion, started_ns=started, load_ns=load_ns)


# --- /api/chat ---------------------------------------------------------------------------------------
def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content", "")
    return content if isinstance(content, str) else ""


def validate_messages(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        for key in ("role", "content", "thinking", "tool_name"):
            value = message.get(key)
            if value is not None and not isinstance(value, str):
                kind = "number" if isinstance(value, (int, float)) else type(value).__name__
                kind = {"list": "array", "dict": "object", "bool": "bool"}.get(kind, kind)
                raise BadRequest(
                    400,
                    f"json: cannot unmarshal {kind} into Go struct field "
                    f"ChatRequest.messages.{key} of type string",
                )


def prepare_chat(state: DecoyState, body: dict[str, Any]) -> Run | dict[str, Any]:
    started = time.perf_counter_ns()
    model = body.get("model", "")
    messages: list[dict[str, Any]] = body.get("messages") or []
    validate_messages(messages)
    if not messages and is_zero_keep_alive(body.get("keep_alive")):
        name, record = lookup(state, model)
        if record is None:
            if name is None and model:
                raise BadRequest(400, "invalid model name")
            raise model_not_found(model)
        state.unload(record)
        return {"model": model, "done_reason": "unload"}
    name, record = lookup(state, model)
    if name is None:
        raise BadRequest(400, "model is required")
    if record is None:
        raise try_pulling(model)
    caps = record_capabilities(record)
    if "completion" not in caps:
        raise BadRequest(400, f'"{model}" does not support chat')
    if body.get("tools") and "tools" not in caps:
        raise BadRequest(400, f"{name.full()} does not support tools")
    check_options(body)
    load_ns = load(state, record, body.get("keep_alive"))
    if not messages:
        return {"model": model, "done_reason": "load"}
    system = record.system if messages[0].get("role") != "system" else ""
    transcript = [system] if system else []
    transcript += [f"{m.get('role', '')}: {_message_text(m)}" for m in [*record.messages, *messages]]
    prompt = "\n".join(transcript)
    completion = complete(
        record.display,
        prompt,
        max_tokens=_max_tokens(body.get("options")),
        json_format=_json_format(body.get("format")),
        prompt_overhead=TEMPLATE_OVERHEAD_TOKENS + 4 * len(messages),
    )
    return Run(model=model, record=record, completion=completion, started_ns=started, load_ns=load_ns)


# --- embeddings --------------------------------------------------------------------------------------
def embedding_length(record: ModelRecord) -> int:
    digest = record.model_layer_digest
    if digest:
        summary = read_gguf(record.store.blob_path(digest))
        value = summary.kv.get(f"{summary.architecture}.embedding_length")
        if isinstance(value, int) and value > 0:
            return min(value, 4096)
    return 768


def embed_inputs(value: Any) -> list[str]:
    """/api/embed `input`: a string (empty = nothing) or a list of strings, else 400 invalid input type."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BadRequest(400, "invalid input type")


def prompt_tokens(texts: list[str]) -> int:
    return sum(count_tokens(t) for t in texts)
