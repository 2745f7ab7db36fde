"""Stage 4, `authorise`: may this key's role call this route.

Roles are ranked read < inference < admin; a key's role must reach the route's role (from the
endpoint catalog) → 403. An unknown role reaches nothing. Routes that act on or spend the server's
ollama.com account need `allow_cloud` → 403.
"""

from __future__ import annotations

from typing import Any

from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.routes import Route

_ROLE_RANK = {"read": 0, "inference": 1, "admin": 2}


def role_allows(key_role: str, needed: str) -> bool:
    return _ROLE_RANK.get(str(key_role), -1) >= _ROLE_RANK[needed]


def authorise(key: Any, route: Route, allow_cloud: bool) -> None:
    if not role_allows(key.role, route.role):
        raise Refusal(403, f"this key's role ({key.role}) may not call {route.label}", "role")
    if route.cloud and not allow_cloud:
        raise Refusal(403, "ollama.com account and cloud routes are disabled", "cloud-not-allowed")
