"""Model-store routes: tags, show, copy, delete, blobs, pull, push, create. They really change the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.catalog import ModelRecord
from ollama_guard.decoy.fabricate import config_bytes, fabricate
from ollama_guard.decoy.http import JSON_TYPE, Request, Send, json_bytes, send_bytes, send_json
from ollama_guard.decoy.inference import lookup, record_capabilities
from ollama_guard.decoy.modelfile import modelfile, parameters_text
from ollama_guard.decoy.modelinfo import model_info, read_gguf
from ollama_guard.decoy.respond import (
    ProgressError,
    ProgressEvent,
    go_time,
    local_time,
    model_not_found,
    respond_progress,
)
from ollama_guard.decoy.state import DecoyState
from ollama_guard.ollama.names import ModelName, try_parse_model_name
from ollama_guard.ollama.store import (
    MEDIA_CONFIG,
    Layer,
    Manifest,
)

PROGRESS_STEPS = 3  # progress events per layer during pull/push


def go_quote(text: str) -> str:
    """Go's %q, near enough for error messages."""
    return json.dumps(text, ensure_ascii=False)


def _stream_flag(body: dict[str, Any]) -> bool:
    return body.get("stream", True) is not False


# --- listing and inspection ------------------------------------------------------------------------
# First versions whose responses carry these fields (api/types.go at each release tag).
FIELDS_SINCE = {
    "model_info": "0.1.45",  # ShowResponse.ModelInfo
    "modified_at": "0.1.45",  # ShowResponse.ModifiedAt
    "capabilities": "0.6.4",  # ShowResponse.Capabilities
    "tags_capabilities": "0.30.0",  # ListModelResponse.Capabilities, ModelDetails.context_length
}


def tag_entry(record: ModelRecord, *, extended: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": record.display,
        "model": record.display,
        "modified_at": go_time(local_time(record.stored.modified_at)),
        "size": record.size,
        "digest": record.digest,
        "details": record.details(),
    }
    if extended:  # 0.30.0+: the model-list cache adds what the GGUF says (omitempty fields)
        digest = record.model_layer_digest
        summary = read_gguf(record.store.blob_path(digest)) if digest else None
        if summary is not None:
            for field, key in (
                ("context_length", "context_length"),
                ("embedding_length", "embedding_length"),
            ):
                value = summary.kv.get(f"{summary.architecture}.{key}")
                if isinstance(value, int) and value:
                    entry["details"][field] = value
        caps = record_capabilities(record)
        if caps:
            entry["capabilities"] = caps
    return entry


async def tags(state: DecoyState, req: Request, send: Send) -> None:
    extended = state.at_least(FIELDS_SINCE["tags_capabilities"])
    body = state.catalog.derived(
        "api/tags", lambda records: json_bytes({"models": [tag_entry(r, extended=extended) for r in records]})
    )
    await send_bytes(send, 200, body, JSON_TYPE)


def show_response(
    state: DecoyState, raw_model: str, *, verbose: bool = False, system: str = ""
) -> dict[str, Any]:
    """The /api/show body for a model (BadRequest 400/404 with Ollama's texts)."""
    name, record = lookup(state, raw_model)
    if name is None:
        raise rq.BadRequest(400, "invalid model name")
    if record is None:
        raise model_not_found(raw_model)
    digest = record.model_layer_digest
    summary = read_gguf(state.store.blob_path(digest)) if digest else None
    response: dict[str, Any] = {}
    if record.licenses:
        response["license"] = "\n".join(record.licenses)
    response["modelfile"] = modelfile(record, state.shown)
    if record.options:
        response["parameters"] = parameters_text(record.options)
    if record.template:
        response["template"] = record.template
    if system or record.system:
        response["system"] = system or record.system
    response["details"] = record.details()
    if record.messages:
        response["messages"] = [
            {"role": m.get("role", ""), "content": m.get("content", "")} for m in record.messages
        ]
    if summary is not None and summary.kv and state.at_least(FIELDS_SINCE["model_info"]):
        response["model_info"] = model_info(summary, verbose=verbose)
        if verbose:
            response["tensors"] = summary.tensors
    caps = record_capabilities(record)
    if caps and state.at_least(FIELDS_SINCE["capabilities"]):
        response["capabilities"] = caps
    if state.at_least(FIELDS_SINCE["modified_at"]):
        response["modified_at"] = go_time(local_time(record.stored.modified_at))
    return response


async def show(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.SHOW)
    model = body.get("model") or body.get("name") or ""
    if not model:
        raise rq.BadRequest(400, "model is required")
    await send_json(
        send,
        200,
        show_response(state, model, verbose=bool(body.get("verbose")), system=body.get("system", "")),
    )


# --- copy / delete -----------------------------------------------------------------------------------
async def copy(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.COPY)
    source_raw, dest_raw = body.get("source", ""), body.get("destination", "")
    source = try_parse_model_name(source_raw)
    if source is None:
        raise rq.BadRequest(400, f"source {go_quote(source_raw)} is invalid")
    destination = try_parse_model_name(dest_raw)
    if destination is None:
        raise rq.BadRequest(400, f"destination {go_quote(dest_raw)} is invalid")
    record = state.catalog.get(source)
    if record is None:
        raise rq.BadRequest(404, f"model {go_quote(source_raw)} not found")
    target = state.store.resolve_name(destination)
    try:
        state.store.copy_model(record.stored, target)
    except FileNotFoundError:  # removed behind the decoy's back since the list was cached
        state.models_changed()
        raise rq.BadRequest(404, f"model {go_quote(source_raw)} not found") from None
    state.models_changed()
    await send_bytes(send, 200, b"", None)


async def delete(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.DELETE)
    raw = body.get("model") or body.get("name") or ""
    name = try_parse_model_name(raw)
    if name is None:
        raise rq.BadRequest(400, f"name {go_quote(raw)} is invalid")
    record = state.catalog.get(name)
    if record is None:
        raise model_not_found(raw)
    state.unload(record)
    try:
        state.store.delete_model(record.stored)
    except FileNotFoundError:  # removed behind the decoy's back since the list was cached
        state.models_changed()
        raise model_not_found(raw) from None
    state.models_changed()
    await send_bytes(send, 200, b"", None)


# --- pull / push ---------------------------------------------------------------------------------------
async def _transfer(
    state: DecoyState, verb: str, layers: list[tuple[str, int]], present: set[str]
) -> AsyncIterator[ProgressEvent]:
    """Per-layer progress events like Ollama's download/upload ("pulling 6a0746a1ec1a")."""
    delay = state.settings.stream_delay
    for digest, size in layers:
        status = f"{verb} {digest[7:19]}"
        if digest in present or size == 0:
            yield {"status": status, "digest": digest, "total": size, "completed": size}
            continue
        action, source = (
            ("downloading", "download.go:175") if verb == "pulling" else ("uploading", "upload.go:114")
        )
        state.log_event(source, f"{action} {digest[7:19]} in 1 {size} B part(s)")
        for step in range(PROGRESS_STEPS + 1):
            event: dict[str, Any] = {"status": status, "digest": digest, "total": size}
            done = size * step // PROGRESS_STEPS
            if done:
                event["completed"] = done
            yield event
            if delay > 0:
                await asyncio.sleep(delay)


def _write_fabricated(state: DecoyState, name: ModelName) -> tuple[Manifest, list[tuple[str, int]]]:
    model = fabricate(name)
    layers = [
        Layer(mediaType=media, digest="sha256:" + hashlib.sha256(content).hexdigest(), size=len(content))
        for media, content in model.layers
    ]
    config = config_bytes(model.config)
    config_layer = Layer(
        mediaType=MEDIA_CONFIG, digest="sha256:" + hashlib.sha256(config).hexdigest(), size=len(config)
    )
    manifest = Manifest(config=config_layer, layers=layers)
    for _, content in model.layers:
        state.store.write_blob(content)
    state.store.write_blob(config)
    return manifest, [(layer.digest, layer.size) for layer in [*layers, config_layer]]


async def pull_events(state: DecoyState, name: ModelName) -> AsyncIterator[ProgressEvent]:
    """Fabricate `name` locally, reporting progress like a registry pull. Never touches the network."""
    yield {"status": "pulling manifest"}
    present = {d for d, _ in state.store.iter_blobs()}
    old = state.store.find(name)
    manifest, layers = _write_fabricated(state, name)
    async for event in _transfer(state, "pulling", layers, present):
        yield event
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    target = old.name if old is not None else name
    state.store.write_manifest(target, manifest)
    state.models_changed()
    if old is not None and old.manifest.digests() - manifest.digests():
        yield {"status": "removing unused layers"}
        in_use = state.store.referenced_digests()
        for digest in old.manifest.digests() - in_use:
            state.store.blob_path(digest).unlink(missing_ok=True)
    yield {"status": "success"}


async def pull(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.PULL)
    raw = body.get("model") or body.get("name") or ""
    name = try_parse_model_name(raw)
    if name is None:
        raise rq.BadRequest(400, "invalid model name")
    name = state.store.resolve_name(name)
    await respond_progress(send, pull_events(state, name), stream=_stream_flag(body))


async def push_events(state: DecoyState, raw: str, insecure: bool) -> AsyncIterator[ProgressEvent]:
    """Report a push without sending anything anywhere; the attempt is recorded in state.pushes."""
    yield {"status": "retrieving manifest"}
    name = try_parse_model_name(raw)
    record = state.catalog.get(name) if name is not None else None
    if name is None or record is None:
        yield {"status": "couldn't retrieve manifest"}
        where = state.store.manifest_path(name) if name is not None else state.store.manifests_dir / raw
        yield ProgressError(f"open {state.shown(where)}: no such file or directory")
        return
    state.pushes.append(
        {
            "time": go_time(),
            "model": record.display,
            "registry": name.host,
            "insecure": insecure,
            "digests": sorted(record.stored.manifest.digests()),
        }
    )
    layers = [(layer.digest, layer.size) for layer in record.stored.manifest.all_layers()]
    async for event in _transfer(state, "pushing", layers, set()):
        yield event
    yield {"status": "pushing manifest"}
    yield {"status": "success"}


async def push(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.PUSH)
    raw = body.get("model") or body.get("name") or ""
    if not raw:
        raise rq.BadRequest(400, "model is required")
    await respond_progress(
        send, push_events(state, raw, bool(body.get("insecure"))), stream=_stream_flag(body)
    )
