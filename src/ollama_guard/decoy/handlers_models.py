"""Model-store routes: tags, show, copy, delete, blobs, pull, push, create. They really change the store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import posixpath
from collections.abc import AsyncIterator
from typing import Any

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.catalog import ModelRecord
from ollama_guard.decoy.fabricate import FILE_TYPE_NAMES, config_bytes, config_v2, fabricate, human_number
from ollama_guard.decoy.http import JSON_TYPE, Request, Send, json_bytes, send_bytes, send_json
from ollama_guard.decoy.inference import lookup, record_capabilities
from ollama_guard.decoy.modelfile import modelfile, modelfile_to_create, parameters_text
from ollama_guard.decoy.modelinfo import is_gguf, model_info, read_gguf, read_gguf_async
from ollama_guard.decoy.respond import (
    ProgressError,
    ProgressEvent,
    go_time,
    local_time,
    model_not_found,
    respond_progress,
)
from ollama_guard.decoy.state import DecoyState
from ollama_guard.ollama.names import ModelName, is_valid_digest, try_parse_model_name
from ollama_guard.ollama.store import (
    MEDIA_ADAPTER,
    MEDIA_CONFIG,
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_PROMPT,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
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


# --- blobs -------------------------------------------------------------------------------------------
def _digest_checked(state: DecoyState) -> bool:
    """Whether this Ollama version validates blob digests (0.1.34+, the CVE-2024-37032 fix)."""
    return state.at_least("0.1.34")


async def head_blob(state: DecoyState, req: Request, send: Send) -> None:
    digest = req.path_params["digest"]
    if not is_valid_digest(digest):
        if _digest_checked(state):
            raise rq.BadRequest(400, "invalid digest format")
        raise rq.BadRequest(404, f"blob {go_quote(digest)} not found")
    if not state.store.has_blob(digest):
        raise rq.BadRequest(404, f"blob {go_quote(digest)} not found")
    await send_bytes(send, 200, b"", None)


async def create_blob(state: DecoyState, req: Request, send: Send) -> None:
    digest = req.path_params["digest"]
    valid = is_valid_digest(digest)
    if not valid and _digest_checked(state):
        raise rq.BadRequest(400, "invalid digest format")
    if valid and state.store.has_blob(digest):
        await send_bytes(send, 200, b"", None)
        return
    quota = state.quota
    taken = 0
    try:
        with state.store.blob_writer() as writer:
            async for chunk in req.stream():
                if quota is not None and not quota.take(len(chunk)):
                    raise quota.full_disk(state.shown(state.store.blobs_dir))
                taken += len(chunk)
                writer.write(chunk)
            actual = writer.commit()
        if not writer.created and quota is not None:  # an identical blob was already stored
            quota.give(taken)
    except BaseException:
        if quota is not None:
            quota.give(taken)
        raise
    if actual != digest:
        raise rq.BadRequest(400, f"digest mismatch, expected {go_quote(digest)}, got {go_quote(actual)}")
    await send_bytes(send, 201, b"", None)


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


# --- create ------------------------------------------------------------------------------------------
def _valid_relative_path(path: str) -> bool:
    """Go's fs.ValidPath: unrooted, slash-separated, no empty, '.' or '..' elements."""
    if path == ".":
        return True
    if not path or path.startswith("/") or path.endswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/")) and posixpath.normpath(path) == path


class _CreateFailed(Exception):
    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.error = ProgressError(message, status)


def _layer_for(state: DecoyState, content: bytes, media_type: str) -> tuple[Layer, str]:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    existed = state.store.has_blob(digest)
    state.store.write_blob(content)
    status = f"{'using existing' if existed else 'creating new'} layer {digest}"
    return Layer(mediaType=media_type, digest=digest, size=len(content)), status


async def _gguf_layers(state: DecoyState, files: dict[str, str]) -> tuple[list[Layer], dict[str, Any]]:
    layers: list[Layer] = []
    config: dict[str, Any] = {}
    for filename, digest in files.items():
        if not is_valid_digest(digest):
            raise _CreateFailed("invalid digest format", 400)
        path = state.store.blob_path(digest)
        if not path.is_file():
            raise _CreateFailed(f"open {state.shown(path)}: no such file or directory")
        if not is_gguf(path):
            if filename.endswith(".gguf"):
                raise _CreateFailed("supplied file was not in GGUF format", 400)
            raise _CreateFailed("unknown type", 400)
        summary = await read_gguf_async(path)
        arch = summary.architecture
        media = MEDIA_MODEL
        if summary.kv.get("general.type") == "adapter":
            media = MEDIA_ADAPTER
        elif summary.has_vision or summary.kv.get("general.type") == "projector":
            media = MEDIA_PROJECTOR
        layers.append(Layer(mediaType=media, digest="sha256:" + digest[7:], size=path.stat().st_size))
        if media == MEDIA_MODEL and not config:
            params = summary.kv.get("general.parameter_count")
            if not isinstance(params, int):
                params = sum(_prod(t["shape"]) for t in summary.tensors)
            file_type = summary.kv.get("general.file_type")
            config = {
                "family": arch,
                "model_type": human_number(params),
                "file_type": FILE_TYPE_NAMES.get(file_type, "unknown") if isinstance(file_type, int) else "",
            }
    return layers, config


def _prod(shape: list[int]) -> int:
    total = 1
    for n in shape:
        total *= n
    return total


async def create_events(
    state: DecoyState, body: dict[str, Any], name: ModelName
) -> AsyncIterator[ProgressEvent]:
    old = state.store.find(name)
    base: list[Layer] = []
    config_info: dict[str, Any] = {}
    try:
        if body.get("from"):
            from_name = try_parse_model_name(body["from"])
            if from_name is None:
                raise _CreateFailed("invalid model name", 400)
            source = state.catalog.get(from_name)
            if source is None:
                async for event in pull_events(state, from_name):
                    if isinstance(event, ProgressError):
                        yield event
                        return
                    if event.get("status") != "success":
                        yield event
                source = state.catalog.get(from_name)
                if source is None:
                    raise _CreateFailed(f"model {go_quote(body['from'])} not found")
            base = list(source.stored.manifest.layers)
            config_info = {
                "family": source.config.get("model_family", ""),
                "model_type": source.config.get("model_type", ""),
                "file_type": source.config.get("file_type", ""),
            }
            for layer in base:
                yield {"status": f"using existing layer {layer.digest}"}
        elif body.get("files") is not None:
            if not body["files"]:
                raise _CreateFailed("no files provided to convert", 400)
            if any(f.endswith(".safetensors") for f in body["files"]):
                yield {"status": "converting model"}
                raise _CreateFailed("unsupported architecture")
            yield {"status": "parsing GGUF"}
            base, config_info = await _gguf_layers(state, body["files"])
            for layer in base:
                yield {"status": f"using existing layer {layer.digest}"}
        else:
            raise _CreateFailed("neither 'from' or 'files' was specified", 400)

        layers = list(base)
        statuses: list[str] = []

        def replace(media_types: tuple[str, ...], content: bytes, media: str) -> None:
            nonlocal layers
            layers = [layer for layer in layers if layer.mediaType not in media_types]
            layer, status = _layer_for(state, content, media)
            layers.append(layer)
            statuses.append(status)

        if body.get("template"):
            replace((MEDIA_TEMPLATE, MEDIA_PROMPT), body["template"].encode(), MEDIA_TEMPLATE)
        if body.get("system"):
            replace((MEDIA_SYSTEM,), body["system"].encode(), MEDIA_SYSTEM)
        license_value = body.get("license")
        license_texts = (
            [license_value]
            if isinstance(license_value, str)
            else ([str(v) for v in license_value] if isinstance(license_value, list) else [])
        )
        for text in [t for t in license_texts if t]:
            layer, status = _layer_for(state, text.encode(), MEDIA_LICENSE)
            layers.append(layer)
            statuses.append(status)
        parameters = body.get("parameters") or {}
        if parameters:
            merged: dict[str, Any] = {}
            existing = next((layer for layer in layers if layer.mediaType == MEDIA_PARAMS), None)
            if existing is not None:
                try:
                    merged = json.loads(state.store.read_blob(existing.digest))
                except (OSError, ValueError):
                    merged = {}
            merged.update(parameters)
            replace((MEDIA_PARAMS,), json.dumps(merged, separators=(",", ":")).encode(), MEDIA_PARAMS)
        if body.get("messages"):
            messages = [
                {"role": m.get("role", ""), "content": m.get("content", "")} for m in body["messages"]
            ]
            replace((MEDIA_MESSAGES,), json.dumps(messages, separators=(",", ":")).encode(), MEDIA_MESSAGES)

        family = config_info.get("family", "")
        config = config_v2(
            model_format="gguf" if family else "",
            family=family,
            model_type=config_info.get("model_type", ""),
            file_type=config_info.get("file_type", ""),
            diff_ids=[layer.digest[7:] for layer in layers],
            families=[family] if family else None,
        )
        config_content = config_bytes(config)
        config_layer = Layer(
            mediaType=MEDIA_CONFIG, digest=state.store.write_blob(config_content), size=len(config_content)
        )
        for status in statuses:
            yield {"status": status}
        yield {"status": "writing manifest"}
        target = state.store.resolve_name(name)
        manifest = Manifest(config=config_layer, layers=layers)
        state.store.write_manifest(target, manifest)
        state.models_changed()
        if old is not None:
            in_use = state.store.referenced_digests()
            for digest in old.manifest.digests() - in_use:
                state.store.blob_path(digest).unlink(missing_ok=True)
        yield {"status": "success"}
    except _CreateFailed as failure:
        yield failure.error


async def create(state: DecoyState, req: Request, send: Send) -> None:
    body = rq.decode(await req.body(), rq.CREATE)
    for path in body.get("files") or {}:
        if not _valid_relative_path(path):
            raise rq.BadRequest(400, "file path must be relative")
    raw = body.get("model") or body.get("name") or ""
    name = try_parse_model_name(raw)
    if name is None:
        raise rq.BadRequest(400, "invalid model name")
    if not state.at_least("0.5.5"):
        body = legacy_create_body(body)
    await respond_progress(send, create_events(state, body, name), stream=_stream_flag(body))


def legacy_create_body(body: dict[str, Any]) -> dict[str, Any]:
    """Ollama before 0.5.5 took a Modelfile (`modelfile`) or a server-side file (`path`) instead of JSON
    fields. The decoy never reads server files: a `path`, or a FROM naming a file, fails as "no such file"."""
    text = body.get("modelfile", "")
    if not text and body.get("path"):
        raise rq.BadRequest(400, f"open {body['path']}: no such file or directory")
    try:
        converted = modelfile_to_create(text)
    except ValueError as exc:
        raise rq.BadRequest(400, str(exc)) from None
    source = converted.get("from", "")
    if source.startswith(("/", ".", "~")) or source.endswith((".gguf", ".bin")):
        raise rq.BadRequest(400, f"open {source}: no such file or directory")
    return {**converted, "stream": body.get("stream", True)}
