"""Shapes of real Ollama logs users pasted in public issues (tests/data/logs/real/SOURCES.md): each is
read the way its author's system wrote it, on both scan paths (the fast scanner and the plain parser)."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

REAL = Path(__file__).parent / "data" / "logs" / "real"


def report_for(name: str, *, fast: bool) -> dict[str, Any]:
    """`investigate --format json` on one file, with or without the fast scanner."""
    import ollama_guard.investigate.fastscan as fastscan
    from ollama_guard.cli import main

    saved = fastscan.available
    if not fast:
        fastscan.available = lambda: False  # type: ignore[assignment]
    try:
        with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
            main(["investigate", str(REAL / name), "--format", "json", "--fail-on", "never"])
    finally:
        fastscan.available = saved  # type: ignore[assignment]
    report: dict[str, Any] = json.loads(out.getvalue())
    assert report["stats"]["fast_path"] is fast
    return report


def findings(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        out.setdefault(f["rule"], []).append(f)
    return out


@pytest.fixture(params=[True, False], ids=["fast", "parser"])
def fast(request: pytest.FixtureRequest) -> bool:
    return request.param


def test_every_file_has_a_source(fast: bool) -> None:
    listed = (REAL / "SOURCES.md").read_text(encoding="utf-8")
    for path in REAL.glob("*.log"):
        assert f"`{path.name}`" in listed


def test_tunnel_exposure_loopback_bind_with_public_clients(fast: bool) -> None:
    found = findings(report_for("journald_cjk_month_loopback.log", fast=fast))
    tunnel = {f["target"]: f for f in found["tunnel-exposure"]}
    assert set(tunnel) == {"203.0.113.61", "198.51.100.14"}  # never the loopback client
    assert all(f["severity"] == "high" for f in tunnel.values())
    assert "exposed-bind" not in found
    # Chinese month prefix read, Go-log config line in local time, gin at +08:00 (from the slog lines)
    assert tunnel["203.0.113.61"]["evidence"]["first_seen"] == "2025-01-10T14:09:14Z"


def test_lan_clients_of_an_exposed_server_are_not_a_tunnel(fast: bool) -> None:
    found = findings(report_for("journald_nohost_wrapped_config.log", fast=fast))
    assert "tunnel-exposure" not in found


def test_wrapped_server_config_line_is_joined_and_still_exposes(fast: bool) -> None:
    report = report_for("journald_nohost_wrapped_config.log", fast=fast)
    (bind,) = findings(report)["exposed-bind"]
    settings = bind["evidence"]["settings"]
    assert settings["OLLAMA_HOST"] == "http://0.0.0.0:11434"
    assert settings["OLLAMA_ORIGINS"].endswith("vscode-webview://* vscode-file://*]")  # rejoined at the wrap
    configs = report["stats"]["server_configs"]
    assert configs[0]["incomplete"] is True and "OLLAMA_ORIGINS" in configs[0]["missing"]
    assert configs[1]["joined_lines"] == [2, 3] and configs[1]["incomplete"] is False


def test_cut_server_config_line_says_what_is_missing(tmp_path: Path) -> None:
    from ollama_guard.investigate.parse import LineParser

    parser = LineParser("cut.log", UTC)
    line = ('time=2025-09-24T08:27:48.098+03:00 level=INFO source=routes.go:1331 msg="server config" '
            'env="map[OLLAMA_DEBUG:false OLLAMA_FLASH_ATTENTION:false OLLAMA_GPU_OV')
    event = parser.parse(line, 1)
    assert event is not None and event.detail["incomplete"] is True
    assert event.detail["missing"] == ["OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLAMA_DEBUG_LOG_REQUESTS"]
    assert event.detail["facts"]["exposed_bind"] is False
    assert parser.bind == ""  # the bind is unknown, not assumed to be loopback
    assert parser.stats.notes and "not known: OLLAMA_HOST" in parser.stats.notes[0]
    assert parser.parse("[GIN] 2025/09/24 - 08:30:02 | 200 |  1ms |  192.0.2.1 | GET  \"/\"", 2) is not None


def test_time_zone_from_slog_lines_also_before_the_first_one(fast: bool) -> None:
    report = report_for("journald_cjk_gin_lan.log", fast=fast)
    stats = report["stats"]
    assert stats["time_range"]["first"] == "2024-05-06T22:59:38Z"  # 06:59:38 at +08:00
    assert stats["time_range"]["last"] == "2024-05-06T23:00:31Z"


def test_explicit_non_utc_zone_is_kept(tmp_path: Path) -> None:
    from datetime import timedelta, timezone

    from ollama_guard.investigate.parse import LineParser

    parser = LineParser("x", timezone(timedelta(hours=2)), zone_hint=timezone(timedelta(hours=8)))
    parser.parse('time=2024-05-07T07:00:15.526+08:00 level=INFO source=gpu.go:96 msg="x"', 1)
    event = parser.parse('[GIN] 2024/05/07 - 07:00:31 | 200 | 1s | 192.0.2.5 | POST     "/api/chat"', 2)
    assert event is not None and event.time is not None
    assert event.time.utcoffset() == timedelta(hours=2)


def test_crash_loop_counts_each_crash(fast: bool) -> None:
    (crash,) = findings(report_for("journald_crash_loop.log", fast=fast))["server-crash"]
    assert crash["evidence"]["count"] == 3


def test_headerless_rsyslog_crash_dump_with_method_frames(fast: bool) -> None:
    (crash,) = findings(report_for("rsyslog_headerless_crash.log", fast=fast))["server-crash"]
    assert crash["evidence"]["count"] == 1  # the systemd exit line is the same crash
    if not fast:  # the fast path hands the parser the crash lines, not every frame
        frames = crash["evidence"]["crashes"][0]["frames"]
        assert frames[0] == "github.com/ollama/ollama/llm.(*llmServer).Completion (server.go:812)"


def test_frames_indented_with_spaces_and_with_nothing(fast: bool) -> None:
    (crash,) = findings(report_for("journald_panic_method_frames.log", fast=fast))["server-crash"]
    assert crash["evidence"]["crashes"][0]["message"] == "panic: failed to sample token"
    if not fast:
        assert crash["evidence"]["crashes"][0]["frames"] == [
            "github.com/ollama/ollama/runner/ollamarunner.(*Server).computeBatch (runner.go:734)"]
        (docker,) = findings(report_for("docker_desktop_frames.log", fast=False))["server-crash"]
        assert docker["evidence"]["crashes"][0]["frames"][1] == (
            "github.com/ollama/ollama/runner/llamarunner.(*Server).processBatch (runner.go:435)")


def test_french_month_names(fast: bool) -> None:
    found = findings(report_for("journald_french_month_gin.log", fast=fast))
    assert [f["target"] for f in found["recon-burst"]] == ["203.0.113.90"]
    assert found["server-crash"][0]["evidence"]["crashes"][0]["message"].startswith("panic: runtime error")
    assert found["recon-burst"][0]["evidence"]["first_seen"] == "2025-01-20T22:15:37Z"  # +01:00


@pytest.mark.parametrize("line", [
    "Sep 24 08:27:48 ollama[1940]: panic: x",
    "1月 10 22:07:10 ws-7 ollama[40997]: panic: x",
    " 9月 10 22:07:10 ws-7 ollama[40997]: panic: x",
    "11월 10 22:07:10 ws-7 ollama[40997]: panic: x",
    "janv. 20 23:15:37 nas ollama[1232]: panic: x",
    "Mär  3 23:15:37 nas ollama[1232]: panic: x",
])
def test_journald_prefixes(line: str) -> None:
    from ollama_guard.ollama.logformat import split_prefix
    from ollama_guard.ollama.loglines import is_ollama_line

    assert split_prefix(line)[0] == "panic: x"
    assert is_ollama_line(line.replace("panic: x", "time=2024-01-01T00:00:00Z level=INFO msg=x"))


def test_zone_inferred_mid_stream_without_a_hint() -> None:
    """watch and stdin have no file head to look at: the first slog line sets the zone from there on."""
    from datetime import timedelta

    from ollama_guard.investigate.parse import LineParser

    parser = LineParser("stdin", UTC)
    early = parser.parse('[GIN] 2024/05/07 - 07:00:00 | 200 | 1ms | 192.0.2.5 | GET      "/"', 1)
    parser.parse('time=2024-05-07T07:00:15.526+08:00 level=INFO source=gpu.go:96 msg="x"', 2)
    late = parser.parse('[GIN] 2024/05/07 - 07:00:31 | 200 | 1s | 192.0.2.5 | POST     "/api/chat"', 3)
    assert early is not None and early.time is not None and early.time.utcoffset() == timedelta(0)
    assert late is not None and late.time is not None and late.time.utcoffset() == timedelta(hours=8)


def test_the_bind_is_part_of_what_a_request_matches() -> None:
    """Same client, route and status before and after the server is seen bound to loopback: only the
    requests after it are a tunnel (the engine's per-shape match cache must tell them apart)."""
    from datetime import datetime

    from ollama_guard.investigate.engine import Engine
    from ollama_guard.investigate.events import REQUEST, ClientClassifier, Event
    from ollama_guard.investigate.rules import load_rules

    engine = Engine(load_rules(), ClientClassifier([]))
    t = datetime(2025, 1, 1, tzinfo=UTC)
    tags = {"method": "GET", "path": "/api/tags", "status": 200}
    engine.feed(Event(REQUEST, t, "s", 1, "r", client="203.0.113.5", **tags))
    assert ("tunnel-exposure", "203.0.113.5") not in engine.accumulators
    engine.feed(Event(REQUEST, t, "s", 2, "r", client="203.0.113.5", bind="loopback", **tags))
    assert engine.accumulators[("tunnel-exposure", "203.0.113.5")].matches == 1
    engine.feed(Event(REQUEST, t, "s", 3, "r", client="203.0.113.6", bind="exposed", **tags))
    assert ("tunnel-exposure", "203.0.113.6") not in engine.accumulators
