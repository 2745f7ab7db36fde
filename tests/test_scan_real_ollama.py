"""The scanner against answers real Ollama gives (here from the decoy, which emulates Go, gin and each
Ollama version): gin's own 404 before the blob route existed, unstamped 0.0.0 builds, listings longer
than the probe's byte cap. Scans 127.x only."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from ollama_guard.scan.engine import Scanner, ScanSettings
from ollama_guard.scan.fingerprints import ProbeAnswer, reached_blob_handler
from ollama_guard.scan.probes import BLOB_PROBE, names_from_partial_listing
from ollama_guard.scan.targets import TargetSet
from support.servers import start_decoy


async def _scan(hostport: str) -> dict[str, Any]:
    results = [r async for r in Scanner(TargetSet([hostport]), ScanSettings(timeout=5.0)).results()]
    (result,) = results
    return result.to_json()


def _rules(host: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in host["findings"]}


async def test_gin_404_before_0_1_10_is_not_the_blob_handler(tmp_path: Path) -> None:
    with start_decoy(tmp_path / "a", version="0.1.9", seed_models=1) as old:
        host = await _scan(old.hostport)
        blob = [r for r in old.requests() if r["method"] == "HEAD"]
    assert host["service"] == "ollama" and host["version"] is None  # /api/version came in 0.1.16
    assert "unauthenticated-admin" not in _rules(host)
    assert blob and all(r["status"] == 404 for r in blob)
    with start_decoy(tmp_path / "b", version="0.1.10", seed_models=1) as newer:
        host = await _scan(newer.hostport)
    assert "unauthenticated-admin" in _rules(host)


def test_blob_answers_are_told_apart_by_content_type() -> None:
    gin = ProbeAnswer("HEAD", BLOB_PROBE.split(" ")[1], 404, {"content-type": "text/plain"})
    handler = ProbeAnswer(
        "HEAD", BLOB_PROBE.split(" ")[1], 404, {"content-type": "application/json; charset=utf-8"}
    )
    found = ProbeAnswer("HEAD", BLOB_PROBE.split(" ")[1], 200, {})
    assert not reached_blob_handler(gin)
    assert reached_blob_handler(handler) and reached_blob_handler(found)
    assert not reached_blob_handler(ProbeAnswer("HEAD", "/", 405, {"content-type": "application/json"}))


async def test_a_0_0_0_build_is_an_unknown_version_possibly_affected_by_every_advisory(
    tmp_path: Path,
) -> None:
    with start_decoy(tmp_path, version="0.0.0", seed_models=1) as dev:
        host = await _scan(dev.hostport)
    found = _rules(host)
    assert host["version"] == "0.0.0"
    assert "CVE-2024-37032" in found  # fixed in 0.1.34: a newest-version reading would drop it
    assert found["CVE-2024-37032"]["severity"] == "low"
    assert "unknown version" in found["CVE-2024-37032"]["detail"]


async def test_tags_longer_than_the_byte_cap_are_read_in_part_not_dropped(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with start_decoy(tmp_path, seed_models=1, models_dir=store):
        pass
    (manifest,) = [p for p in (store / "manifests").rglob("*") if p.is_file()]
    for n in range(900):
        target = store / "manifests" / "registry.ollama.ai" / "library" / f"model-number-{n:04d}" / "latest"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(manifest, target)
    with start_decoy(tmp_path, seed_models=0, models_dir=store) as big:
        host = await _scan(big.hostport)
    assert host["service"] == "ollama"
    assert 300 < len(host["models"]) < 901
    assert "model-enumeration" in _rules(host)


def test_names_from_a_cut_listing() -> None:
    body = b'{"models":[{"name":"a:latest","model":"a:latest","details":{"family":"x"}},{"name":"b\\"c:1","mo'
    assert names_from_partial_listing(body) == ["a:latest", 'b"c:1']
    assert names_from_partial_listing(b'{"models":[{"name":"trunc') == []


async def test_a_host_guarded_ollama_reached_by_name_is_reported_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loopback-bound Ollama reached through a non-local name answers 403 to everything."""
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "ollama.tunnel.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with start_decoy(tmp_path, seed_models=1) as guarded:
        direct = await _scan(f"ollama.tunnel.example:{guarded.port}")
        seen = guarded.requests()
    assert direct["service"] == "ollama"
    assert direct["service_name"] == "Ollama, Host guard active"
    assert direct["auth"] == "none" and direct["models"]
    assert "unauthenticated-api" in _rules(direct)
    assert {
        r["status"]
        for r in seen
        if ("host", f"ollama.tunnel.example:{guarded.port}") in map(tuple, r["headers"])
    } == {403}
