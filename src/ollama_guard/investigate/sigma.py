"""The detection rules (``data/rules.json``) as Sigma rules, for SIEMs that already hold the logs.

One file per detection, a Sigma rule collection (YAML documents):

* request rules, once per log source — Ollama's gin access log (``product: ollama, service: gin``) and
  the gateway's audit log (``product: ollama-guard, service: audit``), both ``category: webserver``
  with Sigma's web server field names (``c-ip``, ``cs-method``, ``cs-uri-stem``, ``sc-status``,
  ``time-taken``; the audit log adds ``decision``). A rule without ``correlate`` is a plain detection
  rule; a rule with it has a base rule (``generate: false``, named ``<id>-<source>-base``) and one
  Sigma correlation rule per correlation (``event_count``, ``value_count``; ``sequence`` →
  ``temporal`` over one base rule per step — Sigma's ``temporal_ordered`` has no backend yet, so the
  order of the steps is not checked there). ``sum`` (total latency; Sigma's ``value_sum``,
  which no backend converts yet) and ``spike`` (above the client's own average: no Sigma form) are
  left out.
* config and crash rules: Ollama's server log (``product: ollama, service: server``), on ``message``.

Levels follow our severities (``info`` → ``informational``); tags are the rules' ATT&CK techniques;
ids are UUIDv5 of the rule id and source, stable from one export to the next.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import yaml

from ollama_guard.investigate.events import _LOCAL_NETWORKS
from ollama_guard.investigate.rules import Correlation, Rule, Select, Step, _RequestFields, path_pattern

# correlation types with a Sigma form that the Splunk and Elasticsearch backends convert; ``sum`` (Sigma's
# value_sum: no backend converts it yet) and ``spike`` (above the client's own average: no Sigma form)
# stay with investigate/watch
EXPORTED = ("event_count", "value_count", "sequence")
NAMESPACE = uuid.UUID("5c1e2f0a-7d4b-4c53-9a59-0a11a3a9d6e1")
LEVELS = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "info": "informational"}
SOURCES = {
    "gin": {"category": "webserver", "product": "ollama", "service": "gin"},
    "audit": {"category": "webserver", "product": "ollama-guard", "service": "audit"},
    "server": {"product": "ollama", "service": "server"},
}
LOOPBACK = ["127.0.0.0/8", "::1/128"]
PRIVATE = [str(n) for n in _LOCAL_NETWORKS]
# facts of a `server config` line, as conditions on the message (Ollama prints env as map[K:V …])
FACTS: dict[str, dict[str, Any]] = {
    "exposed_bind": {
        "selection": {"message|contains": "OLLAMA_HOST:"},
        "filter_loopback": {"message|contains": [
            "OLLAMA_HOST:127.", "OLLAMA_HOST:http://127.", "OLLAMA_HOST:https://127.",
            "OLLAMA_HOST:localhost",
            "OLLAMA_HOST:http://localhost", "OLLAMA_HOST:https://localhost", "OLLAMA_HOST:[::1]",
            "OLLAMA_HOST:http://[::1]", "OLLAMA_HOST:https://[::1]", "OLLAMA_HOST: "]},
    },
    "cors_any_origin": {"selection": {"message|re": r"OLLAMA_ORIGINS:\[([^\] ]+ )*\*[ \]]"}},
    "debug_log_requests": {"selection": {"message|re": r"OLLAMA_DEBUG_LOG_REQUESTS:([1tT]|[yY]es|on|ON)"}},
}
LISTENING_EXPOSED = {
    "selection": {"message|contains": "Listening on "},
    "filter_loopback": {"message|contains": ["Listening on 127.", "Listening on [::1]",
                                             "Listening on localhost"]},
}
CRASH = {"message|startswith": ["panic: ", "fatal error: ", "SIGSEGV: ", "SIGBUS: ", "SIGILL: ", "SIGABRT: "]}
CRASH_ANYWHERE = {"message|contains": ["[signal SIG", "Main process exited, code=killed",
                                       "Main process exited, code=dumped"]}
EXIT_STATUS = {"message|re": r"Main process exited, code=exited, status=[1-9]"}


def _id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, ":".join(parts)))


def _header(rule: Rule, source: str, suffix: str = "") -> dict[str, Any]:
    return {
        "title": rule.title + suffix,
        "id": _id(rule.id, source, suffix),
        "status": "experimental",
        "description": rule.description,
        "references": [*rule.references, *rule.attack_references()],
        "author": "ollama-guard",
        "date": date(2026, 12, 1).isoformat(),
        "tags": [f"attack.{t.lower()}" for t in rule.attack],
    }


def _path_value(pattern: str) -> tuple[str, str]:
    """(field modifier, value) for one of our path patterns."""
    star = pattern.find("*")
    if star < 0:
        return "cs-uri-stem", pattern
    if star == len(pattern) - 1 and "*" not in pattern[:-1]:
        return "cs-uri-stem|startswith", pattern[:-1]
    return "cs-uri-stem", pattern  # a Sigma wildcard (a little wider than our one-segment '*')


def _route_selections(fields: _RequestFields) -> dict[str, Any]:
    """Selections for method / path / endpoint classes (AND of those given)."""
    out: dict[str, Any] = {}
    if fields.method:
        out["sel_method"] = {"cs-method": list(fields.method)}
    if fields.path:
        items = [{k: v} for k, v in (_path_value(p) for p in fields.path)]
        out["sel_path"] = items if len(items) > 1 else items[0]
    if fields.routes is not None:
        out["sel_route"] = [dict([("cs-method", m), _path_value(path_pattern(p))])
                            for m, p in fields.routes.templates]
    return out


def _status(statuses: list[str]) -> dict[str, Any]:
    exact = [s for s in statuses if not s.endswith("xx")]
    classes = [s[0] for s in statuses if s.endswith("xx")]
    parts: list[dict[str, Any]] = []
    if exact:
        parts.append({"sc-status": [int(s) for s in exact]})
    if classes:
        parts.append({"sc-status|re": f"^[{''.join(classes)}][0-9][0-9]$"})
    return {"sel_status": parts if len(parts) > 1 else parts[0]}


def _request_detection(select: Select | Step, source: str) -> dict[str, Any]:
    detection = _route_selections(select)
    if select.status:
        detection.update(_status(select.status))
    decision = getattr(select, "decision", None)
    if decision and source == "audit":
        detection["sel_decision"] = {"decision": list(decision)}
    condition = " and ".join(detection) or "sel_any"
    if not detection:
        detection["sel_any"] = {"cs-method|exists": True}
    clients = getattr(select, "clients", "any")
    if clients in ("untrusted", "public", "remote"):
        detection["filter_owner"] = {"c-ip|cidr": LOOPBACK}
        condition += " and not filter_owner"
        if clients == "public":
            detection["filter_private"] = {"c-ip|cidr": PRIVATE}
            condition += " and not filter_private"
    elif clients == "owner":
        detection["sel_owner"] = {"c-ip|cidr": LOOPBACK}
        condition += " and sel_owner"
    elif clients == "private":
        detection["sel_private"] = {"c-ip|cidr": PRIVATE}
        condition += " and sel_private"
    detection["condition"] = condition
    return detection


def _server_detection(rule: Rule) -> dict[str, Any]:
    select = rule.select
    if "crash" in select.kind:
        return {"sel_start": CRASH, "sel_signal": CRASH_ANYWHERE, "sel_exit": EXIT_STATUS,
                "condition": "1 of sel_*"}
    detection: dict[str, Any] = {"sel_config": {"message|contains": "server config"}}
    parts = ["sel_config"]
    for fact in select.facts or []:
        for name, value in FACTS[fact].items():
            key = f"{name}_{fact}"
            detection[key] = value
            parts.append(f"not {key}" if name.startswith("filter") else key)
    condition = " and ".join(parts)
    if "listening" in select.kind and select.facts == ["exposed_bind"]:
        detection["sel_listening"] = LISTENING_EXPOSED["selection"]
        detection["filter_listening"] = LISTENING_EXPOSED["filter_loopback"]
        condition = f"({condition}) or (sel_listening and not filter_listening)"
    detection["condition"] = condition
    return detection


def _fields(source: str) -> list[str]:
    base = ["c-ip", "cs-method", "cs-uri-stem", "sc-status", "time-taken"]
    return [*base, "decision", "reason", "key_id"] if source == "audit" else base


def _correlation(rule: Rule, corr: Correlation, source: str, index: int, bases: list[str]) -> dict[str, Any]:
    doc = _header(rule, source, f" ({_kind(corr)} {index + 1})")
    doc.pop("description", None)
    doc["description"] = f"{rule.description} Correlation: {_explain(corr)}."
    group = ["c-ip"]
    if corr.type == "event_count":
        body = {"type": "event_count", "condition": {"gte": int(corr.gte)}}
    elif corr.type == "value_count":
        field = {"status": "sc-status", "model": "model"}.get(corr.field or "", "cs-uri-stem")
        body = {"type": "value_count", "condition": {"field": field, "gte": int(corr.gte)}}
    else:  # sequence: Sigma's temporal_ordered is converted by no backend yet; temporal (every step by
        # the client within the window, in any order) is, and is a superset
        body = {"type": "temporal"}
    doc["correlation"] = {**body, "rules": bases, "group-by": group, "timespan": _timespan(corr.window)}
    doc["level"] = LEVELS[rule.severity.value]
    return doc


def _kind(corr: Correlation) -> str:
    return {"sequence": "temporal"}.get(corr.type, corr.type)


def _explain(corr: Correlation) -> str:
    if corr.type == "sequence":
        return f"{len(corr.steps)} steps by one client within {corr.window} (ours also wants them in order)"
    what = {"event_count": "events", "value_count": f"distinct {corr.field or 'endpoint'}"}[corr.type]
    return f">= {corr.gte:g} {what} per client within {corr.window}"


def _timespan(window: str) -> str:
    return window if window[-1] in "smhd" and not window.endswith("ms") else "1s"


def sigma_documents(rule: Rule) -> list[dict[str, Any]]:
    """The Sigma documents of one detection (see the module docstring)."""
    docs: list[dict[str, Any]] = []
    if "request" not in rule.select.kind:
        doc = _header(rule, "server")
        doc.update({"logsource": SOURCES["server"], "detection": _server_detection(rule),
                    "fields": ["message"], "falsepositives": ["Deliberate configuration by the owner"
                                                              if "config" in rule.select.kind else "Unknown"],
                    "level": LEVELS[rule.severity.value]})
        return [doc]
    # a rule about the server's bind (tunnel-exposure) reads Ollama's own log only, and the bind is state
    # the SIEM must supply: the rule says so
    sources = ("gin",) if rule.select.bind else ("gin", "audit")
    for source in sources:
        exportable = [c for c in rule.correlate if c.type in EXPORTED]
        if not rule.correlate:
            doc = _header(rule, source)
            if rule.select.bind:
                binds = " or ".join(rule.select.bind)
                doc["description"] += (f" Scope: hosts whose Ollama is bound to {binds} (its `server config`"
                                       " / `Listening on` line); this rule alone cannot tell.")
            doc.update({"logsource": SOURCES[source], "detection": _request_detection(rule.select, source),
                        "fields": _fields(source), "falsepositives": ["Traffic of trusted networks not "
                                                                      "excluded by a filter"],
                        "level": LEVELS[rule.severity.value]})
            docs.append(doc)
            continue
        base_name = f"{rule.id}-{source}-base"
        base = _header(rule, source, " (matching events)")
        base.update({"name": base_name, "logsource": SOURCES[source],
                     "detection": _request_detection(rule.select, source), "fields": _fields(source),
                     "level": LEVELS[rule.severity.value]})
        docs.append(base)
        for index, corr in enumerate(exportable):
            bases = [base_name]
            if corr.type == "sequence":
                bases = []
                for n, step in enumerate(corr.steps):
                    name = f"{rule.id}-{source}-step{n + 1}"
                    step_doc = _header(rule, source, f" (step {n + 1})")
                    detection = _request_detection(step, source)
                    # the rule's own select applies to every step (kind, clients, method)
                    for key, value in _request_detection(rule.select, source).items():
                        if key != "condition" and key not in detection:
                            detection[key] = value
                    names = [k for k in detection if k != "condition"]
                    detection["condition"] = " and ".join(
                        f"not {k}" if k.startswith("filter") else k for k in names)
                    step_doc.update({"name": name, "logsource": SOURCES[source], "detection": detection,
                                     "fields": _fields(source), "level": LEVELS[rule.severity.value]})
                    docs.append(step_doc)
                    bases.append(name)
            docs.append(_correlation(rule, corr, source, index, bases))
    return docs


def sigma_yaml(rule: Rule) -> str:
    return yaml.safe_dump_all(sigma_documents(rule), sort_keys=False, allow_unicode=True, width=110)
