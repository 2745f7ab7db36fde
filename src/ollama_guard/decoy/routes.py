"""Which handler serves which route. Only the routes the emulated Ollama version serves are registered
(from the endpoint catalog in `ollama_guard.ollama.endpoints`), so older versions answer 404/405 where
they really did."""

from __future__ import annotations

from ollama_guard.decoy import handlers_create as create
from ollama_guard.decoy import handlers_general as general
from ollama_guard.decoy import handlers_inference as inference
from ollama_guard.decoy import handlers_models as models
from ollama_guard.decoy import handlers_openai as openai
from ollama_guard.decoy.router import Handler, Router
from ollama_guard.decoy.state import DecoyState
from ollama_guard.ollama.endpoints import ENDPOINTS

HANDLERS: dict[str, Handler] = {
    "GET /": general.root,
    "HEAD /": general.root,
    "GET /api/version": general.version,
    "HEAD /api/version": general.version,
    "GET /api/status": general.status,
    "GET /api/tags": models.tags,
    "HEAD /api/tags": models.tags,
    "POST /api/show": models.show,
    "POST /api/pull": models.pull,
    "POST /api/push": models.push,
    "POST /api/create": create.create,
    "DELETE /api/delete": models.delete,
    "POST /api/copy": models.copy,
    "HEAD /api/blobs/{digest}": create.head_blob,
    "POST /api/blobs/{digest}": create.create_blob,
    "POST /api/me": general.whoami,
    "POST /api/signout": general.signout,
    "DELETE /api/user/keys/{key}": general.signout,
    "POST /api/experimental/web_search": general.web_proxy,
    "POST /api/experimental/web_fetch": general.web_proxy,
    "GET /api/experimental/model-recommendations": general.model_recommendations,
    "GET /api/experimental/aliases": general.aliases,
    "POST /api/experimental/aliases": general.aliases,
    "DELETE /api/experimental/aliases": general.aliases,
    "GET /api/ps": inference.ps,
    "POST /api/generate": inference.generate,
    "POST /api/chat": inference.chat,
    "POST /api/embed": inference.embed,
    "POST /api/embeddings": inference.embeddings,
    "POST /v1/chat/completions": openai.chat_completions,
    "POST /v1/completions": openai.completions,
    "POST /v1/embeddings": openai.embeddings,
    "GET /v1/models": openai.list_models,
    "GET /v1/models/{model}": openai.retrieve_model,
    "POST /v1/responses": general.runner_unavailable,
    "POST /v1/audio/transcriptions": general.runner_unavailable,
    "POST /v1/images/generations": general.runner_unavailable,
    "POST /v1/images/edits": general.runner_unavailable,
    "POST /v1/messages": general.runner_unavailable,
}


def gin_pattern(template: str) -> str:
    """`/api/blobs/{digest}` → `/api/blobs/:digest`."""
    return "/".join(
        f":{seg[1:-1]}" if seg.startswith("{") and seg.endswith("}") else seg for seg in template.split("/")
    )


def build_router(state: DecoyState) -> Router:
    router = Router()
    for endpoint in ENDPOINTS:
        handler = HANDLERS.get(endpoint.key)
        if handler is not None and endpoint.served_by(state.version):
            router.add(endpoint.method, gin_pattern(endpoint.path), handler)
    return router
