"""The rule engine and the fast scanner: same answers as the line-by-line path, bounded state, rules data,
and the gateway audit log as a source."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ollama_guard.cli import cli
from ollama_guard.investigate import analyze as analyze_mod
from ollama_guard.investigate import fastscan
from ollama_guard.investigate.analyze import analyze
from ollama_guard.investigate.engine import Engine
from ollama_guard.investigate.events import REQUEST, ClientClassifier, Event
from ollama_guard.investigate.parse import LineParser
from ollama_guard.investigate.report import build_report
from ollama_guard.investigate.rules import load_rules
from ollama_guard.investigate.sources import file_source
from test_investigate_gen import gin, mixed_log

T = datetime(2024, 8, 19, 14, 0, 0)


def report_for(
    path: Path,
    *,
    fast: bool,
    workers: int = 1,
    since: datetime | None = None,
    trusted: list[str] | None = None,
) -> dict:
    analysis = analyze(
        [file_source(str(path))],
        None,
        rules=load_rules(),
        classifier=ClientClassifier(trusted),
        tz=UTC,
        since=since,
        fast=fast,
        workers=workers,
    )
    assert analysis.fast == fast
    report = build_report(
        analysis, sources=[path.name], tz_label="UTC", since=since, started_at=datetime.now(UTC)
    )
    data = json.loads(report.model_dump_json())
    for key in ("started_at", "finished_at"):
        data.pop(key)
    data["data"]["stats"].pop("fast_path")
    return data


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "mixed.log"
    path.write_text("\n".join(mixed_log(12_000)) + "\n", encoding="utf-8")
    return path


def test_fast_path_gives_the_same_report(mixed: Path) -> None:
    slow = report_for(mixed, fast=False)
    fast = report_for(mixed, fast=True)
    assert fast == slow
    rules = {f["rule"] for f in slow["findings"]}
    assert {"exposed-bind", "cors-any-origin", "model-deleted", "server-crash", "admin-from-remote"} <= rules
    assert slow["summary"]["malformed_lines"] > 0


def test_parallel_pieces_give_the_same_report(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze_mod, "PARALLEL_MIN_SIZE", 1)
    monkeypatch.setattr(analyze_mod, "PIECE_SIZE", 64 << 10)
    assert len(analyze_mod._pieces(str(mixed), mixed.stat().st_size)) > 5
    assert report_for(mixed, fast=True, workers=2) == report_for(mixed, fast=False)


def test_fast_path_with_since_and_trusted(mixed: Path) -> None:
    since = T + timedelta(hours=3)
    assert report_for(mixed, fast=True, since=since) == report_for(mixed, fast=False, since=since)
    nets = ["203.0.113.0/28"]
    assert report_for(mixed, fast=True, trusted=nets) == report_for(mixed, fast=False, trusted=nets)


def test_column_checks_in_runs_give_the_same_report(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scanner checks gin columns a run of lines at a time (owners first seen in different runs,
    --since cut-offs inside a run) and splits the lines it hands on in its own process: no difference."""
    monkeypatch.setattr(fastscan.scan, "GIN_RUN", 97)
    nets = ["203.0.113.0/28"]
    assert report_for(mixed, fast=True, trusted=nets) == report_for(mixed, fast=False, trusted=nets)
    since = T + timedelta(hours=3)
    assert report_for(mixed, fast=True, since=since) == report_for(mixed, fast=False, since=since)
    classifier = ClientClassifier(nets)
    config = fastscan.FastConfig(
        analyze_mod.FAST_ENDPOINTS, classifier.classify, analyze_mod.quiet_predicate(load_rules(), classifier)
    )
    result = fastscan.scan_block(mixed.read_bytes(), config)
    split = [s for s in result.slow if s.request is not None]
    assert split
    for slow in split:  # the scanner's split of a line is the parser's
        event = LineParser("mixed.log", UTC).parse(slow.text, 1)
        assert event is not None and slow.request is not None
        _, fields = slow.request
        assert (event.raw, event.client, event.method, event.path, event.query, event.status,
                event.latency) == (slow.request[0], *fields[3:6], fields[6], fields[1], fields[2])
    assert len(result.counts) >= 2  # loopback and a trusted client, counted across runs


def test_fast_path_leaves_rule_relevant_owner_lines_to_the_parser() -> None:
    t = T
    lines = [gin(t + timedelta(seconds=i), "127.0.0.1", "GET", "/api/tags", 401) for i in range(12)]
    lines += [
        gin(t, "127.0.0.1", "POST", "/api/chat", 200),
        gin(t, "127.0.0.1", "DELETE", "/api/delete", 200),
        gin(t, "::1", "GET", "/api/ps", 200),
        gin(t, "203.0.113.9", "GET", "/api/ps", 200),
    ]
    data = ("\n".join(lines) + "\n").encode()
    classifier = ClientClassifier()
    config = fastscan.FastConfig(
        analyze_mod.FAST_ENDPOINTS, classifier.classify, analyze_mod.quiet_predicate(load_rules(), classifier)
    )
    result = fastscan.scan_block(data, config)
    assert result.lines == len(lines)
    assert result.counts == {
        "127.0.0.1": {("POST", "/api/chat", 200): 1},
        "::1": {("GET", "/api/ps", 200): 1},
    }
    slow_texts = [s.text for s in result.slow]
    assert sum("401" in s for s in slow_texts) == 12  # auth-failure-burst can fire on owner 401s
    assert any("/api/delete" in s for s in slow_texts)
    assert any("203.0.113.9" in s for s in slow_texts)


def test_state_is_bounded_per_client() -> None:
    engine = Engine(load_rules(), ClientClassifier())
    for i in range(20_000):
        engine.feed(
            Event(
                REQUEST,
                T + timedelta(milliseconds=100 * i),
                "x",
                i,
                "raw",
                client="203.0.113.5",
                method="GET",
                path=f"/api/tags{'' if i % 2 else '/'}x{i}",
                status=404,
            )
        )
        engine.feed(
            Event(
                REQUEST,
                T + timedelta(milliseconds=100 * i),
                "x",
                i,
                "raw",
                client="203.0.113.6",
                method="POST",
                path="/api/generate",
                status=200,
                latency=30.0,
            )
        )
    assert len(engine.tallies) == 2
    for state in engine._states.values():
        size = len(getattr(state, "events", getattr(state, "values", getattr(state, "buckets", []))))
        assert size <= 4096
    tally = engine.tallies["203.0.113.5"]
    assert tally.requests == 20_000
    assert len(tally.endpoints) <= 41
    for acc in engine.accumulators.values():
        assert len(acc.samples) <= 5 and len(acc.windows) <= 5


def test_rules_data_is_complete() -> None:
    rules = load_rules()
    ids = [r.id for r in rules]
    assert len(ids) == len(set(ids))
    contract = {
        "exposed-bind",
        "cors-any-origin",
        "recon-burst",
        "admin-from-remote",
        "model-deleted",
        "exfiltration-chain",
        "compute-abuse",
        "server-crash",
    }
    assert contract <= set(ids)
    for rule in rules:
        assert rule.title and rule.description and rule.remediation
        for technique in rule.attack:
            assert re.fullmatch(r"T\d{4}(\.\d{3})?", technique), technique
    assert all(r.attack for r in rules if r.id in contract)


def test_audit_db_source(tmp_path: Path) -> None:
    from ollama_guard.gateway.audit import AuditRecord
    from ollama_guard.gateway.db import create_engine_for, init_schema
    from support.audit import store_records

    url = f"sqlite:///{tmp_path / 'guard.db'}"
    base = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    records = [  # the gateway records a flood of refusals as the first one, then one row with the count
        AuditRecord(time=base, client="203.0.113.9", method="GET", path="/api/tags", status=401,
                    decision="deny", reason="no key"),
        AuditRecord(time=base + timedelta(seconds=1), client="203.0.113.9", method="GET", path="/api/tags",
                    status=401, decision="deny", reason="no key", count=11),
    ]
    records.append(
        AuditRecord(
            time=base + timedelta(minutes=5),
            key_id="k1",
            key_name="ci",
            client="198.51.100.4",
            method="DELETE",
            path="/api/delete",
            model="llama3:latest",
            status=200,
            decision="allow",
            reason="ok",
        )
    )

    async def fill() -> None:
        engine = create_engine_for(url)
        await init_schema(engine)
        await store_records(engine, b"s" * 48, records)
        await engine.dispose()

    asyncio.run(fill())
    result = CliRunner().invoke(
        cli, ["investigate", "--audit-db", url, "--format", "json", "--fail-on", "never"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rules = {(f["rule"], f["target"]): f for f in report["findings"]}
    assert ("auth-failure-burst", "203.0.113.9") in rules
    deleted = rules[("model-deleted", "198.51.100.4")]
    assert deleted["evidence"]["models"] == {"llama3:latest": 1}
    assert report["affected_models"]["llama3:latest"] == ["admin-from-remote", "model-deleted"]
    assert report["stats"]["sources"]["audit-db"]["requests"] == 13
    missing = CliRunner().invoke(cli, ["investigate", "--audit-db", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert missing.exception is not None and "does not exist" in str(missing.exception)


def test_fast_path_with_mixed_prefixes_and_crlf(tmp_path: Path) -> None:
    """A journald log whose prefix length changes (new PID after a restart, another host name), some
    CRLF endings and plain lines: the fast path must still agree with the parser."""
    lines = []
    for i in range(3000):
        t = T + timedelta(seconds=i)
        line = gin(
            t,
            "127.0.0.1" if i % 7 else "203.0.113.9",
            "POST" if i % 3 else "GET",
            "/api/chat" if i % 3 else "/api/tags",
            200 if i % 11 else 404,
            "1.2ms",
        )
        if i % 5 == 0:
            line = f"Aug 19 {t:%H:%M:%S} gpu-box ollama[1232]: {line}"
        elif i % 5 == 1:
            line = f"Aug 19 {t:%H:%M:%S} gpu-box-2 ollama[987654]: {line}"
        elif i % 5 == 2:
            line += "\r"
        lines.append(line)
    lines.insert(1500, "panic: boom")
    path = tmp_path / "mixed-prefix.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    fast = report_for(path, fast=True)
    assert fast == report_for(path, fast=False)
    assert fast["summary"]["requests"] == 3000
    assert {"server-crash", "compute-abuse"} <= {f["rule"] for f in fast["findings"]}


def test_state_of_clients_gone_quiet_is_forgotten() -> None:
    """Many one-off scanners: correlation state is swept once its window has passed; the timeline
    still counts every client."""
    engine = Engine(load_rules(), ClientClassifier())
    for i in range(50_000):
        engine.feed(
            Event(
                REQUEST,
                T + timedelta(seconds=i),
                "x",
                i,
                "raw",
                client=f"203.0.{i // 250}.{i % 250}",
                method="GET",
                path="/api/tags",
                status=200,
            )
        )
    assert len(engine.tallies) == 50_000
    assert len(engine._states) < 25_000  # two correlations per client, only recent clients kept
    # a client that comes back after a long pause starts a fresh window and can still trigger
    for k, path in enumerate(["/", "/api/version", "/api/ps"]):
        engine.feed(
            Event(
                REQUEST,
                T + timedelta(seconds=60_000 + k),
                "x",
                1,
                "raw",
                client="203.0.0.1",
                method="GET",
                path=path,
                status=200,
            )
        )
    assert ("recon-burst", "203.0.0.1") in engine.accumulators
