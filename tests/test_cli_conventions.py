"""Conventions users bring from other tools: shell completion, the system config found without --config
(so `keys create` writes to the database the service uses), investigate --untrusted-loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_guard.gateway import config as gateway_config
from ollama_guard.gateway.config import load_config
from support.cli import run_cli

BIN = Path(sys.executable).parent


# --- shell completion (click's _OLLAMA_GUARD_COMPLETE) ------------------------------------------------------


def _complete(words: str, cword: int) -> list[str]:
    env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    env["_OLLAMA_GUARD_COMPLETE"] = "bash_complete"
    proc = subprocess.run([sys.executable, "-m", "ollama_guard"], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line]


def test_completion_of_commands_options_and_choices() -> None:
    assert "scan" in _complete("ollama-guard sc", 1)
    assert {"investigate"} <= set(_complete("ollama-guard inv", 1))
    assert "--untrusted-loopback" in _complete("ollama-guard investigate --untr", 2)
    assert set(_complete("ollama-guard scan --format ", 3)) == {"table", "json", "sarif", "html", "markdown"}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_documented_bash_line_completes_in_bash(tmp_path: Path) -> None:
    """The line in docs/reports.md, run by bash itself: the function it defines fills COMPREPLY."""
    script = (
        'eval "$(_OLLAMA_GUARD_COMPLETE=bash_source ollama-guard)"\n'
        "COMP_WORDS=(ollama-guard inv); COMP_CWORD=1\n"
        "_ollama_guard_completion ollama-guard\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if not (BIN / "ollama-guard").exists():
        pytest.skip("the ollama-guard script is not installed next to this Python")
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "investigate" in proc.stdout.split()
    docs = (Path(__file__).parent.parent / "docs" / "reports.md").read_text()
    assert 'eval "$(_OLLAMA_GUARD_COMPLETE=bash_source ollama-guard)"' in docs


# --- /etc/ollama-guard/config.toml without --config ---------------------------------------------------------


@pytest.fixture
def system_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SYSTEM_CONFIG moved into tmp_path (its file not created yet); a separate data dir for the default."""
    path = tmp_path / "etc" / "ollama-guard" / "config.toml"
    monkeypatch.setattr(gateway_config, "SYSTEM_CONFIG", path)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    for name in ("OLLAMA_GUARD_CONFIG", "OLLAMA_GUARD_DB", "OLLAMA_GUARD_SECRET", "OLLAMA_GUARD_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_system_config_is_used_by_keys_and_serve_without_config(
    system_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    service_db = tmp_path / "service" / "guard.db"
    service_db.parent.mkdir()
    system_config.parent.mkdir(parents=True)
    system_config.write_text(f'[gateway]\ndb = "sqlite:///{service_db}"\nlisten = "127.0.0.1:11999"\n')
    code, out, err = run_cli(capsys, "keys", "create", "alice", "--role", "read")
    assert code == 0, err
    assert service_db.is_file() and not (tmp_path / "home" / "guard.db").exists()
    code, out, err = run_cli(capsys, "keys", "list", "--format", "json")
    assert code == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["alice"], err
    config = load_config(None, {}, {})  # what serve builds without --config
    assert config.db == f"sqlite:///{service_db}" and config.listen == "127.0.0.1:11999"


def test_without_a_system_config_the_data_dir_is_used(
    system_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "keys", "create", "bob", "--role", "read")
    assert code == 0, err
    assert (tmp_path / "home" / "guard.db").is_file()
    assert load_config(None, {}, {}).db.endswith(str(tmp_path / "home" / "guard.db"))


def test_explicit_config_and_environment_still_win(system_config: Path, tmp_path: Path) -> None:
    system_config.parent.mkdir(parents=True)
    system_config.write_text('[gateway]\nlisten = "127.0.0.1:11999"\n')
    other = tmp_path / "other.toml"
    other.write_text('[gateway]\nlisten = "127.0.0.1:12000"\n')
    assert load_config(other, {}, {}).listen == "127.0.0.1:12000"
    assert load_config(None, {}, {"OLLAMA_GUARD_CONFIG": str(other)}).listen == "127.0.0.1:12000"
    assert load_config(None, {"listen": "127.0.0.1:12001"}, {}).listen == "127.0.0.1:12001"


def test_a_broken_system_config_is_an_error_not_a_silent_fallback(
    system_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    system_config.parent.mkdir(parents=True)
    system_config.write_text("[gateway\n")
    code, out, err = run_cli(capsys, "keys", "list")
    assert code == 2 and out == ""
    assert str(system_config) in err and len(err.strip().splitlines()) == 1


# --- investigate --untrusted-loopback -------------------------------------------------------------------

PROXIED_LOG = (
    'time=2025-02-01T10:00:00.000Z level=INFO source=routes.go:1238 msg="Listening on 127.0.0.1:11434 '
    '(version 0.5.7)"\n'
    '[GIN] 2025/02/01 - 10:01:00 | 200 |      5.120331ms |       127.0.0.1 | GET      "/api/tags"\n'
    '[GIN] 2025/02/01 - 10:01:02 | 200 |      1.518242ms |       127.0.0.1 | DELETE   "/api/delete"\n'
    '[GIN] 2025/02/01 - 10:01:05 | 200 |  2.810348421s |       127.0.0.1 | POST     "/api/pull"\n'
)


def _investigate(capsys: pytest.CaptureFixture[str], log: Path, *extra: str) -> dict:
    args = ("investigate", str(log), "--format", "json", "--fail-on", "never", *extra)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return json.loads(out)


def test_untrusted_loopback_treats_proxied_clients_as_remote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "server.log"
    log.write_text(PROXIED_LOG)
    owner = _investigate(capsys, log)
    assert "admin-from-remote" not in {f["rule"] for f in owner["findings"]}  # loopback is the owner
    proxied = _investigate(capsys, log, "--untrusted-loopback")
    admin = [f for f in proxied["findings"] if f["rule"] == "admin-from-remote"]
    assert admin and admin[0]["target"] == "127.0.0.1", proxied["findings"]
    assert admin[0]["severity"] in ("high", "critical")
