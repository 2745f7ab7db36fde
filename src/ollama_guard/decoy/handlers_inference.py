"""Native inference routes: /api/generate, /api/chat, /api/embed, /api/embeddings, /api/ps."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.http import NDJSON_TYPE, Request, Send, json_bytes, send_json, send_stream
from ollama_guard.decoy.inference import (
    Run,
    check_options,
    embed_inputs,
    embedding_length,
    load,
    lookup,
    prepare_chat,
    prepare_generate,
    prompt_tokens,
)
from ollama_guard.decoy.respond import go_time, paced, try_pulling
from ollama_guard.decoy.state import DecoyState
from ollama_guard.decoy.textgen import PROMPT_NS_PER_TOKEN, embedding


def _stream_flag(body: dict[str, Any]) -> bool:
    return body.get("stream", True) is not False


async def _ndjson(send: Send, objects: AsyncIterator[dict[str, Any]]) -> None:
    async def lines() -> AsyncIterator[bytes]:
        async for obj in objects:
            yield json_bytes(obj) + b"\n"

    await send_stream(send, 200, NDJSON_TYPE, lines())


async def _answer(
    state: DecoyState,
    send: Send,
    body: dict[str, Any],
    run: Run,
    piece: Callable[[str], dict[str, Any]],
    final: Callable[[str], dict[str, Any]],
) -> None:
    """One JSON object (`stream: false`), or NDJSON pieces paced like a model, then the final object."""
    if not _stream_flag(body):
        await send_json(send, 200, final(run.completion.text))
        return

    async def objects() -> AsyncIterator[dict[str, Any]]:
        async for chunk in paced(
            (c.encode() for c in [*run.completion.chunks, ""]), state.settings.stream_delay
        ):
            text = chunk.decode()
            if text:
                yield piece(text)
        yield final("")

    await _ndjson(send, objects())


async def generate(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.GENERATE)
    run = prepare_generate(state, body)
    if not isinstance(run, Run):
        await send_json(
            send,
            200,
            {
                "model": run["model"],
                "created_at": go_time(),
                "response": "",
                "done": True,
                "done_reason": run["done_reason"],
            },
        )
        return

    def final(response: str) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": run.model,
            "created_at": go_time(),
            "response": response,
            "done": True,
            "done_reason": run.completion.done_reason,
        }
        if not body.get("raw"):
            obj["context"] = run.context_tokens()
        obj.update(run.metrics())
        return obj

    def piece(text: str) -> dict[str, Any]:
        return {"model": run.model, "created_at": go_time(), "response": text, "done": False}

    await _answer(state, send, body, run, piece, final)


async def chat(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.CHAT)
    run = prepare_chat(state, body)
    if not isinstance(run, Run):
        await send_json(
            send,
            200,
            {
                "model": run["model"],
                "created_at": go_time(),
                "message": {"role": "assistant", "content": ""},
                "done_reason": run["done_reason"],
                "done": True,
            },
        )
        return

    def final(content: str) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": run.model,
            "created_at": go_time(),
            "message": {"role": "assistant", "content": content},
            "done_reason": run.completion.done_reason,
            "done": True,
        }
        obj.update(run.metrics())
        return obj

    def piece(text: str) -> dict[str, Any]:
        return {
            "model": run.model,
            "created_at": go_time(),
            "message": {"role": "assistant", "content": text},
            "done": False,
        }

    await _answer(state, send, body, run, piece, final)


def embed_response(state: DecoyState, body: dict[str, Any]) -> dict[str, Any]:
    """The /api/embed result (also used by /v1/embeddings); BadRequest with Ollama's texts."""
    started = time.perf_counter_ns()
    inputs = embed_inputs(body.get("input"))
    model = body.get("model", "")
    name, record = lookup(state, model)
    if name is None:
        raise rq.BadRequest(400, "model is required")
    if record is None:
        raise try_pulling(model)
    check_options(body)
    load_ns = load(state, record, body.get("keep_alive"))
    if not inputs:
        return {"model": model, "embeddings": []}
    dims = embedding_length(record)
    wanted = body.get("dimensions")
    if isinstance(wanted, int) and 0 < wanted < dims:
        dims = wanted
    vectors = [embedding(record.display, text, dims) for text in inputs]
    count = prompt_tokens(inputs)
    elapsed = time.perf_counter_ns() - started
    return {
        "model": model,
        "embeddings": vectors,
        "total_duration": max(elapsed, load_ns + count * PROMPT_NS_PER_TOKEN),
        "load_duration": load_ns,
        "prompt_eval_count": count,
    }


async def embed(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.EMBED)
    await send_json(send, 200, embed_response(state, body))


async def embeddings(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.EMBEDDINGS)
    model = body.get("model", "")
    name, record = lookup(state, model)
    if name is None:
        raise rq.BadRequest(400, "model is required")
    if record is None:
        raise try_pulling(model)
    check_options(body)
    load(state, record, body.get("keep_alive"))
    prompt = body.get("prompt", "")
    if not prompt:
        await send_json(send, 200, {"embedding": []})
        return
    await send_json(send, 200, {"embedding": embedding(record.display, prompt, embedding_length(record))})


async def ps(state: DecoyState, req: Request, send: Send) -> None:
    models = []
    for loaded in state.loaded_models():
        record = loaded.record
        entry: dict[str, Any] = {
            "name": record.display,
            "model": record.display,
            "size": record.size,
            "digest": record.digest,
            "details": record.details(),
            "expires_at": go_time(loaded.expires_at.astimezone()),
            "size_vram": record.size,
        }
        if state.at_least("0.7.0"):
            entry["context_length"] = 4096
        models.append(entry)
    await send_json(send, 200, {"models": models})
