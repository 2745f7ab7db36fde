"""What a key may be given: its name, its model patterns and its limits — checked before anything is stored.

No empty or missing value ever widens a grant: an empty ``--models`` is refused, never read as "all".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ollama_guard.errors import InputError
from ollama_guard.gateway.keys.tokens import KEY_ID_RE

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}")
_PATTERN_CHARS_RE = re.compile(r"[A-Za-z0-9._:/*?\[\]!-]+")
MAX_PATTERNS = 64
MAX_PATTERN_LENGTH = 400
ALL_MODELS = ("*",)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InputError(
            f"invalid key name {name!r}: use 1-64 letters, digits and . _ @ : + - "
            "(starting with a letter or digit)"
        )
    if KEY_ID_RE.fullmatch(name):
        raise InputError(f"invalid key name {name!r}: it looks like a key id (16 hex digits)")
    return name


def _parses_as_model_name(candidate: str) -> bool:
    try:
        from ollama_guard.ollama.names import InvalidModelName, parse_model_name
    except ImportError:  # pragma: no cover - the knowledge base ships with the package
        return bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._:/-]*", candidate))
    try:
        parse_model_name(candidate)
    except InvalidModelName:
        return False
    return True


def validate_model_pattern(pattern: str) -> str:
    """A model name or glob (``llama3*``, ``library/*``, ``hf.co/*/*``); returned unchanged.

    A glob matches within one name part (host, namespace, model, tag), so each pattern must still
    have the shape of a model name once every glob is replaced by a plain part; and the gateway's own
    matcher must accept it.
    """
    hint = "use a model name or a glob such as llama3*, library/* or hf.co/*/*"
    if not pattern or len(pattern) > MAX_PATTERN_LENGTH or not _PATTERN_CHARS_RE.fullmatch(pattern):
        raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    if pattern != "*":
        without_classes = re.sub(r"\[[^\]]*\]", "x", pattern)
        if "[" in without_classes or "]" in without_classes:
            raise InputError(f"invalid model pattern {pattern!r}: unbalanced [ ]")
        candidate = re.sub(r"[*?]+", "x", without_classes)
        if not _parses_as_model_name(candidate):
            raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    try:
        from ollama_guard.gateway.patterns import pattern_is_valid
    except ImportError:  # pragma: no cover - policy ships with the gateway
        return pattern
    if not pattern_is_valid(pattern):
        raise InputError(f"invalid model pattern {pattern!r}: {hint}")
    return pattern


def validate_patterns(models: Iterable[str] | None) -> tuple[str, ...]:
    """The key's model grant: None (not given) → every model, stored explicitly as ``("*",)``.

    An empty list, or an empty or blank pattern in it (``--models ''``, ``--models ','``, an empty shell
    variable) is refused: it must never be read as "all models".
    """
    if models is None:
        return ALL_MODELS
    if isinstance(models, str):
        raise InputError("model patterns must be a list")
    given = list(models)
    if not given:
        raise InputError(
            "--models is empty: name the models the key may use (or leave --models out for every model)"
        )
    if any(not isinstance(p, str) or not p.strip() for p in given):
        raise InputError(f"--models has an empty pattern ({','.join(map(str, given))!r}); remove it")
    patterns = tuple(p.strip() for p in given)
    if len(patterns) > MAX_PATTERNS:
        raise InputError(f"at most {MAX_PATTERNS} model patterns per key")
    return tuple(dict.fromkeys(validate_model_pattern(p) for p in patterns))


def positive_or_none(value: int | None, what: str) -> int | None:
    """A limit: None (no limit) or a whole number of at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a whole number of at least 1 (leave it out for no limit)")
    return value
