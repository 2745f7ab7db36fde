"""Stage 6, `policy`: every decision about *which models* and *which registries* a request touches.

One place for the model/egress policy (`ROUTES` says which body fields name models and which routes
reach the network; `patterns.py` compiles a key's model patterns):

* every body field naming a model (`model`, `name`, `from`, `source`, `destination`) and a model in
  the path must match the key's patterns, and cloud models need `allow_cloud` → 403;
  an invalid name → 400;
* blob digests must be `sha256:<64 hex>` → 400;
* pulls and pushes only to the configured registries, plain HTTP and `insecure` only with
  `allow_insecure` → 403;
* `/api/create` fields the gateway cannot judge are refused (`modelfile`/`path` for every key,
  `files`/`adapters` for model-restricted keys), `from` is a pull, `remote_host` needs `allow_cloud`;
* optional caps on `options.num_ctx` and `keep_alive` for keys below admin (`options.py`).

Returns the key's model matcher (the `forward` stage filters listings with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ollama_guard.gateway.body import BodyStream, JsonBody
from ollama_guard.gateway.config import GatewayConfig
from ollama_guard.gateway.options import check_option_caps
from ollama_guard.gateway.patterns import ModelMatcher, allow_all, key_model_matcher, parse_cached
from ollama_guard.gateway.refusal import Refusal
from ollama_guard.gateway.request import AuditFacts
from ollama_guard.gateway.routes import Route
from ollama_guard.gateway.stages.authorise import role_allows
from ollama_guard.ollama.names import InvalidModelName, ModelName, is_valid_digest

_LEGACY_CREATE_FIELDS = ("modelfile", "path")
_BLOB_CREATE_FIELDS = ("files", "adapters")


def model_from_body(value: Any, field: str) -> ModelName | None:
    """The model a body field names; None when absent/empty. Refusal(400) when not a valid name."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Refusal(400, f"field {field!r} must be a string", "malformed-body")
    try:
        return parse_cached(value)
    except InvalidModelName as exc:
        raise Refusal(400, f"invalid model name in {field!r}: {exc}", "invalid-model-name") from None


def model_from_path(raw_segment: str) -> ModelName:
    if "%" in raw_segment:
        raise Refusal(400, "percent-encoded model names are not accepted", "invalid-model-name")
    try:
        return parse_cached(raw_segment)
    except InvalidModelName as exc:
        raise Refusal(400, f"invalid model name: {exc}", "invalid-model-name") from None


def check_digest(raw_segment: str) -> str:
    if not is_valid_digest(raw_segment):
        raise Refusal(400, "invalid digest (expected sha256:<64 hex digits>)", "invalid-digest")
    return raw_segment


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Where models may be pulled from and pushed to."""

    pull_registries: frozenset[str]
    push_registries: frozenset[str]
    allow_insecure: bool

    def check_pull(self, name: ModelName) -> None:
        if name.registry not in self.pull_registries:
            raise Refusal(
                403, f"pulling from registry {name.registry!r} is not allowed", "registry-not-allowed"
            )
        self._check_scheme(name)

    def check_push(self, name: ModelName) -> None:
        if name.registry not in self.push_registries:
            raise Refusal(
                403, f"pushing to registry {name.registry!r} is not allowed", "registry-not-allowed"
            )
        self._check_scheme(name)

    def _check_scheme(self, name: ModelName) -> None:
        if name.scheme == "http" and not self.allow_insecure:
            raise Refusal(403, "plain-HTTP registries are not allowed", "insecure-not-allowed")

    def check_insecure(self, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, bool):
            raise Refusal(400, "field 'insecure' must be a boolean", "malformed-body")
        if value and not self.allow_insecure:
            raise Refusal(403, "insecure registry access is not allowed", "insecure-not-allowed")


def check_create_sources(body: JsonBody, matcher: ModelMatcher) -> None:
    """`/api/create` fields the gateway cannot judge are refused (fail closed).

    * `modelfile` / `path` (Ollama < 0.5.5): a Modelfile text or a file on the *server's* disk whose
      `FROM` line may name any model or registry — refused for every key.
    * `files` / `adapters` name blobs by digest, and a digest can be any model's weights: refused
      for keys restricted to some models (an unrestricted admin key keeps them).
    """
    for field in _LEGACY_CREATE_FIELDS:
        if body.get(field) not in (None, ""):
            raise Refusal(
                400,
                f"the legacy /api/create field {field!r} is not accepted by the gateway; "
                "use 'from', 'files', 'template', 'system', 'parameters' instead",
                "legacy-create-field",
            )
    if matcher is allow_all:
        return
    for field in _BLOB_CREATE_FIELDS:
        if body.get(field) not in (None, "", {}, []):
            raise Refusal(
                403,
                f"/api/create with {field!r} (blobs by digest) needs a key that may use every model",
                "create-blobs-not-allowed",
            )


class PolicyStage:
    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._allow_cloud = config.allow_cloud
        self._option_caps = config.max_num_ctx is not None or config.max_keep_alive is not None
        self.egress = EgressPolicy(
            pull_registries=frozenset(config.pull_registries),
            push_registries=frozenset(config.push_registries),
            allow_insecure=config.allow_insecure,
        )

    def __call__(
        self, facts: AuditFacts, route: Route, params: dict[str, str], key: Any,
        body: JsonBody | BodyStream | None,
    ) -> ModelMatcher:
        matcher = key_model_matcher(key.models)
        if isinstance(body, JsonBody):
            self._check_body(route, body, matcher, facts)
            if self._option_caps and route.endpoint.is_compute and not role_allows(key.role, "admin"):
                check_option_caps(body, self._config.max_num_ctx, self._config.max_keep_alive)
        if "digest" in params:
            check_digest(params["digest"])
        if "model" in params:
            name = model_from_path(params["model"])
            facts.model = name.canonical()  # recorded before judging: a refusal names the model
            self.check_model(name, matcher)
        return matcher

    def check_model(self, name: ModelName, matcher: ModelMatcher) -> None:
        if name.is_cloud and not self._allow_cloud:
            raise Refusal(403, f"cloud model {name.display()!r} is not allowed", "cloud-not-allowed")
        if not matcher(name.canonical()):
            raise Refusal(403, f"model {name.display()!r} is not allowed for this key", "model-not-allowed")

    def _check_body(self, route: Route, body: JsonBody, matcher: ModelMatcher, facts: AuditFacts) -> None:
        names: list[tuple[str, ModelName]] = []
        for field in route.model_fields:
            name = model_from_body(body.get(field), field)
            if name is None:
                continue
            if not names:  # `model` wins over `name` (Ollama's cmp.Or); recorded before judging
                facts.model = name.canonical()
            names.append((field, name))
        for _field, name in names:
            self.check_model(name, matcher)
        egress = route.egress
        if egress == "pull":
            self.egress.check_insecure(body.get("insecure"))
            for _field, name in names:
                self.egress.check_pull(name)
        elif egress == "push":
            self.egress.check_insecure(body.get("insecure"))
            for _field, name in names:
                self.egress.check_push(name)
        elif egress == "create":
            check_create_sources(body, matcher)
            for field, name in names:
                if field == "from":
                    self.egress.check_pull(name)
            if body.get("remote_host") not in (None, "") and not self._allow_cloud:
                raise Refusal(403, "remote models are not allowed", "cloud-not-allowed")
