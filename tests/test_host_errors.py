"""Errors a user meets on a real host are one line naming the file and what to do, exit 2 — never
Python's own words (issue 9, item 10): a read-only data directory, a non-UTF-8 config file, no home
directory, an unwritable `harden --out`."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ollama_guard.gateway import secrets as secrets_module
from support.cli import run_cli

PYTHON_WORDS = ("Traceback", "Error:", "Errno", "OSError", "UnicodeDecodeError", "TimeoutError")


def one_human_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert not any(word in lines[0] for word in PYTHON_WORDS), lines[0]
    return lines[0]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OLLAMA_GUARD_SECRET", "OLLAMA_GUARD_DB", "OLLAMA_GUARD_CONFIG", "OLLAMA_GUARD_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_read_only_data_dir_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    """What a read-only file system answers: EROFS to creating the temp file *and* to removing it."""
    home = tmp_path / "data"
    home.mkdir()
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(home))
    real_open = os.open

    def read_only_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(home)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    def read_only_unlink(self, missing_ok=False):  # type: ignore[no-untyped-def]
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(secrets_module.os, "open", read_only_open)
    monkeypatch.setattr(secrets_module.Path, "unlink", read_only_unlink)
    code, out, err = run_cli(capsys, "keys", "create", "a", "--role", "read")
    assert code == 2 and out == ""
    line = one_human_line(err)
    assert f"{home}/secret.key" in line and "Read-only file system" in line
    assert ".secret.key." not in line  # not the temp file's name
    assert "OLLAMA_GUARD_SECRET" in line  # what to do


def _can_mount_privately() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_privately(), reason="needs a private mount namespace (root)")
def test_read_only_data_dir_real(tmp_path: Path) -> None:
    """The same on a real read-only tmpfs, mounted in a private mount namespace of the command alone."""
    target = tmp_path / "ro"
    target.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_GUARD_")}
    env["OLLAMA_GUARD_HOME"] = str(target)
    script = f'mount -t tmpfs -o ro tmpfs "{target}" && exec "{sys.executable}" -m ollama_guard "$@"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", "keys", "create", "a", "--role", "read"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == "", done
    line = one_human_line(done.stderr)
    assert f"{target}/secret.key" in line and "Read-only file system" in line


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "create", "x", "--role", "read"], ["serve"]])
def test_non_utf8_config_file_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None, command: list[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'[gateway]\nlisten = "\xff\xfe127.0.0.1:1"\n')
    code, out, err = run_cli(capsys, *command, "--config", str(config))
    assert code == 2 and out == ""
    line = one_human_line(err)
    assert str(config) in line and "UTF-8" in line


def test_no_home_directory_says_which_variable_to_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    code, _out, err = run_cli(capsys, "keys", "list")
    assert code == 2
    assert "OLLAMA_GUARD_HOME" in one_human_line(err)


def test_harden_into_an_unwritable_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/environment").write_text("OLLAMA_HOST=0.0.0.0\n")
    out = tmp_path / "plan"
    out.mkdir()
    real_open = os.open

    def read_only_open(path, flags, *args):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(out)) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    code, stdout, err = run_cli(capsys, "harden", "--root", str(root), "--out", str(out))
    assert code == 2 and stdout == ""
    line = one_human_line(err)
    assert str(out) in line and "Read-only file system" in line and "--out" in line


DEEP_YAML = "services:\n  ollama:\n    environment: " + "[" * 1100 + "]" * 1100 + "\n"
DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_TOML = "[gateway]\nupstream = " + "[" * 100_000 + "]" * 100_000 + "\n"


def test_hostile_nesting_in_files_audit_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Files inside an audited root are the attacker's: nesting thousands deep (Python's RecursionError)
    is skipped with a note, not a crash; the same file given with --compose is one line, exit 2."""
    root = tmp_path / "root"
    for rel, text in (
        ("srv/app/compose.yaml", DEEP_YAML),
        ("etc/docker/daemon.json", DEEP_JSON),
        ("etc/ollama-guard/config.toml", DEEP_TOML),
        ("root/.ollama/server.json", DEEP_JSON),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/ollama.service").write_text("[Service]\nExecStart=/usr/bin/ollama serve\n")
    code, out, err = run_cli(capsys, "audit", "--root", str(root), "--format", "json", "--fail-on", "never")
    assert code == 0, err
    assert "/srv/app/compose.yaml: nested too deeply to read (skipped)" in out
    code, out, err = run_cli(capsys, "audit", "--compose", str(root / "srv/app/compose.yaml"))
    assert code == 2 and out == ""
    assert "nested too deeply" in one_human_line(err)


def test_hostile_nesting_in_the_gateway_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(DEEP_TOML)
    code, out, err = run_cli(capsys, "keys", "list", "--config", str(config))
    assert code == 2 and out == ""
    assert str(config) in one_human_line(err)
