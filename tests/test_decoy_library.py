"""Library models in the decoy's store look like the registry's: digests, sizes, and disk use."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ollama_guard.decoy.library import library
from support.servers import start_decoy
from support.wire import exchange


def test_library_manifests_are_the_registry_s_bytes() -> None:
    for model in library():
        digest = "sha256:" + hashlib.sha256(model["manifest"].encode()).hexdigest()
        assert digest == model["manifest_digest"], model["names"]
        for layer_digest, content in model["contents"].items():
            if content["exact"]:
                assert "sha256:" + hashlib.sha256(content["text"].encode()).hexdigest() == layer_digest


def test_tags_show_real_digests_and_sizes_from_sparse_blobs(tmp_path: Path) -> None:
    with start_decoy(tmp_path, seed_models=0, extra_args=("--library",)) as decoy:
        answer = exchange((decoy.host, decoy.port), b"GET /api/tags HTTP/1.1\r\nHost: localhost\r\n\r\n")
        body = answer.split(b"\r\n\r\n", 1)[1]
        if b"Transfer-Encoding: chunked" in answer.split(b"\r\n\r\n", 1)[0]:
            size_line, _, rest = body.partition(b"\r\n")
            body = rest[: int(size_line, 16)]
        tags = {m["name"]: m for m in json.loads(body)["models"]}
        show = exchange(
            (decoy.host, decoy.port),
            b'POST /api/show HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n{"model":"gemma:2b"}',
        )
    assert (
        tags["llama3.2:latest"]["digest"]
        == "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"
    )
    assert tags["llama3.2:latest"]["size"] == 2019393189  # what `ollama list` reports: 2.0 GB
    assert tags["gemma:2b"]["digest"].startswith("b50d6c999e59")
    assert tags["gemma:2b"]["details"]["parameter_size"] == "3B"
    assert (
        b"FROM /usr/share/ollama/.ollama/models/blobs/sha256-c1864a5eb19305c40519da12cc543519e48a0697ecd30e"
        in show
    )
    blob = (
        decoy.models_dir / "blobs" / "sha256-dde5aa3fc5ffc17176b5e8bdc82f587b24b2678c6c66101bf7da77af9f7ccdff"
    )
    assert blob.stat().st_size == 2019377376
    with blob.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    used = sum(os.lstat(p).st_blocks * 512 for p in (decoy.models_dir / "blobs").iterdir())
    assert used < 4 << 20  # sparse: gigabytes shown, megabytes used


def test_install_identity_is_stable_per_store_and_differs_between_stores(tmp_path: Path) -> None:
    from ollama_guard.decoy.handlers_general import fake_public_key
    from ollama_guard.decoy.state import DecoySettings, DecoyState

    def key(store: Path) -> str:
        return fake_public_key(DecoyState.open(DecoySettings(models_dir=store)))

    first, second = tmp_path / "a", tmp_path / "b"
    assert key(first) == key(first) != key(second)
    assert key(first).startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
    assert sorted(p.name for p in first.iterdir()) == ["blobs", "manifests"]  # nothing of ours in the store
