"""Model patterns: which models a key may use, compiled once per distinct pattern list.

Model names are compared by Ollama's canonical form (`host/namespace/model:tag`, lower-cased).

Model patterns (`ApiKey.models`):

* ``*`` allows every model.
* A pattern without ``*``/``?`` is a model name with Ollama's defaults: ``llama3`` means
  ``registry.ollama.ai/library/llama3:latest`` (exactly what Ollama itself would use), so it does not
  allow ``llama3:70b``.
* A glob (``*``, ``?``, ``[...]``) gets the same host/namespace defaults part by part, and a glob
  without a tag covers every tag: ``llama3:*`` = every tag of llama3, ``qwen*`` = every tag of every
  library model starting with qwen, ``library/*`` = the whole default library, ``hf.co/*/*`` =
  everything from hf.co. Wildcards never cross a ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from ollama_guard.ollama.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    InvalidModelName,
    ModelName,
    parse_model_name,
)


@lru_cache(maxsize=8192)
def parse_cached(raw: str) -> ModelName:
    """parse_model_name with a cache (raises InvalidModelName)."""
    return parse_model_name(raw)


ModelMatcher = Callable[[str], bool]


def allow_all(_canonical: str) -> bool:
    return True


def _allow_none(_canonical: str) -> bool:
    return False


def _glob_part(part: str) -> str:
    """Regex for one name part: ``*`` → any run, ``?`` → one character, ``[...]``/``[!...]`` → a
    class; nothing ever matches ``/``."""
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = part[i + 1 : end]
                negate = body.startswith("!")
                if negate:
                    body = body[1:]
                escaped = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
                out.append(f"(?!/)[^{escaped}]" if negate else f"[{escaped}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _pattern_regex(pattern: str) -> str | None:
    """Regex source matching canonical names for one pattern (None if the pattern is unusable)."""
    text = pattern.strip().lower()
    if not text:
        return None
    if not any(c in text for c in "*?["):
        try:
            return re.escape(parse_model_name(text).canonical())
        except InvalidModelName:
            return None
    if text.rfind(":") > text.rfind("/"):
        base, tag = text.rsplit(":", 1)
    else:
        base, tag = text, "*"  # a glob without a tag covers every tag
    parts = base.split("/")
    if len(parts) == 1:
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
    elif len(parts) == 3:
        host, namespace, model = parts
    else:
        return None
    if not all((host, namespace, model, tag)):
        return None
    return f"{_glob_part(host)}/{_glob_part(namespace)}/{_glob_part(model)}:{_glob_part(tag)}"


@lru_cache(maxsize=4096)
def compile_model_patterns(patterns: tuple[str, ...]) -> ModelMatcher:
    """One matcher for a key's pattern list (cached per distinct list). An empty list allows nothing;
    GW-STATE stores "no restriction" as ``("*",)``."""
    if any(p.strip() == "*" for p in patterns):
        return allow_all
    sources = [s for s in (_pattern_regex(p) for p in patterns) if s is not None]
    if not sources:
        return _allow_none
    compiled = re.compile("|".join(f"(?:{s})" for s in sources))

    @lru_cache(maxsize=1024)
    def matches(canonical: str) -> bool:
        return compiled.fullmatch(canonical) is not None

    return matches


def pattern_is_valid(pattern: str) -> bool:
    """Whether a model pattern can ever match (for `keys create` validation)."""
    return pattern.strip() == "*" or _pattern_regex(pattern) is not None


def key_model_matcher(models: Iterable[str] | None) -> ModelMatcher:
    """Matcher for ApiKey.models: ``("*",)`` → every model; None or empty → no model (fail closed)."""
    return compile_model_patterns(tuple(models or ()))
