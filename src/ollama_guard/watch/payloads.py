"""The bodies POSTed to webhooks: the alert itself (``json``), or what Slack and Microsoft Teams
incoming webhooks accept (``slack``: ``text`` + Block Kit blocks; ``teams``: a message with one
Adaptive Card, the shape Teams workflows' "post to a channel when a webhook request is received" take).

Alert text comes partly from attackers (paths, model names): it is escaped for each chat's markup so a
request path cannot mention ``@channel`` or plant a link.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

FORMATS = ("json", "slack", "teams")
SLACK_HEADER_MAX = 150
SLACK_TEXT_MAX = 2900
TEAMS_TEXT_MAX = 4000


def headline(alert: dict[str, Any]) -> str:
    kind = alert.get("alert", "new")
    prefix = {"escalated": "ESCALATED ", "update": "ongoing "}.get(kind, "")
    return (f"{prefix}[{str(alert.get('severity', '')).upper()}] {alert.get('rule')}: {alert.get('title')}"
            f" — {alert.get('target')}")


def _facts(alert: dict[str, Any]) -> list[tuple[str, str]]:
    facts = [
        ("Rule", str(alert.get("rule"))),
        ("Severity", str(alert.get("severity"))),
        ("Target", str(alert.get("target"))),
        ("Source", str(alert.get("source"))),
        ("Count", str(alert.get("count"))),
        ("First seen", str(alert.get("first_seen"))),
        ("Last seen", str(alert.get("last_seen"))),
    ]
    if alert.get("previous_severity"):
        facts.append(("Was", str(alert["previous_severity"])))
    return facts


def slack_escape(text: str) -> str:
    """Slack's three control characters (``<!channel>``, ``<url|label>`` need ``<`` and ``>``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_MARKDOWN = str.maketrans({c: "\\" + c for c in "\\*_[]()`#>~|"})


def markdown_escape(text: str) -> str:
    return text.translate(_MARKDOWN)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack(alert: dict[str, Any]) -> dict[str, Any]:
    def mrkdwn(text: str) -> dict[str, Any]:
        return {"type": "mrkdwn", "text": _clip(text, SLACK_TEXT_MAX)}

    facts = "\n".join(f"*{name}:* {slack_escape(value)}" for name, value in _facts(alert))
    header = {"type": "plain_text", "text": _clip(headline(alert), SLACK_HEADER_MAX)}
    return {
        "text": _clip(slack_escape(headline(alert)), SLACK_TEXT_MAX),
        "blocks": [
            {"type": "header", "text": header},
            {"type": "section", "text": mrkdwn(slack_escape(str(alert.get("detail", ""))))},
            {"type": "section", "text": mrkdwn(facts)},
            {"type": "context", "elements": [
                mrkdwn("Remediation: " + slack_escape(str(alert.get("remediation", ""))))]},
        ],
    }


def teams(alert: dict[str, Any]) -> dict[str, Any]:
    def text(value: str, **style: Any) -> dict[str, Any]:
        clipped = _clip(markdown_escape(value), TEAMS_TEXT_MAX)
        return {"type": "TextBlock", "text": clipped, "wrap": True, **style}

    colour = "Attention" if alert.get("severity") in ("critical", "high") else "Warning"
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            text(headline(alert), weight="Bolder", size="Medium", color=colour),
            text(str(alert.get("detail", ""))),
            {"type": "FactSet", "facts": [{"title": name, "value": markdown_escape(value)}
                                          for name, value in _facts(alert)]},
            text("Remediation: " + str(alert.get("remediation", "")), isSubtle=True),
        ],
    }
    return {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                         "content": card}],
    }


def plain(alert: dict[str, Any]) -> dict[str, Any]:
    return alert


SHAPES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "json": plain, "slack": slack, "teams": teams,
}


def body(alert: dict[str, Any], fmt: str) -> bytes:
    return json.dumps(SHAPES[fmt](alert), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
