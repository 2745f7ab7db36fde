"""The investigate rules name endpoint classes of the route catalog (``ollama_guard.ollama.endpoints``)
instead of copying its paths: the selectors resolve to exactly the catalog's routes of their classes,
and a route added to the catalog is detected without touching ``rules.json``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ollama_guard.investigate.analyze import analyze
from ollama_guard.investigate.events import REQUEST, ClientClassifier, Event
from ollama_guard.investigate.report import build_report
from ollama_guard.investigate.rules import RuleSet, Select, load_rules, path_pattern
from ollama_guard.investigate.sources import file_source
from ollama_guard.ollama import endpoints as catalog
from test_investigate_gen import gin

T = datetime(2024, 8, 19, 14, 0, 0)
REMOTE = "203.0.113.77"
SAMPLE_PARAMS = {"digest": "sha256:" + "ab" * 32, "model": "llama3", "key": "c3NoLWVkMjU1MTk"}


def _concrete(template: str) -> str:
    """A real request path for a catalog template (``{digest}`` → a digest, …)."""
    parts = []
    for segment in template.split("/"):
        if segment.startswith("{") and segment.endswith("}"):
            parts.append(SAMPLE_PARAMS.get(segment[1:-1], "x"))
        else:
            parts.append(segment)
    return "/".join(parts)


def _expected(classes: list[str], excluded: list[str] | None) -> set[tuple[str, str]]:
    """The catalog's routes (removed ones included) with any of ``classes`` and none of ``excluded``,
    computed from the catalog's own accessors."""

    def routes_of(cls: str) -> set[tuple[str, str]]:
        if cls == "read-only":
            return {(e.method, e.path) for e in catalog.ENDPOINTS if e.is_read_only}
        return {(e.method, e.path) for e in catalog.endpoints_with(cls, include_removed=True)}

    chosen = set().union(*(routes_of(c) for c in classes))
    for cls in excluded or ():
        chosen -= routes_of(cls)
    return chosen


def _class_selectors() -> list[tuple[str, Any]]:
    """Every place in the shipped rules that names endpoint classes (select, adjust, preceded_by,
    sequence steps)."""
    found = []
    for rule in load_rules():
        places = [("select", rule.select)]
        places += [(f"adjust[{i}]", a.when) for i, a in enumerate(rule.adjust)]
        if rule.preceded_by is not None:
            places.append(("preceded_by", rule.preceded_by.select))
        for ci, corr in enumerate(rule.correlate):
            places += [(f"correlate[{ci}].steps[{si}]", s) for si, s in enumerate(corr.steps)]
        found += [(f"{rule.id}.{where}", sel) for where, sel in places if sel.endpoint_class is not None]
    return found


@pytest.fixture
def fresh_rules() -> Iterator[None]:
    """Rules reloaded (resolved against the catalog as it is now) for the test, and again after it."""
    load_rules.cache_clear()
    yield
    load_rules.cache_clear()


def test_rule_groups_of_endpoints_are_catalog_classes() -> None:
    """The rules whose lists meant "every route of class X" name the class, not paths."""
    by_id = {rule.id: rule for rule in load_rules()}
    assert by_id["admin-from-remote"].select.endpoint_class == ["admin"]
    assert by_id["cloud-account-abuse"].select.endpoint_class == ["account"]
    for rule_id in ("compute-abuse", "model-not-found-probing"):
        select = by_id[rule_id].select
        assert (select.endpoint_class, select.not_endpoint_class) == (["compute"], ["admin"])
    for rule_id in ("admin-from-remote", "cloud-account-abuse", "compute-abuse", "model-not-found-probing"):
        assert (by_id[rule_id].select.path, by_id[rule_id].select.method) == (None, None), rule_id
    # specific routes stay literal
    assert (by_id["model-deleted"].select.method, by_id["model-deleted"].select.path) == (
        ["DELETE"],
        ["/api/delete"],
    )


def test_every_class_selector_resolves_to_the_catalogs_routes_of_its_class() -> None:
    selectors = _class_selectors()
    assert {name.split(".")[0] for name, _ in selectors} >= {
        "admin-from-remote",
        "cloud-account-abuse",
        "compute-abuse",
        "model-not-found-probing",
    }
    for name, select in selectors:
        expected = _expected(select.endpoint_class, select.not_endpoint_class)
        assert expected, name
        assert select.routes is not None
        assert set(select.routes.templates) == expected, name
        # removed routes are included: old servers' logs contain them
        removed = {(e.method, e.path) for e in catalog.ENDPOINTS if e.removed} & expected
        assert removed <= set(select.routes.templates)
        # and as matching: a real request to each catalog route hits the selector iff the route is in
        # the class set (method and path both count)
        for endpoint in catalog.ENDPOINTS:
            path = _concrete(endpoint.path)
            event = Event(REQUEST, T, "t", 1, "raw", client=REMOTE, method=endpoint.method, path=path)
            hit = select.route_ok(event.method, event.path)
            assert hit == ((endpoint.method, endpoint.path) in expected), (name, endpoint.key)


def test_the_inference_set_covers_routes_the_old_path_lists_missed() -> None:
    by_id = {rule.id: rule for rule in load_rules()}
    templates = set(by_id["compute-abuse"].select.routes.templates)  # type: ignore[union-attr]
    assert ("POST", "/v1/audio/transcriptions") in templates
    assert ("POST", "/v1/images/generations") in templates  # removed in 0.32.6: still in old logs
    assert ("POST", "/api/create") not in templates  # compute, but an admin route: admin-from-remote's
    admin = set(by_id["admin-from-remote"].select.routes.templates)  # type: ignore[union-attr]
    assert ("POST", "/api/experimental/aliases") in admin  # removed in 0.18.0
    assert ("HEAD", "/api/blobs/{digest}") not in admin  # the existence check reads, it does not upload
    assert ("POST", "/api/blobs/{digest}") in admin


def test_templates_map_to_the_engines_path_patterns() -> None:
    assert path_pattern("/api/blobs/{digest}") == "/api/blobs/*"
    assert path_pattern("/v1/models/{model}") == "/v1/models/*"
    assert path_pattern("/api/tags") == "/api/tags"
    select = Select(path=["/api/*/items/*", "/v1/models/*"])
    event = Event(REQUEST, T, "t", 1, "raw", client=REMOTE, method="GET", path="/api/x/items/3")
    assert select.matches(event, "public")
    for path in ("/api//items/3", "/api/x/items", "/api/x/y/items/3"):
        other = Event(REQUEST, T, "t", 1, "raw", client=REMOTE, method="GET", path=path)
        assert not select.matches(other, "public"), path


def _rules_with(select: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "rules": [
            {
                "id": "r",
                "severity": "high",
                "title": "t",
                "description": "d",
                "remediation": "r",
                "select": select,
            }
        ],
    }


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ({"endpoint_class": ["superuser"]}, "unknown endpoint class ['superuser']"),
        ({"endpoint_class": ["account"], "not_endpoint_class": ["outbound"]}, "selects no catalog route"),
        ({"not_endpoint_class": ["admin"]}, "not_endpoint_class needs endpoint_class"),
    ],
)
def test_bad_class_selectors_are_rejected_when_rules_load(select: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RuleSet.model_validate(_rules_with(select))


def _report(path: Path, *, fast: bool) -> dict[str, Any]:
    analysis = analyze(
        [file_source(str(path))],
        None,
        rules=load_rules(),
        classifier=ClientClassifier(),
        tz=UTC,
        since=None,
        fast=fast,
        workers=1,
    )
    report = build_report(analysis, sources=[path.name], tz_label="UTC", since=None, started_at=T)
    data = json.loads(report.model_dump_json())
    for key in ("started_at", "finished_at"):
        data.pop(key)
    data["data"]["stats"].pop("fast_path")
    return data


def _findings(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["rule"], f["target"]): f for f in report["findings"]}


NEW_ROUTE = "/api/experimental/new_admin"


def _new_route_log(tmp_path: Path) -> Path:
    lines = [gin(T + timedelta(seconds=i), "127.0.0.1", "POST", "/api/chat", 200) for i in range(50)]
    lines.append(gin(T + timedelta(seconds=60), REMOTE, "POST", NEW_ROUTE, 200))
    lines.append(gin(T + timedelta(seconds=61), "127.0.0.1", "POST", NEW_ROUTE, 200))
    path = tmp_path / "server.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_route_added_to_the_catalog_is_detected_without_editing_the_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_rules: None
) -> None:
    log = _new_route_log(tmp_path)
    before = _findings(_report(log, fast=False))
    assert ("admin-from-remote", REMOTE) not in before  # unknown to the catalog: not an admin route

    new_admin = catalog.Endpoint("POST", NEW_ROUTE, frozenset({"admin"}), since="0.40.0", role="admin")
    monkeypatch.setattr(catalog, "ENDPOINTS", (*catalog.ENDPOINTS, new_admin))
    load_rules.cache_clear()  # rules resolve their classes when they load

    slow = _report(log, fast=False)
    assert _report(log, fast=True) == slow
    findings = _findings(slow)
    finding = findings[("admin-from-remote", REMOTE)]
    assert finding["severity"] == "high"
    assert finding["evidence"]["endpoints"] == {f"POST {NEW_ROUTE}": 1}
    assert ("admin-from-remote", "127.0.0.1") not in findings  # the owner may administer
    raw = resources.files("ollama_guard.investigate").joinpath("data/rules.json").read_text("utf-8")
    assert NEW_ROUTE not in raw


def test_interior_path_parameters_of_new_routes_match_one_segment(
    monkeypatch: pytest.MonkeyPatch, fresh_rules: None
) -> None:
    new = catalog.Endpoint("DELETE", "/api/models/{model}/tags/{tag}", frozenset({"admin"}), role="admin")
    monkeypatch.setattr(catalog, "ENDPOINTS", (*catalog.ENDPOINTS, new))
    admin = {rule.id: rule for rule in load_rules()}["admin-from-remote"].select

    def hits(method: str, path: str) -> bool:
        event = Event(REQUEST, T, "t", 1, "raw", client=REMOTE, method=method, path=path)
        return admin.matches(event, "public")

    assert hits("DELETE", "/api/models/llama3/tags/latest")
    assert not hits("DELETE", "/api/models/llama3/tags")
    assert not hits("DELETE", "/api/models//tags/latest")
    assert not hits("GET", "/api/models/llama3/tags/latest")


def test_account_and_inference_routes_from_a_remote_client(tmp_path: Path) -> None:
    lines = [
        gin(T + timedelta(seconds=10 * i), REMOTE, "POST", "/v1/audio/transcriptions", 200, "2.1s")
        for i in range(35)
    ]
    lines += [
        gin(T + timedelta(minutes=10), "198.51.100.4", "POST", "/api/me", 401),
        gin(T + timedelta(minutes=11), "198.51.100.4", "DELETE", "/api/user/keys/c3NoLWVk", 200),
        # a wrong method is no route of the catalog: neither administration nor account use
        gin(T + timedelta(minutes=12), "198.51.100.5", "GET", "/api/pull", 404),
        gin(T + timedelta(minutes=12), "198.51.100.5", "GET", "/api/me", 404),
    ]
    path = tmp_path / "server.log"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    slow = _report(path, fast=False)
    assert _report(path, fast=True) == slow
    findings = _findings(slow)
    assert findings[("compute-abuse", REMOTE)]["evidence"]["matched_requests"] == 35
    account = findings[("cloud-account-abuse", "198.51.100.4")]
    assert account["evidence"]["endpoints"] == {"POST /api/me": 1, "DELETE /api/user/keys/c3NoLWVk": 1}
    assert findings[("admin-from-remote", "198.51.100.4")]["evidence"]["endpoints"] == {
        "DELETE /api/user/keys/c3NoLWVk": 1
    }
    assert not any(target == "198.51.100.5" for rule, target in findings if rule != "error-burst")
