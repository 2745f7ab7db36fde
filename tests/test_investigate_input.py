"""What `investigate` does with input that is not (all) an Ollama log: never "No findings" for it.

Nothing recognised in any source → one line on stderr naming the sources and the lines read, exit 2.
Part of a source unrecognised → counted in the report, and said on stderr when stderr is a terminal.
The fast scanner and the line parser count the same lines.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ollama_guard.investigate import analyze as analyze_mod
from ollama_guard.investigate.analyze import analyze
from ollama_guard.investigate.events import ClientClassifier
from ollama_guard.investigate.rules import load_rules
from ollama_guard.investigate.sources import file_source
from ollama_guard.ollama.loglines import count_ollama_lines, is_ollama_line, is_ollama_line_bytes
from test_investigate_gen import docker_t, gin, journald

LOGS = Path(__file__).parent / "data" / "logs"
T = datetime(2024, 8, 19, 14, 0, 0)
README = (Path(__file__).parent.parent / "README.md").read_bytes()


def _run(args: list[str], *, stdin: bytes | None = b"", env: dict[str, str] | None = None,
         stderr: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ollama_guard", "investigate", *args], input=stdin,
                          stdout=subprocess.PIPE, stderr=stderr, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})})


NOT_LOGS = {
    "empty": b"",
    "random bytes": random.Random(9).randbytes(40_000),
    "a binary": Path(sys.executable).read_bytes()[:200_000],
    "plain text": README,
    "blank lines": b"\n\n\r\n  \n",
    "gin-looking garbage": b"[GIN] 2024/08/19 - 99:99 | broken\n[GIN] [GIN]\n",
}


def _lines_in(data: bytes) -> int:
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@pytest.mark.parametrize("kind", list(NOT_LOGS))
def test_stdin_that_is_no_ollama_log_is_refused(kind: str) -> None:
    data = NOT_LOGS[kind]
    proc = _run(["--format", "json"], stdin=data)
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.count("\n") == 1, err  # one line
    assert "no Ollama log line recognised in stdin (" in err
    assert f"({_lines_in(data):,} line" in err
    assert proc.stdout == b""  # no report, and certainly no "No findings"
    assert "Traceback" not in err


def test_files_that_are_no_ollama_log_are_refused_naming_each(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(README)
    binary = tmp_path / "tool.bin"
    binary.write_bytes(NOT_LOGS["a binary"])
    rotated = tmp_path / "old.log.gz"
    rotated.write_bytes(gzip.compress(README))
    proc = _run([str(text), str(binary), str(rotated), "--format", "table"])
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.count("\n") == 1
    assert f"notes.txt ({_lines_in(README):,} lines read)" in err
    assert f"tool.bin ({_lines_in(NOT_LOGS['a binary']):,} lines read)" in err
    assert f"old.log.gz ({_lines_in(README):,} lines read)" in err
    assert "No findings" not in proc.stdout.decode()


def test_an_empty_journal_is_refused(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "journalctl").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "journalctl").chmod(0o755)
    proc = _run(["--journal"], env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert proc.returncode == 2
    assert "no Ollama log line recognised in journal:ollama (0 lines read)" in proc.stderr.decode()


def test_since_is_named_when_nothing_is_left() -> None:
    proc = _run(["-", "--since", "2030-01-01"], stdin=b"hello\n")
    assert proc.returncode == 2
    assert "recognised since 2030-01-01T00:00:00+00:00 in stdin (1 line read)" in proc.stderr.decode()


def test_a_log_without_findings_still_reports_no_findings(tmp_path: Path) -> None:
    """The refusal is for input that is not a log, not for a quiet server."""
    quiet = tmp_path / "server.log"
    quiet.write_text(gin(T, "127.0.0.1", "GET", "/api/tags") + "\n", encoding="utf-8")
    proc = _run([str(quiet), "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["findings"] == [] and report["summary"]["unrecognised_lines"] == 0
    # runner output alone is an Ollama log too (a server nobody has called yet)
    quiet.write_text("llama_model_loader: - kv   0: general.architecture str = llama\n", encoding="utf-8")
    assert _run([str(quiet), "--format", "json"]).returncode == 0


def _messy() -> tuple[list[bytes], int, int]:
    """Every kind of line, with the counts of unrecognised and blank lines it holds."""
    rnd = random.Random(3)
    lines: list[bytes] = []
    unrecognised = blank = 0
    slog = 'time=2024-08-19T14:00:01.123+02:00 level=INFO source=server.go:626 msg="llama runner started"'
    for i in range(3000):
        t = T + timedelta(seconds=i)
        r = rnd.random()
        if r < 0.55:
            lines.append(gin(t, "127.0.0.1" if r < 0.45 else "203.0.113.5", "POST", "/api/chat").encode())
        elif r < 0.62:
            lines.append(slog.encode())
        elif r < 0.66:
            lines.append(journald(slog, t, french=r < 0.64).encode())
        elif r < 0.69:
            lines.append(docker_t("llm_load_print_meta: model type       = 8B", t).encode())
        elif r < 0.72:
            lines.append(b"  Device 0: NVIDIA GeForce RTX 4090, compute capability 8.9, VMM: yes")
        elif r < 0.73:
            lines.append(b"2024/05/01 10:00:00 routes.go:1008: INFO server started\r")
        elif r < 0.74:  # Ollama lines that are events too (the fast scanner hands them over)
            lines.append(rnd.choice([
                b'time=2024-08-19T14:00:00.004Z level=INFO source=routes.go:1170 msg="Listening on '
                b'127.0.0.1:11434 (version 0.3.5)"',
                b'time=2025-01-11T23:31:41.120Z level=INFO source=upload.go:114 msg="uploading '
                b'ab704f5c7b61 in 8 100 MB part(s)"',
                b"time=2025-01-11T23:31:41.120Z level=WARN source=sched.go:1 msg=\"SIGTERM received\"",
            ]))
        elif r < 0.78:
            lines.append(b"")
            blank += 1
        elif r < 0.80:
            lines.append(b"\r")
            blank += 1
        elif r < 0.88:
            lines.append(rnd.choice(README.splitlines() or [b"x"]) or b"some text")
            unrecognised += 1
        elif r < 0.94:
            junk = rnd.randbytes(rnd.randint(1, 120)).replace(b"\n", b"\x00")
            lines.append(junk)
            unrecognised += 0 if junk in (b"\r",) else 1
        elif r < 0.96:
            lines.append(b"panic: runtime error: index out of range [3] with length 3")
            lines.append(b"")
            lines.append(b"goroutine 9 [running]:")  # the blank line above is part of the trace
            lines.append(gin(t, "127.0.0.1", "GET", "/api/ps").encode())  # which a request ends
        else:
            lines.append(b"[GIN] 2024/08/19 - 99:99 | broken")
            unrecognised += 1
    return lines, unrecognised, blank


def _stats(path: Path, *, fast: bool, workers: int = 1) -> dict[str, int]:
    analysis = analyze([file_source(str(path))], None, rules=load_rules(), classifier=ClientClassifier(),
                       tz=UTC, since=None, fast=fast, workers=workers)
    st = analysis.stats[path.name]
    return {"lines": st.lines, "recognised": st.recognised, "blank": st.blank,
            "unrecognised": st.unrecognised, "requests": st.requests, "malformed": st.malformed}


def test_fast_and_line_paths_count_the_same_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines, unrecognised, blank = _messy()
    path = tmp_path / "messy.log"
    path.write_bytes(b"\n".join(lines))  # no final newline: an open last line
    slow = _stats(path, fast=False)
    assert slow["lines"] == len(lines)
    assert slow["blank"] == blank
    assert slow["unrecognised"] == unrecognised
    assert _stats(path, fast=True) == slow
    monkeypatch.setattr(analyze_mod, "PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(analyze_mod, "PIECE_SIZE", 16 << 10)
    assert _stats(path, fast=True, workers=2) == slow


@pytest.mark.parametrize("kind", list(NOT_LOGS))
def test_both_paths_recognise_nothing_in_what_is_no_log(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "input"
    path.write_bytes(NOT_LOGS[kind])
    slow = _stats(path, fast=False)
    assert slow["recognised"] == 0
    assert _stats(path, fast=True) == slow


def test_the_line_shapes_ollama_writes() -> None:
    for line in [
        'time=2024-12-15T01:34:58.907+09:00 level=INFO source=memory.go:356 msg="offload to cuda"',
        "2024/05/01 10:00:00 routes.go:1008: INFO server config env=map[]",
        "llama_model_loader: - kv   0:                       general.architecture str              = llama",
        "print_info: EOG token        = 151643 '<|endoftext|>'",
        "load_tensors: layer   0 assigned to device CPU",
        "ggml_cuda_init: found 1 CUDA devices:",
        "  Device 0: Tesla P40, compute capability 6.1, VMM: no",
        "key clip.vision.image_grid_pinpoints not found in file",
        'INFO [wmain] build info | build=3871 commit="63424972" tid="27324" timestamp=1730607100',
        "[GIN-debug] [WARNING] Running in \"debug\" mode. Switch to \"release\" mode in production.",
        "Sep 04 13:11:56 FORGE ollama[1461072]: llama_model_loader: Dumping metadata keys/values.",
        "déc. 04 13:11:56 FORGE ollama[1461072]: llama_model_loader: Dumping metadata keys/values.",
        "2024-08-27T19:10:09.123456789Z time=2024-08-27T19:10:09.123Z level=WARN source=x.go:1 msg=y",
        "2024-08-27 19:10:09 llm_load_tensors: offloaded 33/33 layers to GPU",
    ]:
        assert is_ollama_line(line), line
        assert is_ollama_line_bytes(line.encode()), line
    for line in ["", "hello world", "time=yesterday level=INFO ", "I said load:", "<html>", "\x00\x01",
                 "[GIN] 2024/08/19 - 14:13:01 | 200 | 1ms | 127.0.0.1 | GET \"/\"",
                 "Sep 04 13:11:56 FORGE ollama[1]: hello"]:
        assert not is_ollama_line(line), line
        assert not is_ollama_line_bytes(line.encode()), line
    assert count_ollama_lines(b"llama_x: a\nnope\nllama_y: b\n") == 2


def test_partly_unrecognised_source_is_counted_in_the_report(tmp_path: Path) -> None:
    log = (LOGS / "recon.log").read_bytes()
    mixed = tmp_path / "server.log"
    mixed.write_bytes(log + b"some shell noise\n\xff\xfe\x00binary\n")
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a log\n")
    proc = _run([str(mixed), str(text), "--format", "json", "--fail-on", "never"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # stderr is not a terminal here: the report says it
    report = json.loads(proc.stdout)
    assert report["summary"]["unrecognised_lines"] == 3
    sources = report["stats"]["sources"]
    assert sources["server.log"]["unrecognised_lines"] == 2
    assert sources["notes.txt"]["unrecognised_lines"] == 1
    assert sources["notes.txt"]["recognised_lines"] == 0
    assert any("notes.txt: 1 of 1 lines are not Ollama log output" in n for n in report["notes"])
    md = _run([str(mixed), "--format", "markdown", "--fail-on", "never"]).stdout.decode()
    assert "| Unrecognised |" in md.replace("Unrecognised |", "Unrecognised |")


@pytest.mark.parametrize("quiet", [False, True])
def test_partly_unrecognised_source_is_said_on_a_terminal(tmp_path: Path, quiet: bool) -> None:
    import pty

    mixed = tmp_path / "server.log"
    mixed.write_bytes((LOGS / "recon.log").read_bytes() + b"some shell noise\n\xff\xfe\x00binary\n")
    lines = _lines_in(mixed.read_bytes())
    master, slave = pty.openpty()
    try:
        proc = _run([str(mixed), "--format", "json", "--fail-on", "never", *(["-q"] if quiet else [])],
                    stderr=slave)
        os.close(slave)
        err = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0
    text = err.decode()
    note = f"server.log: 2 lines of {lines:,} ({200 / lines:.1f} %) are not Ollama log output"
    assert (note in text) != quiet, text
