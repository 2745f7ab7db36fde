"""`ollama-guard serve` deployment options: TLS and several worker processes sharing limits via Redis."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import KeySpec, audit_rows, create_keys, start_gateway
from support.servers import DecoyProcess, start_decoy, start_process, stop_process
from support.tls import self_signed_cert

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("redis-server") is None,
    reason="needs openssl and redis-server",
)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, _ = start_process(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        ready_prefix="Ready to accept connections",
    )
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop_process(proc)


@pytest.fixture
def decoy(tmp_path: Path) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path / "decoy", seed_models=1) as d:
        yield d


def test_tls_and_two_workers_share_limits(
    tmp_path: Path, decoy: DecoyProcess, redis: tuple[str, subprocess.Popen[str]]
) -> None:
    redis_url, redis_proc = redis
    cert, key = self_signed_cert(tmp_path, "127.0.0.1", ip_san="127.0.0.1")
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    keys = create_keys(db, [KeySpec("reader", "read", rpm=5)])
    config = f'[gateway]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    context = ssl.create_default_context(cafile=str(cert))
    with start_gateway(
        tmp_path / "gw",
        decoy.url,
        db_url=db,
        config_toml=config,
        extra_args=["--workers", "2", "--redis", redis_url],
    ) as gw:
        assert gw.url.startswith("https://")

        def status() -> int:
            req = urllib.request.Request(
                gw.url + "/api/version", headers={"Authorization": f"Bearer {keys['reader']}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10, context=context) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        # new connection each time: requests land on both workers, the rpm limit is still 5 in total
        statuses = [status() for _ in range(8)]
        assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(gw.url.replace("https://", "http://") + "/-/health", timeout=5)
        # the shared limit store goes away: refuse (fail closed), never allow
        stop_process(redis_proc)
        assert {status() for _ in range(3)} == {503}
        statuses += [503] * 3
    rows = audit_rows(db)
    deadline = time.monotonic() + 5
    while len(rows) < 11 and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = audit_rows(db)
    # two workers write their own batches: compare the multiset, not the order
    assert sorted(r["status"] for r in rows if r["path"] == "/api/version") == sorted(statuses)
