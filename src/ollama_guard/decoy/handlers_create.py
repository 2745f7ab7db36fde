"""Model-store routes that take attacker-supplied content: blob uploads (within the disk quota) and
create (Modelfile before 0.5.5, JSON fields after; GGUF headers parsed bounded, off the loop)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import AsyncIterator
from typing import Any

from ollama_guard.decoy import bodies as rq
from ollama_guard.decoy.fabricate import FILE_TYPE_NAMES, config_bytes, config_v2, human_number
from ollama_guard.decoy.handlers_models import _stream_flag, go_quote, pull_events
from ollama_guard.decoy.http import Request, Send, send_bytes
from ollama_guard.decoy.limits import FILE_OVERHEAD
from ollama_guard.decoy.modelfile import modelfile_to_create
from ollama_guard.decoy.modelinfo import is_gguf, read_gguf_async
from ollama_guard.decoy.respond import (
    ProgressError,
    ProgressEvent,
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
    taken = FILE_OVERHEAD  # the last partial block and the extent tree count on disk too
    if quota is not None and not quota.take(FILE_OVERHEAD):
        raise quota.full_disk(state.shown(state.store.blobs_dir))
    try:
        with state.store.blob_writer() as writer:
            async for chunk in req.stream():
                if quota is not None and not quota.take(len(chunk)):
                    raise quota.full_disk(state.shown(state.store.blobs_dir))
                taken += len(chunk)
                writer.write(chunk)
            actual = writer.commit()
        if quota is not None:
            quota.give(taken if not writer.created else 0)  # an identical blob was already stored
    except BaseException:
        if quota is not None:
            quota.give(taken)
        raise
    if actual != digest:
        raise rq.BadRequest(400, f"digest mismatch, expected {go_quote(digest)}, got {go_quote(actual)}")
    await send_bytes(send, 201, b"", None)


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
        body = legacy_create_body(body, capital_m=state.at_least("0.5.2"))
    await respond_progress(send, create_events(state, body, name), stream=_stream_flag(body))


def legacy_create_body(body: dict[str, Any], *, capital_m: bool = False) -> dict[str, Any]:
    """Ollama before 0.5.5 took a Modelfile (`modelfile`) or a server-side file (`path`) instead of JSON
    fields. The decoy never reads server files: a `path`, or a FROM naming a file, fails as "no such file"."""
    text = body.get("modelfile", "")
    if not text and not body.get("path"):  # the words changed in 0.5.2
        raise rq.BadRequest(
            400, "path or Modelfile are required" if capital_m else "path or modelfile are required"
        )
    if not text and body.get("path"):
        raise rq.BadRequest(400, f"error reading modelfile: open {body['path']}: no such file or directory")
    try:
        converted = modelfile_to_create(text)
    except ValueError as exc:
        raise rq.BadRequest(400, str(exc)) from None
    source = converted.get("from", "")
    if source.startswith(("/", ".", "~")) or source.endswith((".gguf", ".bin")):
        raise rq.BadRequest(400, f"open {source}: no such file or directory")
    return {**converted, "stream": body.get("stream", True)}
