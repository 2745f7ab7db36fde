"""`ollama-guard rules export`: Sigma rule collections that pySigma loads without errors and that the
Splunk and Elasticsearch backends convert; the native JSON export round-trips through our rule model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollama_guard.investigate.rules import Rule, load_rules
from support.cli import run_cli

sigma = pytest.importorskip("sigma")
from sigma.backends.elasticsearch import ESQLBackend, LuceneBackend  # noqa: E402
from sigma.backends.splunk import SplunkBackend  # noqa: E402
from sigma.collection import SigmaCollection  # noqa: E402
from sigma.correlations import SigmaCorrelationRule  # noqa: E402
from sigma.rule import SigmaRule  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sigma")
    from ollama_guard.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["rules", "export", "--format", "sigma", "-o", str(out)])
    assert exited.value.code == 0
    return out


def _collection(path: Path) -> SigmaCollection:
    collection = SigmaCollection.from_yaml(path.read_text(encoding="utf-8"), collect_errors=True)
    collection.resolve_rule_references()
    errors = [e for rule in collection.rules for e in rule.errors]
    assert not errors, f"{path.name}: {errors}"
    return collection


def test_one_file_per_detection_loads_cleanly(exported: Path) -> None:
    rules = {r.id: r for r in load_rules()}
    assert sorted(p.stem for p in exported.glob("*.yml")) == sorted(rules)
    for path in exported.glob("*.yml"):
        rule = rules[path.stem]
        collection = _collection(path)
        levels = {str(r.level.name).lower() for r in collection.rules if r.level is not None}
        expected = "informational" if rule.severity.value == "info" else rule.severity.value
        assert levels == {expected}
        for item in collection.rules:
            assert {f"attack.{t.lower()}" for t in rule.attack} == {str(t) for t in item.tags}
        products = {r.logsource.product for r in collection.rules if isinstance(r, SigmaRule)}
        if rule.select.bind:  # about Ollama's own bind: its access log only
            assert products == {"ollama"}
        elif "request" in rule.select.kind:
            assert products == {"ollama", "ollama-guard"}
        else:
            assert products == {"ollama"}


def test_correlations_are_exported_except_spikes(exported: Path) -> None:
    for rule in load_rules():
        collection = _collection(exported / f"{rule.id}.yml")
        correlations = [r for r in collection.rules if isinstance(r, SigmaCorrelationRule)]
        expected = [c for c in rule.correlate if c.type not in ("spike", "sum")]
        assert len(correlations) == (1 if rule.select.bind else 2) * len(expected)  # gin and audit
        for corr in correlations:
            assert [str(g) for g in corr.group_by] == ["c-ip"]


@pytest.mark.parametrize("backend_class", [SplunkBackend, LuceneBackend, ESQLBackend])
def test_backends_convert_every_rule(exported: Path, backend_class: type) -> None:
    backend = backend_class()
    for path in sorted(exported.glob("*.yml")):
        collection = _collection(path)
        if backend_class is LuceneBackend:  # Lucene has no correlations: the plain rules only
            plain = [r for r in collection.rules if isinstance(r, SigmaRule) and not r.name]
            if not plain:
                continue
            collection = SigmaCollection(plain)
        queries = backend.convert(collection)
        assert queries and all(isinstance(q, str) and q for q in queries), path.name


def test_splunk_queries_say_what_the_rules_say(exported: Path) -> None:
    backend = SplunkBackend()
    deleted = backend.convert(_collection(exported / "model-deleted.yml"))[0]
    assert '"cs-method"="DELETE"' in deleted and '"cs-uri-stem"="/api/delete"' in deleted
    assert "^[2][0-9][0-9]$" in deleted
    recon = "\n".join(backend.convert(_collection(exported / "recon-burst.yml")))
    assert 'dc("cs-uri-stem")' in recon and 'by _time "c-ip"' in recon  # value_count per client
    chain = "\n".join(backend.convert(_collection(exported / "exfiltration-chain.yml")))
    assert "/api/push" in chain and "/api/create" in chain
    crash = "\n".join(backend.convert(_collection(exported / "server-crash.yml")))
    assert "panic: " in crash


def test_json_export_round_trips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "rules", "export", "--format", "json", "-o", str(tmp_path))
    assert code == 0 and f"wrote {len(load_rules())} json" in err
    for rule in load_rules():
        again = Rule.model_validate(json.loads((tmp_path / f"{rule.id}.json").read_text()))
        assert again.model_dump() == rule.model_dump()


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "rules", "export", "--format", "sigma", "-o", str(blocker / "sub"))
    assert code == 2 and err.strip().count("\n") == 0 and "cannot create" in err
    code, _, err = run_cli(capsys, "rules", "export", "--format", "yara", "-o", str(tmp_path))
    assert code == 2
