"""Chain of custody and provenance of an incident report: the SHA-256 and size of every source as it was
read (streams hashed as they stream), the tool version and the command line without credentials, in
every format."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest

from ollama_guard.investigate import analyze as analyze_mod
from ollama_guard.investigate.analyze import analyze
from ollama_guard.investigate.custody import redact_argv
from ollama_guard.investigate.events import ClientClassifier
from ollama_guard.investigate.rules import load_rules
from ollama_guard.investigate.sources import file_source
from support.cli import run_cli

LOGS = Path(__file__).parent / "data" / "logs"
SECRET = "hunter2-Zq9"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _custody(paths: list[Path], *, fast: bool = True, workers: int = 1, **kw: object) -> list[dict]:
    analysis = analyze([file_source(str(p)) for p in paths], None, rules=load_rules(),
                       classifier=ClientClassifier(), tz=UTC, since=None, fast=fast, workers=workers, **kw)
    return analysis.custody


@pytest.mark.parametrize("fast", [True, False])
def test_file_and_gzip_are_hashed_as_stored(tmp_path: Path, fast: bool) -> None:
    plain = LOGS / "exfil.log"
    rotated = tmp_path / "server-1.log.gz"
    rotated.write_bytes(gzip.compress((LOGS / "recon.log").read_bytes()) + b"")
    records = {r["source"]: r for r in _custody([plain, rotated], fast=fast)}
    rec = records["exfil.log"]
    assert rec["sha256"] == _sha(plain.read_bytes())
    assert rec["size"] == plain.stat().st_size == rec["file_size"]
    assert rec["path"] == str(plain.resolve())
    assert rec["kind"] == "file" and rec["complete"] and not rec["changed_while_read"]
    assert (rec["first_time"], rec["last_time"]) == ("2025-01-11T23:30:00Z", "2025-01-11T23:40:00Z")
    assert rec["lines"] == rec["recognised_lines"] == 8
    gz = records["server-1.log.gz"]
    assert gz["kind"] == "gzip"
    assert gz["sha256"] == _sha(rotated.read_bytes())  # the evidence as stored, not its decompression
    assert gz["size"] == rotated.stat().st_size and gz["complete"]


def test_big_file_split_across_workers_is_hashed_whole(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze_mod, "PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(analyze_mod, "PIECE_SIZE", 4 << 10)
    path = tmp_path / "big.log"
    path.write_bytes((LOGS / "benign_local.log").read_bytes() * 40)
    assert len(analyze_mod._pieces(str(path), path.stat().st_size)) > 3
    (rec,) = _custody([path], workers=2)
    assert rec["sha256"] == _sha(path.read_bytes()) and rec["size"] == path.stat().st_size
    assert rec["complete"]


def test_a_log_that_grows_while_read_is_hashed_as_analysed(tmp_path: Path) -> None:
    """A live server.log: the bytes analysed (up to its size when the run began) are what is hashed,
    and the record says the file changed."""
    path = tmp_path / "server.log"
    original = (LOGS / "recon.log").read_bytes()
    path.write_bytes(original)

    def grow(name: str, lines: int) -> None:
        with path.open("ab") as fh:
            fh.write(b"[GIN] 2024/08/19 - 16:00:00 | 200 |      1ms |     203.0.113.99 | GET      \"/\"\n")

    (rec,) = _custody([path], on_progress=grow)
    assert rec["sha256"] == _sha(original) and rec["size"] == len(original)
    assert rec["changed_while_read"] and rec["file_size"] == len(original)


def _run(args: list[str], stdin: bytes | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ollama_guard", "investigate", *args], input=stdin,
                          capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]


def test_stdin_is_hashed_as_it_streams() -> None:
    """A pipe can be read only once: the hash can only match if it was taken on the way."""
    data = (LOGS / "recon.log").read_bytes() * 3
    proc = _run(["--format", "json", "--fail-on", "never"], stdin=data)
    assert proc.returncode == 0, proc.stderr
    (rec,) = json.loads(proc.stdout)["custody"]
    assert (rec["source"], rec["kind"], rec["path"]) == ("stdin", "stdin", None)
    assert rec["sha256"] == _sha(data) and rec["size"] == len(data) and rec["complete"]


def test_journal_output_is_hashed_as_it_streams(tmp_path: Path) -> None:
    journal = tmp_path / "journal.json"
    lines = (LOGS / "recon.log").read_text(encoding="utf-8").splitlines()
    records = [{"MESSAGE": line, "__REALTIME_TIMESTAMP": str(1724076781000000 + i)}
               for i, line in enumerate(lines)]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "journalctl").write_text(f"#!/bin/sh\ncat {journal}\n")
    (bindir / "journalctl").chmod(0o755)
    proc = _run(["--journal", "--format", "json", "--fail-on", "never"],
                env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stderr
    (rec,) = json.loads(proc.stdout)["custody"]
    assert rec["kind"] == "journal" and rec["command"].endswith("journalctl -u ollama -o json --no-pager")
    assert rec["sha256"] == _sha(journal.read_bytes())


def test_redact_argv() -> None:
    argv = ["ollama-guard", "investigate", "--audit-db", f"postgresql://guard:{SECRET}@db.example/audit",
            "--password", SECRET, f"--api-key={SECRET}", f"OLLAMA_TOKEN={SECRET}", "server.log"]
    out = redact_argv(argv)
    assert SECRET not in " ".join(out)
    assert "db.example/audit" in " ".join(out) and "server.log" in out and "--audit-db" in out


def test_provenance_and_custody_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line as typed (credentials redacted) and the tool version reach every format,
    with each source's hash; the credential reaches none."""
    from ollama_guard import __version__

    log = LOGS / "exfil.log"
    typed = ["python3", "-m", "ollama_guard", "investigate", str(log), "--audit-db",
             f"postgresql://guard:{SECRET}@db.example/audit"]
    monkeypatch.setattr(sys, "orig_argv", typed)
    outputs = {fmt: tmp_path / f"report.{ext}" for fmt, ext in
               [("json", "json"), ("html", "html"), ("markdown", "md"), ("sarif", "sarif"), ("table", "txt")]}
    args = ["investigate", str(log), "--fail-on", "never", "--stix", str(tmp_path / "b.json"),
            "--iocs", str(tmp_path / "i.csv")]
    for path in outputs.values():
        args += ["-o", str(path)]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    digest = _sha(log.read_bytes())
    for fmt, path in outputs.items():
        text = path.read_text(encoding="utf-8")
        assert SECRET not in text, fmt
        assert digest in text, fmt
        assert "db.example/audit" in text, fmt  # the command line is there, minus the password
        assert __version__ in text, fmt
        assert (path.stat().st_mode & 0o777) == 0o600
    for extra in ("b.json", "i.csv"):
        assert SECRET not in (tmp_path / extra).read_text(encoding="utf-8")
        assert ((tmp_path / extra).stat().st_mode & 0o777) == 0o600
    doc = json.loads(outputs["json"].read_text(encoding="utf-8"))
    prov = doc["provenance"]
    assert prov["version"] == __version__ and prov["argv"][:4] == typed[:4]
    assert prov["command_line"].startswith("python3 -m ollama_guard investigate ")
    sarif = json.loads(outputs["sarif"].read_text(encoding="utf-8"))["runs"][0]
    assert sarif["invocations"][0]["commandLine"] == prov["command_line"]
    (artifact,) = sarif["artifacts"]
    assert artifact["hashes"] == {"sha-256": digest} and artifact["length"] == log.stat().st_size
    assert artifact["location"]["uri"] == log.resolve().as_uri()
    assert "Chain of custody" in outputs["markdown"].read_text(encoding="utf-8")


def test_hashing_stops_with_an_analysis_that_ends_early(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error or Ctrl-C in the middle of a big file must not wait for the rest of it to be hashed; the
    record would say the hash is incomplete."""
    import threading
    import time

    from ollama_guard.investigate import custody

    monkeypatch.setattr(analyze_mod, "PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(analyze_mod, "PIECE_SIZE", 4 << 10)
    monkeypatch.setattr(custody, "THREAD_BLOCK", 64)
    gate = threading.Event()
    real_update = custody.Digest.update

    def slow_update(self: custody.Digest, data: bytes) -> None:
        gate.wait(0.01)  # about 10 ms per 64 bytes: minutes for the whole file
        real_update(self, data)

    monkeypatch.setattr(custody.Digest, "update", slow_update)
    path = tmp_path / "big.log"
    path.write_bytes((LOGS / "benign_local.log").read_bytes() * 40)
    source = file_source(str(path))
    blocks = analyze_mod._blocks(source, analyze_mod.fastscan.FastConfig((), lambda c: "", lambda *a: True),
                                 workers=2)
    next(blocks)
    started = time.monotonic()
    blocks.close()
    assert time.monotonic() - started < 5
    assert source.digest is not None and not source.digest.complete
