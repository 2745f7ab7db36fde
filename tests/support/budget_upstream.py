"""An Ollama stand-in for the budget tests: answers shaped as Ollama writes them (field order of
api.ChatResponse / openai.ChatCompletion), with a model-generated tool call whose arguments try to pass
for usage counts, and streams paced so that a client can hang up in the middle.

Run: `python budget_upstream.py`; prints `budget upstream listening on http://127.0.0.1:PORT`.
Each request's JSON body steers the answer (Ollama ignores unknown fields):
  POST /api/chat            non-streamed tool-call answer: prompt_eval_count 10, eval_count `x_eval`
                            (500) after `x_delay` seconds (0)
  POST /api/generate        NDJSON stream: one line per token, `x_interval` s apart (0.02);
                            `options.num_predict` tokens when positive (unless `x_ignore_cap`), else
                            `x_unbounded` (1000); a final `done` line with the counts unless `x_final`
                            is false
  POST /v1/chat/completions an OpenAI answer with a tool call whose arguments *string* holds a usage
                            object, after `x_delay` s; usage: prompt 10 + completion `max_tokens` (or 1000)
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

TOOL_ARGS = {"query": "x", "total_tokens": 0, "eval_count": 0, "prompt_eval_count": 0, "done": True,
             "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0}}
CONTENT = 'say "eval_count": 0, "total_tokens": 0 and {"usage": {"total_tokens": 0}}'


async def _body(request: web.Request) -> dict:
    raw = await request.read()
    return json.loads(raw) if raw else {}


async def chat(request: web.Request) -> web.Response:
    body = await _body(request)
    await asyncio.sleep(float(body.get("x_delay", 0)))
    eval_count = int(body.get("x_eval", 500))
    return web.json_response({
        "model": body.get("model", "m:latest"), "created_at": "2026-12-07T06:00:00Z",
        "message": {"role": "assistant", "content": CONTENT,
                    "tool_calls": [{"function": {"name": "lookup", "arguments": TOOL_ARGS}}]},
        "done": True, "done_reason": "stop",
        "logprobs": [{"token": "x", "logprob": -0.5,
                      "top_logprobs": [{"token": "eval_count", "logprob": -1}]}] * 50,
        "total_duration": 1, "prompt_eval_count": 10, "eval_count": eval_count,
    })


async def generate(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    options = body.get("options") or {}
    asked = options.get("num_predict") if isinstance(options, dict) else None
    tokens = int(body.get("x_unbounded", 1000))
    if isinstance(asked, int | float) and int(asked) > 0 and not body.get("x_ignore_cap"):
        tokens = int(asked)
    interval = float(body.get("x_interval", 0.02))
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    for i in range(tokens):
        line = {"model": "m:latest", "created_at": "2026-12-07T06:00:00Z", "response": f"w{i} ",
                "done": False}
        await resp.write(json.dumps(line).encode() + b"\n")
        if interval:
            await asyncio.sleep(interval)
    if body.get("x_final", True):
        final = {"model": "m:latest", "response": "", "done": True, "done_reason": "length",
                 "prompt_eval_count": 5, "eval_count": tokens}
        await resp.write(json.dumps(final).encode() + b"\n")
    return resp


async def chat_v1(request: web.Request) -> web.Response:
    body = await _body(request)
    await asyncio.sleep(float(body.get("x_delay", 0)))
    asked = body.get("max_tokens")
    completion = asked if isinstance(asked, int) and asked > 0 else 1000
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m:latest",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": CONTENT, "tool_calls": [
            {"id": "call_1", "index": 0, "type": "function",
             "function": {"name": "lookup", "arguments": json.dumps(TOOL_ARGS)}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion},
    })


async def main() -> None:
    app = web.Application()
    app.add_routes([
        web.get("/", lambda _r: web.Response(text="Ollama is running")),
        web.get("/api/version", lambda _r: web.json_response({"version": "0.6.5"})),
        web.get("/api/tags", lambda _r: web.json_response({"models": [{"name": "m:latest"}]})),
        web.post("/api/chat", chat), web.post("/api/generate", generate),
        web.post("/v1/chat/completions", chat_v1),
    ])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"budget upstream listening on http://127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
