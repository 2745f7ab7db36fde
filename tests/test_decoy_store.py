"""ModelStore: Ollama's on-disk layout, content-addressed blobs, atomic writes, delete/copy semantics."""

from __future__ import annotations

import hashlib
import json

import pytest

from ollama_guard.decoy.fabricate import fabricate, install, seed_names
from ollama_guard.ollama.names import parse_model_name
from ollama_guard.ollama.store import (
    MEDIA_CONFIG,
    MEDIA_MODEL,
    MEDIA_TEMPLATE,
    Layer,
    Manifest,
    ModelStore,
    StoreError,
)


def _blob_names_match_content(store: ModelStore) -> None:
    for digest, path in store.iter_blobs():
        assert "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _manifest(store: ModelStore, *contents: bytes) -> Manifest:
    layers = [Layer(mediaType=MEDIA_MODEL, digest=store.write_blob(c), size=len(c)) for c in contents]
    config = b'{"model_format":"gguf"}'
    return Manifest(
        config=Layer(mediaType=MEDIA_CONFIG, digest=store.write_blob(config), size=len(config)), layers=layers
    )


def test_write_blob_is_content_addressed_and_idempotent(tmp_path):
    store = ModelStore(tmp_path)
    digest = store.write_blob(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    path = store.blob_path(digest)
    assert path == tmp_path / "blobs" / ("sha256-" + digest[7:])
    assert path.read_bytes() == b"hello"
    assert store.write_blob(b"hello") == digest
    assert [p.name for p in store.blobs_dir.iterdir()] == [path.name]  # no temp files left behind


@pytest.mark.parametrize(
    "bad", ["sha256:00", "../../etc/passwd", "sha256:" + "g" * 64, "md5:" + "0" * 64, ""]
)
def test_blob_path_rejects_invalid_digests(tmp_path, bad):
    with pytest.raises(StoreError):
        ModelStore(tmp_path).blob_path(bad)


def test_blob_path_accepts_both_separators(tmp_path):
    store = ModelStore(tmp_path)
    hexd = "ab" * 32
    assert store.blob_path("sha256:" + hexd) == store.blob_path("sha256-" + hexd)


def test_blob_writer_streams_and_renames_to_real_digest(tmp_path):
    store = ModelStore(tmp_path)
    with store.blob_writer() as writer:
        writer.write(b"part1-")
        writer.write(b"part2")
        digest = writer.commit()
    assert digest == "sha256:" + hashlib.sha256(b"part1-part2").hexdigest()
    assert writer.created and writer.size == 11
    _blob_names_match_content(store)
    with store.blob_writer() as writer:  # abandoned upload leaves nothing behind
        writer.write(b"never committed")
    assert len(list(store.blobs_dir.iterdir())) == 1


def test_manifest_round_trip_in_ollama_layout(tmp_path):
    store = ModelStore(tmp_path)
    name = parse_model_name("Llama3:8b")
    manifest = _manifest(store, b"weights")
    path = store.write_manifest(name, manifest)
    assert path == tmp_path / "manifests" / "registry.ollama.ai" / "library" / "Llama3" / "8b"
    raw = path.read_bytes()
    data = json.loads(raw)
    assert list(data) == ["schemaVersion", "mediaType", "config", "layers"]
    assert data["schemaVersion"] == 2
    assert data["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert "from" not in data["layers"][0] and raw.endswith(b"\n")
    assert store.read_manifest(path) == manifest
    listed = list(store.iter_manifests())
    assert [(n.canonical(), p) for n, p in listed] == [(name.canonical(), path)]
    stored = store.find(parse_model_name("llama3:8B"))  # case-insensitive, like Ollama
    assert stored is not None and stored.digest == hashlib.sha256(raw).hexdigest()
    assert stored.manifest.total_size() == len(b"weights") + len(b'{"model_format":"gguf"}')


def test_layer_from_field_uses_json_alias(tmp_path):
    layer = Layer.model_validate(
        {"mediaType": MEDIA_TEMPLATE, "digest": "sha256:" + "0" * 64, "size": 1, "from": "/x"}
    )
    assert layer.from_ == "/x"
    manifest = Manifest(config=layer, layers=[layer])
    assert json.loads(manifest.to_bytes())["layers"][0]["from"] == "/x"


def test_iter_manifests_skips_invalid_paths(tmp_path):
    store = ModelStore(tmp_path)
    store.write_manifest(parse_model_name("good:1"), _manifest(store, b"x"))
    bad = store.manifests_dir / "registry.ollama.ai" / "library" / "bad name" / "latest"
    bad.parent.mkdir(parents=True)
    bad.write_text("{}")
    (store.manifests_dir / "stray.txt").write_text("not a manifest")
    assert [n.display() for n, _ in store.iter_manifests()] == ["good:1"]


def test_delete_removes_manifest_and_only_unshared_blobs(tmp_path):
    store = ModelStore(tmp_path)
    shared, own = b"shared weights", b"own template"
    store.write_manifest(parse_model_name("a:1"), _manifest(store, shared, own))
    store.write_manifest(parse_model_name("b:1"), _manifest(store, shared))
    target = store.find(parse_model_name("a:1"))
    assert target is not None
    removed = store.delete_model(target)
    assert removed == ["sha256:" + hashlib.sha256(own).hexdigest()]
    assert not target.path.exists()
    assert not target.path.parent.exists()  # empty model directory pruned
    assert store.has_blob("sha256:" + hashlib.sha256(shared).hexdigest())
    assert [n.display() for n, _ in store.iter_manifests()] == ["b:1"]


def test_copy_writes_identical_manifest(tmp_path):
    store = ModelStore(tmp_path)
    store.write_manifest(parse_model_name("src:1"), _manifest(store, b"w"))
    source = store.find(parse_model_name("src:1"))
    assert source is not None
    path = store.copy_model(source, parse_model_name("evil.example:5000/team/dst:2"))
    assert path == tmp_path / "manifests" / "evil.example:5000" / "team" / "dst" / "2"
    assert path.read_bytes() == source.path.read_bytes()


def test_resolve_name_reuses_existing_spelling(tmp_path):
    store = ModelStore(tmp_path)
    store.write_manifest(parse_model_name("MixedCase:Tag"), _manifest(store, b"w"))
    resolved = store.resolve_name(parse_model_name("mixedcase:newtag"))
    assert (resolved.model, resolved.tag) == ("MixedCase", "newtag")


def test_fabricated_models_are_deterministic_and_valid(tmp_path):
    first, second = ModelStore(tmp_path / "a"), ModelStore(tmp_path / "b")
    for store in (first, second):
        for raw in seed_names(4):
            install(store, fabricate(parse_model_name(raw)))
    digests = [sorted(d for d, _ in s.iter_blobs()) for s in (first, second)]
    assert digests[0] == digests[1] and digests[0]
    _blob_names_match_content(first)
    stored = first.find(parse_model_name("llama3.2:1b"))
    assert stored is not None
    model_layer = stored.manifest.layer(MEDIA_MODEL)
    assert model_layer is not None
    assert first.read_blob(model_layer.digest)[:4] == b"GGUF"
    config = json.loads(first.read_blob(stored.manifest.config.digest))
    assert config["model_family"] == "llama" and config["model_type"] == "1.2B"
    assert config["rootfs"]["diff_ids"] == [layer.digest for layer in stored.manifest.layers]


def test_seed_names_are_stable_and_unique():
    names = seed_names(14)
    assert names[:4] == ["llama3.2:1b", "qwen2.5:0.5b", "gemma3:270m", "secret-model:latest"]
    assert len(set(names)) == 14 and names[-1] == "decoy-model-14:latest"
