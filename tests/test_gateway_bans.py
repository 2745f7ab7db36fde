"""Bans end to end: two gateway replicas on one database in front of the decoy. Bans made by the CLI
and by one replica's automatic ban reach the other within a second; a banned address never reaches
Ollama (the decoy's request log is the ground truth); valid keys never get their client banned."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import run_cli
from support.gateway import Gateway, KeySpec, audit_rows, create_keys, start_gateway
from support.servers import DecoyProcess, start_decoy

CONFIG = '[gateway]\ntrusted_proxies = ["127.0.0.1/32"]\n'  # tests speak for other clients by X-Forwarded-For


@pytest.fixture(scope="module")
def decoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DecoyProcess]:
    with start_decoy(tmp_path_factory.mktemp("decoy"), seed_models=1) as d:
        yield d


@pytest.fixture(scope="module")
def replicas(decoy: DecoyProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Gateway]]:
    work = tmp_path_factory.mktemp("gw")
    db = f"sqlite:///{work / 'guard.db'}"
    keys = create_keys(db, [KeySpec("reader", "read"), KeySpec("admin", "admin")])
    with start_gateway(work, decoy.url, db_url=db, config_toml=CONFIG) as a, \
            start_gateway(work, decoy.url, db_url=db, config_toml=CONFIG) as b:
        a.keys = b.keys = keys
        yield a, b


def call(gw: Gateway, path: str, client: str, *, key: str | None = "reader", marker: str = "") -> int:
    headers = {"X-Forwarded-For": client}
    if key:
        headers["Authorization"] = f"Bearer {gw.keys.get(key, key)}"
    if marker:
        body = json.dumps({"model": marker}).encode()
        req = urllib.request.Request(gw.url + path, data=body, headers=headers, method="POST")
    else:
        req = urllib.request.Request(gw.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def within(seconds: float, check: object) -> float:
    """Time from now until the start of the first ``check()`` that is true — the effect was in place
    then (the check's own requests are not counted); AssertionError after ``seconds``."""
    start = time.monotonic()
    while True:
        began = time.monotonic()
        if check():  # type: ignore[operator]
            return began - start
        if began - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)


def reached_decoy(decoy: DecoyProcess, marker: str) -> bool:
    return any(marker in (r.get("body") or "") for r in decoy.requests())


def test_cli_ban_reaches_both_replicas_and_is_lifted(replicas: tuple[Gateway, Gateway], decoy: DecoyProcess,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    a, b = replicas
    victim = "203.0.113.5"
    assert call(a, "/api/tags", victim) == 200
    code, out, err = run_cli(capsys, "bans", "add", victim, "--minutes", "5", "--reason", "scanner",
                             "--db", a.db_url)
    assert code == 0, err
    assert out.startswith(f"banned {victim} ")
    both = lambda: call(a, "/api/tags", victim) == 403 and call(b, "/api/tags", victim) == 403  # noqa: E731
    assert within(1.0, both) < 1.0
    assert call(b, "/api/show", victim, marker="marker-banned-1") == 403
    assert call(b, "/api/show", "::ffff:203.0.113.5", marker="marker-banned-2") == 403  # same address
    assert call(a, "/api/tags", "203.0.113.6") == 200  # others are served
    assert not reached_decoy(decoy, "marker-banned-")
    code, out, _ = run_cli(capsys, "bans", "list", "--format", "json", "--db", a.db_url)
    (listed,) = [b for b in json.loads(out) if b["address"] == victim]
    assert listed["reason"] == "scanner" and listed["source"] == "manual" and listed["active"]
    code, out, _ = run_cli(capsys, "bans", "list", "--db", a.db_url)
    assert victim in out and "scanner" in out
    code, out, _ = run_cli(capsys, "bans", "remove", victim, "--db", a.db_url)
    assert code == 0 and "lifted" in out
    within(1.0, lambda: call(a, "/api/tags", victim) == 200 and call(b, "/api/tags", victim) == 200)
    assert call(b, "/api/show", victim, marker="marker-after-lift") in (200, 404)
    assert reached_decoy(decoy, "marker-after-lift")
    code, _, err = run_cli(capsys, "bans", "remove", victim, "--db", a.db_url)
    assert code == 1 and "not banned" in err
    refusals = [r for r in audit_rows(a.db_url) if r["reason"] == "client-banned"]
    assert refusals
    assert all(r["status"] == 403 and r["client"] in (victim, "::ffff:203.0.113.5") for r in refusals)


def test_network_ban(replicas: tuple[Gateway, Gateway], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = replicas
    code, _, err = run_cli(capsys, "bans", "add", "198.51.100.0/24", "--db", a.db_url)
    assert code == 0, err
    within(1.0, lambda: call(b, "/api/tags", "198.51.100.200") == 403)
    assert call(a, "/api/tags", "198.51.101.1") == 200
    run_cli(capsys, "bans", "remove", "198.51.100.0/24", "--db", a.db_url)
    within(1.0, lambda: call(b, "/api/tags", "198.51.100.200") == 200)


def test_auto_ban_after_auth_failures_reaches_the_other_replica(replicas: tuple[Gateway, Gateway],
                                                                decoy: DecoyProcess,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    a, b = replicas
    attacker = "203.0.113.66"
    codes = [call(a, "/api/tags", attacker, key=None) for _ in range(19)]
    assert set(codes) == {401}
    assert call(a, "/api/tags", attacker, key="og_0000_wrong") == 401  # the 20th failure: a wrong key
    assert call(a, "/api/tags", attacker) == 403  # banned at once here, even with a valid key
    assert within(1.0, lambda: call(b, "/api/tags", attacker) == 403) < 1.0
    assert call(b, "/api/show", attacker, marker="marker-auto-banned") == 403
    assert not reached_decoy(decoy, "marker-auto-banned")
    _, out, _ = run_cli(capsys, "bans", "list", "--format", "json", "--db", a.db_url)
    (ban,) = [x for x in json.loads(out) if x["address"] == attacker]
    assert ban["source"] == "auto" and "20 authentication failures" in ban["reason"]
    assert ban["until"] is not None
    run_cli(capsys, "bans", "remove", attacker, "--db", a.db_url)


def test_unknown_paths_without_a_key_count_but_valid_keys_never_do(replicas: tuple[Gateway, Gateway]) -> None:
    a, _ = replicas
    prober = "203.0.113.67"
    ours = "203.0.113.68"
    for i in range(25):  # a client of ours: valid key, wrong role or unknown paths — never banned
        assert call(a, f"/api/nothing-{i}", ours) == 403
        assert call(a, "/api/delete", ours) in (403, 405)
    assert call(a, "/api/tags", ours) == 200
    for i in range(20):
        call(a, f"/wp-login-{i}.php", prober, key=None)
    within(1.0, lambda: call(a, "/api/tags", prober) == 403)
    # loopback (the trusted proxy itself) is never banned, however often it fails
    for _ in range(25):
        assert call(a, "/api/tags", "127.0.0.1", key=None) == 401
    assert call(a, "/api/tags", "127.0.0.1") == 200


def test_bans_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'none.db'}"
    for args, message in [
        (["add", "not-an-ip", "--db", db], "not an IP address"),
        (["add", "0.0.0.0/0", "--db", db], "every address"),
        (["add", "203.0.113.1", "--minutes", "0", "--db", db], "--minutes"),
        (["list", "--db", db], "no gateway database"),
    ]:
        code, out, err = run_cli(capsys, "bans", *args)
        assert code == 2 and out == "", args
        assert message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "none.db").exists()


def test_watch_bans_high_findings_on_every_replica(
    replicas: tuple[Gateway, Gateway], decoy: DecoyProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.watch import RECON, gin

    a, b = replicas
    log = tmp_path / "server.log"
    lines = [gin("203.0.113.99", "POST", "/api/pull"),  # admin from a remote client: high → banned
             *[line.replace("203.0.113.9", "203.0.113.98") for line in RECON],  # recon: medium → alert only
             gin("127.0.0.1", "DELETE", "/api/delete"),  # the owner: never banned
             gin("10.9.9.9", "POST", "/api/pull")]  # a --trusted network: never banned
    log.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "watch", str(log), "--once", "--tz", "UTC", "--ban", "--db", a.db_url,
                             "--trusted", "10.0.0.0/8", "--ban-minutes", "5", "--fail-on", "never")
    assert code == 0, err
    assert {json.loads(line)["rule"] for line in out.splitlines()} >= {"admin-from-remote", "recon-burst"}
    assert "banned 203.0.113.99 for 5 min (admin-from-remote, high)" in err
    assert within(1.0, lambda: call(b, "/api/tags", "203.0.113.99") == 403) < 1.0
    assert call(b, "/api/show", "203.0.113.99", marker="marker-watch-banned") == 403
    assert not reached_decoy(decoy, "marker-watch-banned")
    for other in ("203.0.113.98", "10.9.9.9"):
        assert call(a, "/api/tags", other) == 200
    code, out, _ = run_cli(capsys, "bans", "list", "--format", "json", "--db", a.db_url)
    (ban,) = [x for x in json.loads(out) if x["address"] == "203.0.113.99"]
    assert ban["source"] == "watch" and ban["reason"].startswith("watch: admin-from-remote (high)")
    assert {x["address"] for x in json.loads(out)}.isdisjoint({"203.0.113.98", "127.0.0.1", "10.9.9.9"})
    run_cli(capsys, "bans", "remove", "203.0.113.99", "--db", a.db_url)
    # the alerts are kept in the gateway database for the console (og_alerts), without evidence
    import asyncio

    from ollama_guard.gateway.alerts import AlertStore
    from ollama_guard.gateway.db import create_engine_for

    async def latest() -> list[dict]:
        engine = create_engine_for(a.db_url)
        try:
            return await AlertStore(engine).latest(20)
        finally:
            await engine.dispose()

    kept = {(r["rule"], r["target"]) for r in asyncio.run(latest())}
    assert {("admin-from-remote", "203.0.113.99"), ("recon-burst", "203.0.113.98")} <= kept
    code, _, err = run_cli(capsys, "watch", str(log), "--once", "--ban")
    assert code == 2 and "--ban needs the gateway database" in err
    code, _, err = run_cli(capsys, "watch", str(log), "--once", "--ban", "--db", f"sqlite:///{tmp_path}/no.db")
    assert code == 2 and "no gateway database" in err


def test_metrics_count_refusals_and_bans(replicas: tuple[Gateway, Gateway]) -> None:
    """What deploy/prometheus/ollama-guard.rules.yml alerts on is exported by a running gateway."""
    a, _ = replicas
    for _ in range(20):
        call(a, "/api/tags", "203.0.113.201", key=None)
    req = urllib.request.Request(a.url + "/-/metrics", headers={"Authorization": f"Bearer {a.keys['admin']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    assert values['ollama_guard_refusals_total{reason="no-key"}'] >= 20
    assert values["ollama_guard_auto_bans_total"] >= 1
    assert values["ollama_guard_bans_active"] >= 1
    assert "ollama_guard_audit_backlog" in values
