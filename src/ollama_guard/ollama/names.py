"""Ollama model names, parsed and compared the way the Ollama server does it.

Facts from Ollama's source (`types/model/name.go`, `internal/modelref/modelref.go`,
`server/model_resolver.go`, snapshot fb3076099):

* A name is ``[scheme://][host/][namespace/]model[:tag]``. The tag is split off at the last ``:`` only
  when that colon comes after the last ``/`` (so ``host:5000/ns/m`` has no tag). Then the model, the
  namespace and the host are cut at the last ``/`` each; whatever is left is the host, which may carry
  a ``scheme://`` prefix (used by ``/api/pull`` and ``/api/push``).
* Missing parts default to host ``registry.ollama.ai``, namespace ``library``, tag ``latest``.
* Every part is ASCII: it starts with a letter, digit or ``_`` and continues with letters, digits,
  ``_`` and ``-``; ``.`` is allowed except in the namespace; ``:`` only in the host. Lengths: host
  1–350, the others 1–80.
* Names are compared case-insensitively (``Name.EqualFold``); the scheme is not part of the identity.
* Before parsing, the server trims white space and reads an explicit *source suffix*: ``:cloud`` or
  ``:local`` after the name (``gpt-oss:20b:cloud``), or a tag ending in ``-cloud`` (``gpt-oss:20b-cloud``).
  Cloud names are proxied to ollama.com. Pull and delete store them under the "legacy" name
  ``model:cloud`` (no explicit tag) or ``model:<tag>-cloud``; this module represents every cloud
  reference in that stored form, so ``gpt-oss:20b:cloud`` and ``gpt-oss:20b-cloud`` are the same name.
  ``:local`` is dropped (``llama3:local`` is ``llama3:latest``). Two suffixes (``m:cloud:local``) are an
  error, as in Ollama.

Deliberately stricter than Ollama: a scheme other than ``http``/``https`` (Ollama accepts any string and
fails later at connect time) is rejected, and the scheme is stored lower-cased (Ollama's "insecure"
check compares it case-sensitively to ``http``; ``HTTP://`` is still plain HTTP).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"
ALLOWED_SCHEMES = ("http", "https")

_HOST_MAX = 350
_PART_MAX = 80
_DIGEST_RE = re.compile(r"sha256[:-][0-9a-fA-F]{64}")
_ALNUM_UNDERSCORE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

# Go's unicode.IsSpace (the White_Space property), used by strings.TrimSpace.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


class InvalidModelName(ValueError):
    """The string is not a model name Ollama would accept."""


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name (defaults applied). Compare with `.canonical()`, not `==`."""

    host: str
    namespace: str
    model: str
    tag: str
    scheme: str | None = None

    def canonical(self) -> str:
        """The equality key: lower-cased ``host/namespace/model:tag`` (Ollama's EqualFold)."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}".lower()

    def display(self) -> str:
        """The shortest form, as Ollama lists it (``llama3:latest``, ``hf.co/org/m:latest``)."""
        if self.host.lower() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.lower() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def full(self) -> str:
        """``host/namespace/model:tag`` in the original case (Ollama's ``Name.String()``)."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    def manifest_relpath(self) -> PurePosixPath:
        """Where the manifest lives under ``<models>/manifests``: ``host/namespace/model/tag``."""
        return PurePosixPath(self.host, self.namespace, self.model, self.tag)

    @property
    def is_cloud(self) -> bool:
        """True for names Ollama proxies to ollama.com: tag ``cloud`` or a tag ending in ``-cloud``."""
        tag = self.tag.lower()
        return tag == "cloud" or tag.endswith("-cloud")

    @property
    def is_default_registry(self) -> bool:
        return self.host.lower() == DEFAULT_HOST

    @property
    def registry(self) -> str:
        """The registry host, lower-cased (what egress policies compare)."""
        return self.host.lower()

    def __str__(self) -> str:
        return self.display()

    @classmethod
    def from_manifest_relpath(cls, relpath: PurePosixPath | str) -> ModelName:
        """The name of a manifest file at ``host/namespace/model/tag`` (Ollama's ParseNameFromFilepath)."""
        parts = PurePosixPath(relpath).parts
        if len(parts) != 4:
            raise InvalidModelName(f"manifest path {str(relpath)!r} is not host/namespace/model/tag")
        host, namespace, model, tag = parts
        _check_part("host", host)
        _check_part("namespace", namespace)
        _check_part("model", model)
        _check_part("tag", tag)
        return cls(host=host, namespace=namespace, model=model, tag=tag)


def go_trim_space(s: str) -> str:
    """Go's strings.TrimSpace (differs from str.strip on U+001C–U+001F)."""
    return s.strip(_GO_SPACE)


def _source_suffix(raw: str) -> tuple[str, str | None]:
    """modelref.parseSourceSuffix: (base, "cloud"|"local"|None)."""
    idx = raw.rfind(":")
    if idx < 0:
        return raw, None
    suffix_raw = go_trim_space(raw[idx + 1 :])
    suffix = suffix_raw.lower()
    if suffix == "cloud":
        return raw[:idx], "cloud"
    if suffix == "local":
        return raw[:idx], "local"
    if "/" not in suffix_raw and suffix.endswith("-cloud"):
        return raw[: idx + 1] + suffix_raw[: -len("-cloud")], "cloud"
    return raw, None


def _has_explicit_tag(name: str) -> bool:
    return name.rfind(":") > name.rfind("/")


def _cut_last(s: str, sep: str) -> tuple[str, str | None]:
    """(before, after) at the last `sep`; after is None when `sep` is absent. Empty halves stay empty
    (Ollama marks them "!MISSING!", which is invalid; the part check rejects "" the same way)."""
    i = s.rfind(sep)
    if i < 0:
        return s, None
    return s[:i], s[i + len(sep) :]


def _check_part(kind: str, value: str) -> None:
    limit = _HOST_MAX if kind == "host" else _PART_MAX
    if not 1 <= len(value) <= limit:
        if not value:
            raise InvalidModelName(f"missing {kind}")
        raise InvalidModelName(f"{kind} longer than {limit} characters")
    if value[0] not in _ALNUM_UNDERSCORE:
        raise InvalidModelName(f"{kind} {value!r} must start with a letter, digit or underscore")
    for ch in value[1:]:
        if ch in _ALNUM_UNDERSCORE or ch in "-_":
            continue
        if ch == "." and kind != "namespace":
            continue
        if ch == ":" and kind == "host":
            continue
        raise InvalidModelName(f"{kind} {value!r} contains invalid character {ch!r}")


def _split(name: str) -> tuple[str | None, str | None, str | None, str, str | None]:
    """ParseNameBare: (scheme, host, namespace, model, tag) with None for absent parts."""
    tag: str | None = None
    rest = name
    if _has_explicit_tag(rest):
        rest, tag = _cut_last(rest, ":")
    rest, model = _cut_last(rest, "/")
    if model is None:
        return None, None, None, rest, tag
    rest, namespace = _cut_last(rest, "/")
    if namespace is None:
        return None, None, rest, model, tag
    scheme: str | None = None
    host = rest
    if "://" in rest:
        scheme, host = rest.split("://", 1)
    return scheme, host, namespace, model, tag


def parse_model_name(s: str) -> ModelName:
    """Parse a model reference as Ollama's server does, with its defaults. Raises InvalidModelName."""
    if not isinstance(s, str):
        raise InvalidModelName(f"model name must be a string, not {type(s).__name__}")
    raw = go_trim_space(s)
    if not raw:
        raise InvalidModelName("model is required")
    base, source = _source_suffix(raw)
    if source is not None and _source_suffix(base)[1] is not None:
        raise InvalidModelName(f"use either :local or :cloud, not both: {raw!r}")
    if source == "cloud":
        name = base + ("-cloud" if _has_explicit_tag(base) else ":cloud")
    else:
        name = base

    scheme, host, namespace, model, tag = _split(name)
    if scheme is not None:
        scheme = scheme.lower()
        if scheme not in ALLOWED_SCHEMES:
            raise InvalidModelName(f"unsupported scheme {scheme!r} in model name (use http or https)")
    host = DEFAULT_HOST if host is None else host
    namespace = DEFAULT_NAMESPACE if namespace is None else namespace
    tag = DEFAULT_TAG if tag is None else tag
    _check_part("host", host)
    _check_part("namespace", namespace)
    _check_part("model", model)
    _check_part("tag", tag)
    return ModelName(host=host, namespace=namespace, model=model, tag=tag, scheme=scheme)


def try_parse_model_name(s: object) -> ModelName | None:
    """parse_model_name, or None when `s` is not a valid name."""
    if not isinstance(s, str):
        return None
    try:
        return parse_model_name(s)
    except InvalidModelName:
        return None


def canonical_model_name(s: str) -> str:
    """The case-insensitive identity of a model reference (raises InvalidModelName)."""
    return parse_model_name(s).canonical()


def same_model(a: str, b: str) -> bool:
    """Whether two references name the same model for Ollama (False if either is invalid)."""
    na, nb = try_parse_model_name(a), try_parse_model_name(b)
    return na is not None and nb is not None and na.canonical() == nb.canonical()


def is_valid_digest(s: object) -> bool:
    """Ollama's blob digest check: ``sha256:`` or ``sha256-`` followed by exactly 64 hex digits."""
    return isinstance(s, str) and _DIGEST_RE.fullmatch(s) is not None


def digest_to_blob_filename(digest: str) -> str:
    """``sha256:<hex>`` → ``sha256-<hex>`` (the file name under ``blobs/``). Raises ValueError if invalid."""
    if not is_valid_digest(digest):
        raise ValueError(f"invalid digest {digest!r}")
    return "sha256-" + digest[7:]
