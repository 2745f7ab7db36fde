"""Make the legacy audit-log fixture with an OLD release of ollama-guard (see README.md here).

Run with the old release's package first on the path, e.g.::

    git archive a0c872a^ src | tar -x -C /tmp/og-old
    PYTHONPATH=/tmp/og-old/src python tests/data/legacy_audit/make_fixture.py tests/data/legacy_audit

It starts that release's decoy and gateway (`serve`, SQLite), creates a key with that release's
`keys create`, sends a fixed list of requests through the gateway (allowed, refused, keyless, an
admin copy and delete), stops the gateway with SIGTERM (which flushes its audit queue), and writes:

* ``guard.db``   — the gateway database exactly as that release left it (WAL checkpointed);
* ``rows.json``  — ``og_state`` and every ``og_audit_log`` row, for loading into PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SECRET = "legacy-fixture-secret-0123456789abcdef-not-for-production"


def _start(args: list[str], env: dict[str, str], marker: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "ollama_guard", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert marker in line, line
    return proc, line.strip().rsplit(" ", 1)[-1]


def _request(base: str, method: str, path: str, key: str | None, body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def _odd_records(db: str, secret: bytes) -> None:
    """A few records with the fields the canonical form must get exactly right (non-ASCII text, NUL,
    None, a latency that needs rounding), written by that release's own AuditWriter."""
    import asyncio
    from datetime import UTC, datetime

    from ollama_guard.gateway.audit import AuditRecord, AuditWriter
    from ollama_guard.gateway.db import create_engine_for

    async def run() -> None:
        engine = create_engine_for(db)
        writer = AuditWriter(engine, secret, threaded=False)
        await writer.start()
        when = datetime(2026, 11, 1, 8, 30, 0, 5, tzinfo=UTC)
        writer.submit(AuditRecord(time=when, key_id="k1", key_name="b\u00e9a \u2603", client="::1",
                                  method="POST", path="/api/show", model="m\u00f6del\u0000x", status=404,
                                  decision="deny", reason="model-not-allowed", bytes_in=12, bytes_out=0,
                                  tokens=0, latency_ms=1.23456, request_id="r-odd-1"))
        writer.submit(AuditRecord(time=when, client="203.0.113.9", method="GET", path='/"quoted"\\x',
                                  status=401, decision="deny", reason="no-key", latency_ms=1e-7,
                                  request_id="r-odd-2"))
        await writer.flush()
        await writer.close()
        await engine.dispose()

    asyncio.run(run())


def main(out: Path) -> None:
    import ollama_guard

    where = ollama_guard.__file__
    assert "og-old" in where or os.environ.get("OG_FIXTURE_ANY_RELEASE"), where
    work = Path(tempfile.mkdtemp(prefix="og-legacy-"))
    db_path = work / "guard.db"
    db = f"sqlite:///{db_path}"
    env = {**os.environ, "OLLAMA_GUARD_SECRET": SECRET, "OLLAMA_GUARD_HOME": str(work / "home")}
    decoy, upstream = _start(["decoy", "--port", "0", "--seed-models", "2", "--models-dir",
                              str(work / "models")], env, "listening on")
    try:
        created = subprocess.run([sys.executable, "-m", "ollama_guard", "keys", "create", "ops", "--role",
                                  "admin", "--db", db], env=env, text=True, capture_output=True, check=True)
        key = created.stdout.strip().splitlines()[-1]
        reader = subprocess.run([sys.executable, "-m", "ollama_guard", "keys", "create", "dash", "--role",
                                 "read", "--db", db], env=env, text=True, capture_output=True, check=True)
        read_key = reader.stdout.strip().splitlines()[-1]
        gateway, base = _start(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream, "--db", db],
                               env, "listening on")
        try:
            with urllib.request.urlopen(upstream + "/api/tags", timeout=10) as resp:
                model = json.load(resp)["models"][0]["name"]
            statuses = [
                _request(base, "GET", "/api/tags", None),
                _request(base, "GET", "/api/tags", "og_wrong_key_00000000000000000000"),
                _request(base, "GET", "/api/tags", key),
                _request(base, "GET", "/api/version", read_key),
                _request(base, "POST", "/api/show", read_key, {"model": model}),
                _request(base, "POST", "/api/pull", read_key, {"model": "llama3"}),
                _request(base, "POST", "/api/generate", key,
                         {"model": model, "prompt": "hi", "stream": False}),
                _request(base, "POST", "/api/chat", key,
                         {"model": model, "stream": False,
                          "messages": [{"role": "user", "content": "héllo ☃"}]}),
                _request(base, "POST", "/api/copy", key, {"source": model, "destination": "copy-of-it"}),
                _request(base, "DELETE", "/api/delete", key, {"model": "copy-of-it"}),
                _request(base, "GET", "/api/v1/../tags", key),
                _request(base, "GET", "/nope", None),
                _request(base, "POST", "/api/show", read_key, {"model": "m\u00f6del-\u2603"}),
                _request(base, "GET", "/api/t%C3%A4gs", key),
            ]
            for i in range(12):
                statuses.append(_request(base, "GET", "/api/ps" if i % 2 else "/", key))
            print("statuses:", statuses, file=sys.stderr)
            time.sleep(0.5)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(30)
    finally:
        decoy.send_signal(signal.SIGTERM)
        decoy.wait(30)
    _odd_records(db, SECRET.encode())
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
    conn.row_factory = sqlite3.Row
    head = "SELECT audit_seq, audit_mac, audit_head_mac, secret_fingerprint FROM og_state"
    state = dict(conn.execute(head).fetchone())
    rows = [dict(r) for r in conn.execute("SELECT * FROM og_audit_log ORDER BY seq")]
    conn.close()
    assert rows and state["audit_seq"] == len(rows), (state, len(rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / "guard.db").write_bytes(db_path.read_bytes())
    dump = {"secret": SECRET, "state": state, "rows": rows}
    (out / "rows.json").write_text(json.dumps(dump, indent=1) + "\n")
    print(f"{len(rows)} legacy records written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
