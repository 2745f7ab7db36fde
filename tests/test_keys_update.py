"""`keys update`: change a key's models or limits, and repair a key made before empty model lists were
refused (stored as `[]`, now refused as damaged) — the upgrade path from the command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from support.cli import run_cli


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("OLLAMA_GUARD_SECRET", "OLLAMA_GUARD_DB", "OLLAMA_GUARD_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OLLAMA_GUARD_HOME", str(tmp_path / "home"))
    return f"sqlite:///{tmp_path / 'guard.db'}"


def _key(capsys: pytest.CaptureFixture[str], db: str, name: str) -> dict[str, object]:
    code, out, _ = run_cli(capsys, "keys", "list", "--format", "json", "--db", db)
    assert code == 0
    return next(k for k in json.loads(out)["keys"] if k["name"] == name)


def test_update_changes_what_is_given_and_keeps_the_rest(capsys: pytest.CaptureFixture[str], db: str) -> None:
    assert (
        run_cli(
            capsys,
            "keys",
            "create",
            "app",
            "--role",
            "inference",
            "--models",
            "llama3*",
            "--rpm",
            "10",
            "--db",
            db,
        )[0]
        == 0
    )
    code, _, err = run_cli(capsys, "keys", "update", "app", "--tokens-per-day", "500", "--db", db)
    assert code == 0, err
    key = _key(capsys, db, "app")
    assert key["models"] == ["llama3*"] and key["rpm"] == 10 and key["tokens_per_day"] == 500
    assert run_cli(capsys, "keys", "update", "app", "--models", "qwen2.5:*,gemma*", "--db", db)[0] == 0
    assert _key(capsys, db, "app")["models"] == ["qwen2.5:*", "gemma*"]


@pytest.mark.parametrize("models", ["", ",", " "])
def test_update_refuses_an_empty_model_list(capsys: pytest.CaptureFixture[str], db: str, models: str) -> None:
    assert (
        run_cli(capsys, "keys", "create", "app", "--role", "read", "--models", "llama3", "--db", db)[0] == 0
    )
    code, _, err = run_cli(capsys, "keys", "update", "app", "--models", models, "--db", db)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _key(capsys, db, "app")["models"] == ["llama3"]


def test_a_legacy_key_is_repaired_only_with_models_given(capsys: pytest.CaptureFixture[str], db: str) -> None:
    assert run_cli(capsys, "keys", "create", "old", "--role", "admin", "--db", db)[0] == 0
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:  # what a key made by older versions holds
        conn.execute("UPDATE og_api_keys SET models = '[]' WHERE name = 'old'")
    assert _key(capsys, db, "old")["status"] == "damaged"
    code, _, err = run_cli(capsys, "keys", "update", "old", "--rpm", "5", "--db", db)
    assert code == 2 and "Traceback" not in err  # keeping "[]" would keep it damaged, never "all models"
    assert _key(capsys, db, "old")["status"] == "damaged"
    assert run_cli(capsys, "keys", "update", "old", "--models", "*", "--db", db)[0] == 0
    key = _key(capsys, db, "old")
    assert key["status"] == "active" and key["models"] == ["*"]


def test_update_of_an_unknown_or_revoked_key_is_one_line(capsys: pytest.CaptureFixture[str], db: str) -> None:
    assert run_cli(capsys, "keys", "create", "gone", "--role", "read", "--db", db)[0] == 0
    assert run_cli(capsys, "keys", "revoke", "gone", "--db", db)[0] == 0
    for name in ("gone", "nobody"):
        code, _, err = run_cli(capsys, "keys", "update", name, "--rpm", "3", "--db", db)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
