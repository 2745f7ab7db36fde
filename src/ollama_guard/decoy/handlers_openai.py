"""OpenAI-compatible routes (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models[/{model}]),
shaped like Ollama's openai middleware: SSE `data: {...}` chunks ending with `data: [DONE]`, errors as
{"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from typing import Any

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.handlers_inference import embed_response
from ollama_guard.decoy.http import SSE_TYPE, BodyTooLarge, Request, Send, json_bytes, send_bytes, send_stream
from ollama_guard.decoy.inference import Run, lookup, prepare_chat, prepare_generate
from ollama_guard.decoy.respond import paced
from ollama_guard.decoy.state import DecoyState
from ollama_guard.decoy.transport.request import BodyError
from ollama_guard.ollama.names import try_parse_model_name

OPENAI_JSON = "application/json"

CHAT_COMPLETION = rq.Struct(
    "ChatCompletionRequest",
    {
        "model": "string",
        "messages": "list",
        "stream": "bool",
        "stream_options": "object",
        "max_tokens": "int",
        "seed": "int",
        "stop": "any",
        "temperature": "float",
        "frequency_penalty": "float",
        "presence_penalty": "float",
        "top_p": "float",
        "response_format": "object",
        "tools": "list",
    },
)
COMPLETION = rq.Struct(
    "CompletionRequest",
    {
        "model": "string",
        "prompt": "string",
        "frequency_penalty": "float",
        "max_tokens": "int",
        "presence_penalty": "float",
        "seed": "int",
        "stop": "any",
        "stream": "bool",
        "stream_options": "object",
        "temperature": "float",
        "top_p": "float",
        "suffix": "string",
    },
)
EMBEDDINGS = rq.Struct("EmbedRequest", {"input": "any", "model": "string"})


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


async def send_openai_error(send: Send, status: int, message: str, *, from_handler: bool) -> None:
    """Middleware errors carry their own type; errors from the wrapped Ollama handler are always typed
    api_error (Ollama's writeError uses NewError(500, …)) but keep the handler's status."""
    body = error_body(500 if from_handler else status, message)
    await send_bytes(send, status, json_bytes(body) + b"\n", OPENAI_JSON)


async def _decode(req: Request, send: Send, struct: rq.Struct) -> dict[str, Any] | None:
    """The middleware's ShouldBindJSON: any failure (JSON, a cut or oversized body) is its 400."""
    try:
        return rq.decode(await req.body(), struct)
    except rq.BadRequest as exc:
        await send_openai_error(send, 400, exc.message, from_handler=False)
    except BodyError as exc:
        await send_openai_error(send, 400, str(exc), from_handler=False)
    except BodyTooLarge:
        await send_openai_error(send, 400, rq.TOO_LARGE_TEXT, from_handler=False)
    return None


def _usage(run: Run) -> dict[str, int]:
    prompt, completion = run.completion.prompt_eval_count, run.completion.eval_count
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _chat_messages(raw: list[Any]) -> list[dict[str, Any]]:
    """fromChatRequest: string content, or text/image_url parts (each part its own message)."""
    messages: list[dict[str, Any]] = []
    for message in raw:
        if not isinstance(message, dict):
            raise rq.BadRequest(
                400, "json: cannot unmarshal into Go struct field ChatCompletionRequest.messages"
            )
        role = message.get("role", "")
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise rq.BadRequest(400, "invalid message format")
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    messages.append({"role": role, "content": part["text"]})
                elif part.get("type") == "image_url":
                    messages.append({"role": role, "content": "", "images": ["<image>"]})
                else:
                    raise rq.BadRequest(400, "invalid message format")
        elif message.get("tool_calls") is not None:
            messages.append({"role": role, "content": ""})
        else:
            kind = "<nil>" if content is None else type(content).__name__
            raise rq.BadRequest(400, f"invalid message content type: {kind}")
    return messages


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if "max_tokens" in body:
        options["num_predict"] = body["max_tokens"]
    return options


async def chat_completions(state: DecoyState, req: Request, send: Send) -> None:
    body = await _decode(req, send, CHAT_COMPLETION)
    if body is None:
        return
    if not body.get("messages"):
        await send_openai_error(send, 400, "[] is too short - 'messages'", from_handler=False)
        return
    try:
        messages = _chat_messages(body["messages"])
    except rq.BadRequest as exc:
        await send_openai_error(send, 400, exc.message, from_handler=False)
        return
    fmt = body.get("response_format") or {}
    chat_body: dict[str, Any] = {
        "model": body.get("model", ""),
        "messages": messages,
        "options": _options(body),
    }
    if str(fmt.get("type", "")).strip().lower() in ("json_object", "json_schema"):
        chat_body["format"] = "json"
    if body.get("tools"):
        chat_body["tools"] = body["tools"]
    try:
        run = prepare_chat(state, chat_body)
    except rq.BadRequest as exc:
        await send_openai_error(send, exc.status, exc.message, from_handler=True)
        return
    assert isinstance(run, Run)  # messages are never empty here
    completion_id = f"chatcmpl-{random.randrange(999)}"
    model = body.get("model", "")
    stream = body.get("stream") is True
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    if not stream:
        response = {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": run.completion.text},
                    "finish_reason": run.completion.done_reason,
                }
            ],
            "usage": _usage(run),
        }
        await send_bytes(send, 200, json_bytes(response) + b"\n", OPENAI_JSON)
        return

    def chunk(content: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": content}, "finish_reason": finish}
            ],
        }

    async def events() -> AsyncIterator[bytes]:
        async for piece in paced(
            (c.encode() for c in [*run.completion.chunks, ""]), state.settings.stream_delay
        ):
            text = piece.decode()
            if text:
                yield b"data: " + json_bytes(chunk(text, None)) + b"\n\n"
        last = chunk("", run.completion.done_reason)
        yield b"data: " + json_bytes(last) + b"\n\n"
        if include_usage:
            last["choices"] = []
            last["usage"] = _usage(run)
            yield b"data: " + json_bytes(last) + b"\n\n"
        yield b"data: [DONE]\n\n"

    await send_stream(send, 200, SSE_TYPE, events())


async def completions(state: DecoyState, req: Request, send: Send) -> None:
    body = await _decode(req, send, COMPLETION)
    if body is None:
        return
    stop = body.get("stop")
    if isinstance(stop, list):
        for item in stop:
            if not isinstance(item, str):
                kind = {
                    int: "float64",
                    float: "float64",
                    bool: "bool",
                    dict: "map[string]interface {}",
                    list: "[]interface {}",
                }.get(type(item), "<nil>")
                await send_openai_error(
                    send, 400, f"invalid type for 'stop' field: {kind}", from_handler=False
                )
                return
    gen_body = {"model": body.get("model", ""), "prompt": body.get("prompt", ""), "options": _options(body)}
    if body.get("suffix"):
        gen_body["suffix"] = body["suffix"]
    try:
        run = prepare_generate(state, gen_body)
    except rq.BadRequest as exc:
        await send_openai_error(send, exc.status, exc.message, from_handler=True)
        return
    completion_id = f"cmpl-{random.randrange(999)}"
    model = body.get("model", "")
    stream = body.get("stream") is True
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    if not isinstance(run, Run):  # empty prompt: Ollama just loads the model
        text, reason, usage = (
            "",
            run["done_reason"],
            {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        )
        chunks: list[str] = []
    else:
        text, reason, usage, chunks = (
            run.completion.text,
            run.completion.done_reason,
            _usage(run),
            run.completion.chunks,
        )

    if not stream:
        response = {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_ollama",
            "choices": [{"text": text, "index": 0, "finish_reason": reason}],
            "usage": usage,
        }
        await send_bytes(send, 200, json_bytes(response) + b"\n", OPENAI_JSON)
        return

    def chunk(piece: str, finish: str | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "choices": [{"text": piece, "index": 0, "finish_reason": finish}],
            "model": model,
            "system_fingerprint": "fp_ollama",
        }
        if include_usage:
            obj["usage"] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        return obj

    async def events() -> AsyncIterator[bytes]:
        async for piece in paced((c.encode() for c in [*chunks, ""]), state.settings.stream_delay):
            decoded = piece.decode()
            if decoded:
                yield b"data: " + json_bytes(chunk(decoded, None)) + b"\n\n"
        last = chunk("", reason)
        yield b"data: " + json_bytes(last) + b"\n\n"
        if include_usage:
            last["choices"] = []
            last["usage"] = usage
            yield b"data: " + json_bytes(last) + b"\n\n"
        yield b"data: [DONE]\n\n"

    await send_stream(send, 200, SSE_TYPE, events())


async def embeddings(state: DecoyState, req: Request, send: Send) -> None:
    body = await _decode(req, send, EMBEDDINGS)
    if body is None:
        return
    value = body.get("input")
    if value == "":
        value = [""]
    if value is None or value == []:
        await send_openai_error(send, 400, "invalid input", from_handler=False)
        return
    try:
        result = embed_response(state, {"model": body.get("model", ""), "input": value})
    except rq.BadRequest as exc:
        await send_openai_error(send, exc.status, exc.message, from_handler=True)
        return
    data = [
        {"object": "embedding", "embedding": vec, "index": i} for i, vec in enumerate(result["embeddings"])
    ]
    count = result.get("prompt_eval_count", 0)
    response = {
        "object": "list",
        "data": data or None,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": count, "total_tokens": count},
    }
    await send_bytes(send, 200, json_bytes(response) + b"\n", OPENAI_JSON)


def _owner(name: str) -> str:
    parsed = try_parse_model_name(name)
    return parsed.namespace if parsed is not None else ""


async def list_models(state: DecoyState, req: Request, send: Send) -> None:
    data = [
        {
            "id": r.display,
            "object": "model",
            "created": int(r.stored.modified_at.timestamp()),
            "owned_by": _owner(r.display),
        }
        for r in state.catalog.all()
    ]
    await send_bytes(send, 200, json_bytes({"object": "list", "data": data or None}) + b"\n", OPENAI_JSON)


async def retrieve_model(state: DecoyState, req: Request, send: Send) -> None:
    model = req.path_params["model"]
    name, record = lookup(state, model)
    if name is None or record is None:
        status, message = (400, "invalid model name") if name is None else (404, f"model '{model}' not found")
        await send_openai_error(send, status, message, from_handler=True)
        return
    created = int(record.stored.modified_at.timestamp())
    await send_bytes(
        send,
        200,
        json_bytes({"id": model, "object": "model", "created": created, "owned_by": _owner(model)}) + b"\n",
        OPENAI_JSON,
    )
