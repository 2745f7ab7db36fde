"""What a person sees in a real terminal (a pseudo-terminal of the size given): progress bars on long jobs,
-q and --no-color, the closing line, and the table at 80 columns (wrapped, never cropped)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from ollama_guard.decoy.fabricate import fabricate, install
from ollama_guard.ollama.names import parse_model_name
from ollama_guard.ollama.store import ModelStore

DATA = Path(__file__).parent / "data"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
# SGR sequences that set a colour (foreground 30-39/90-97, background 40-49/100-107, 256/true colour)
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9]+)*m")


def run_in_terminal(
    *args: str, cwd: Path, columns: int = 100, rows: int = 40, env: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, str]:
    """`ollama-guard ARGS` with stdin, stdout and stderr on a new pseudo-terminal; (exit code, raw output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    unset = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES")
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update({"TERM": "xterm-256color", **(env or {})})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ollama_guard", *args],
        stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=full_env, start_new_session=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every holder of the terminal's other side is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"ollama-guard {' '.join(args)} did not finish in {timeout}s")
    finally:
        os.close(master)
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def screen_text(raw: str) -> str:
    return ANSI.sub("", raw)


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A server log long enough to be read in several blocks: the owner's traffic, then an attack."""
    path = tmp_path_factory.mktemp("biglog") / "server.log"
    # gin's own column widths (%3d | %13v | %15s | %-7s), as Ollama writes them
    owner = (
        "[GIN] 2025/01/11 - 10:{m:02d}:{s:02d} | 200 |  1.204873923s |       127.0.0.1 | "
        'POST     "/api/chat"\n'
    )
    with path.open("w") as handle:
        handle.write((DATA / "logs" / "exfil.log").read_text().splitlines(keepends=True)[0])
        for i in range(300_000):
            handle.write(owner.format(m=(i // 60) % 60, s=i % 60))
        handle.write((DATA / "logs" / "exfil.log").read_text())
    return path


def test_investigate_shows_progress_on_a_terminal(big_log: Path, tmp_path: Path) -> None:
    code, raw = run_in_terminal("investigate", str(big_log), "-o", "incident.json", cwd=tmp_path)
    text = screen_text(raw)
    assert code == 1, text
    assert "reading server.log" in text, text
    counts = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) lines", text)]
    assert counts and max(counts) > 100_000, text  # the bar counted the lines read
    assert "\x1b[?25l" in raw  # rich hid the cursor while drawing the live bar
    # the closing line: what was written where, with the count by severity
    assert re.search(r"wrote incident\.json: 1 critical, \d+ high", text), text
    assert (tmp_path / "incident.json").stat().st_mode & 0o777 == 0o600


def test_quiet_draws_no_progress_and_no_closing_line(big_log: Path, tmp_path: Path) -> None:
    code, raw = run_in_terminal("investigate", str(big_log), "-o", "incident.json", "-q", cwd=tmp_path)
    assert code == 1
    assert screen_text(raw).strip() == "", raw
    assert (tmp_path / "incident.json").exists()


def test_verify_shows_hashing_progress_in_bytes(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.ensure()
    install(store, fabricate(parse_model_name("llama3.2:1b")))
    big = tmp_path / "models" / "blobs" / ("sha256-" + "0" * 64)
    big.write_bytes(b"\0" * (48 << 20))  # an unreferenced (and misnamed) 48 MiB blob: hashed all the same
    code, raw = run_in_terminal("verify", "--models-dir", str(tmp_path / "models"), "-o", "v.json",
                                cwd=tmp_path, env={"OLLAMA_GUARD_HOME": str(tmp_path / "home")})
    text = screen_text(raw)
    assert code == 1, text  # the misnamed blob is a digest mismatch
    assert "Hashing blobs" in text and "MiB" in text, text
    assert "wrote v.json: 1 critical" in text


def test_scan_shows_progress_over_its_targets(tmp_path: Path) -> None:
    code, raw = run_in_terminal("scan", "127.0.99.1", "--ports", "41000-41499", "--timeout", "1",
                                "-o", "scan.json", "--fail-on", "never", cwd=tmp_path)
    text = screen_text(raw)
    assert code == 0, text
    assert "scanning" in text and "/500" in text, text
    assert "wrote scan.json:" in text


def test_no_color_removes_colour_from_the_table_and_the_bars(big_log: Path, tmp_path: Path) -> None:
    _, coloured = run_in_terminal("investigate", str(big_log), cwd=tmp_path, columns=120)
    assert COLOUR.search(coloured), "the coloured run shows no colour: the test could not fail"
    code, plain = run_in_terminal("investigate", str(big_log), "--no-color", cwd=tmp_path, columns=120)
    assert code == 1
    assert "reading server.log" in screen_text(plain)  # the bar is still drawn, without colour
    assert "CRITICAL" in screen_text(plain)
    assert not COLOUR.search(plain), COLOUR.findall(plain)[:5]


def test_the_table_wraps_on_an_80_column_terminal(tmp_path: Path) -> None:
    logs = [str(DATA / "logs" / name) for name in ("exfil.log", "recon.log", "crash_cve_2025_1975.log")]
    code, raw = run_in_terminal("investigate", *logs, cwd=tmp_path, columns=80)
    text = screen_text(raw)
    assert code == 1, text
    text = text[text.index("╭") :]  # the report (the progress frames before it are erased on screen)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    # nothing is cropped: every word of every title, every rule id and every (short) reference is there
    doc = json.loads(subprocess.run([sys.executable, "-m", "ollama_guard", "investigate", *logs, "--format",
                                     "json"], capture_output=True, text=True, check=False).stdout)
    words = set(text.split())
    for finding in doc["findings"]:
        assert finding["rule"] in words, finding["rule"]
        assert set(finding["title"].split()) <= words, finding["title"]
        for reference in finding["references"]:
            if len(reference) < 76:
                assert reference in words, reference
    assert "CRITICAL" in words and "HIGH" in words  # severity badges whole ("CRITI CAL" before)
    for address in ("198.51.100.23", "203.0.113.7"):
        assert address in text, address  # never split
    summary = text[: text.index("findings") + 2000]
    for raw_value in ("False", "True", "[]", "{'", '{"'):
        assert raw_value not in summary, raw_value
    assert "`" not in text  # backticks are markup, shown plain


def test_advisories_table_is_never_cropped_on_80_columns(tmp_path: Path) -> None:
    code, raw = run_in_terminal("advisories", "--version", "0.1.33", cwd=tmp_path, columns=80)
    text = screen_text(raw)
    assert code == 0, text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    argv = [sys.executable, "-m", "ollama_guard", "advisories", "--version", "0.1.33", "--format", "json"]
    doc = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
    words = set(text.split())
    for advisory in doc:
        assert advisory["id"] in words
        assert set(advisory["title"].split()) <= words, advisory["title"]  # every word of every title


def test_global_no_color_reaches_every_command(tmp_path: Path) -> None:
    _, coloured = run_in_terminal("advisories", "--version", "0.1.33", cwd=tmp_path, columns=140)
    assert COLOUR.search(coloured), "the coloured run shows no colour: the test could not fail"
    code, plain = run_in_terminal("--no-color", "advisories", "--version", "0.1.33", cwd=tmp_path,
                                  columns=140)
    assert code == 0 and "CVE-2024-37032" in plain
    assert not COLOUR.search(plain), COLOUR.findall(plain)[:5]
