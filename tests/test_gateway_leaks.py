"""Small leaks (issue 10, item 7): HEAD /api/tags told a restricted key the size of the unfiltered
listing; a replica started with the wrong secret exited 3 through uvicorn instead of one line and
exit 2; the database password belongs in the environment or the config file, never on the command
line (and never in an error)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.gateway import Gateway, KeySpec, create_keys, http_bytes, raw_request, start_gateway
from support.servers import GUARD_ARGV, start_decoy


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("leaks")
    db = f"sqlite:///{work / 'guard.db'}"
    keys = create_keys(db, [KeySpec("narrow", "read", models=["llama3.2:1b"]), KeySpec("wide", "read")])
    with start_decoy(work, seed_models=3) as decoy, start_gateway(work / "gw", decoy.url, db_url=db) as g:
        g.keys = keys
        yield g


def _tags(gw: Gateway, method: str, key: str) -> tuple[int, dict[str, str], bytes]:
    resp = raw_request(gw.host, gw.port, http_bytes(method, "/api/tags", headers=gw.auth(key)))
    return resp.status, resp.headers, resp.body


@pytest.mark.parametrize("key", ["narrow", "wide"])
def test_head_of_a_listing_tells_the_length_of_what_get_would_show(gw: Gateway, key: str) -> None:
    status, _headers, listing = _tags(gw, "GET", key)
    assert status == 200
    head_status, head_headers, head_body = _tags(gw, "HEAD", key)
    assert head_status == 200 and head_body == b""
    assert int(head_headers["content-length"]) == len(listing)
    names = [m["name"] for m in json.loads(listing)["models"]]
    assert (names == ["llama3.2:1b"]) if key == "narrow" else len(names) == 3


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    argv = [*GUARD_ARGV, "serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:9", *args]
    full_env = {**os.environ, "OLLAMA_GUARD_HOME": str(tmp_path / "home"), **env}
    return subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=60)


def test_a_replica_with_the_wrong_secret_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'guard.db'}"
    create_keys(db, [KeySpec("k", "read")])  # the database is bound to the secret next to it
    wrong = {"OLLAMA_GUARD_SECRET": "x" * 40}
    done = _serve(tmp_path, wrong, "--db", db)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "secret" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "x" * 40 not in done.stderr + done.stdout


def test_the_database_url_comes_from_the_environment_and_its_password_is_never_shown(tmp_path: Path) -> None:
    password = "s3cret-pw-in-env"
    url = f"postgresql://guard:{password}@127.0.0.1:9/guard"
    done = _serve(tmp_path, {"OLLAMA_GUARD_DB": url})
    assert done.returncode == 2
    assert "127.0.0.1:9" in done.stderr  # it is the database it was told about…
    assert password not in done.stderr + done.stdout  # …and the password is not printed


def test_the_documented_replica_recipe_keeps_the_password_off_the_command_line() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "gateway.md").read_text()
    section = doc.split("## Several workers and replicas", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    commands = [line for line in lines if "ollama-guard serve" in line or line.startswith("    --")]
    assert commands and not any("postgresql://" in line for line in commands), commands
