"""The regex detector verify used before the data-flow analysis (kept only as the benchmark baseline).

Signs of poisoning in chat templates (GGUF `tokenizer.chat_template`, Ollama template layers) and in
Ollama system prompts. The patterns are data (`template_patterns.json`) so they can be reviewed and extended
without touching code."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from ollama_guard.findings import Severity

TextKind = Literal["jinja", "go", "system"]

EXCERPT_RADIUS = 80
MAX_HITS_PER_PATTERN = 3

_FLAGS = {"i": re.IGNORECASE, "s": re.DOTALL, "m": re.MULTILINE}


@dataclass(frozen=True)
class TemplatePattern:
    id: str
    severity: Severity
    applies_to: frozenset[str]
    regex: re.Pattern[str]
    description: str
    benign_literal: re.Pattern[str] | None = None


@dataclass(frozen=True)
class TemplateHit:
    """One suspicious spot: pattern, position and surrounding text (invisible characters made visible)."""

    pattern: TemplatePattern
    start: int
    matched: str
    excerpt: str


@lru_cache(maxsize=1)
def load_patterns() -> tuple[tuple[TemplatePattern, ...], int]:
    """The shipped patterns and the size above which a template is itself suspicious."""
    raw = json.loads((Path(__file__).with_name("template_patterns.json")).read_text("utf-8"))
    out: list[TemplatePattern] = []
    for item in raw["patterns"]:
        flags = 0
        for letter in item.get("flags", ""):
            flags |= _FLAGS[letter]
        benign = item.get("benign_literal")
        out.append(
            TemplatePattern(
                id=item["id"],
                severity=Severity(item["severity"]),
                applies_to=frozenset(item["applies_to"]),
                regex=re.compile(item["regex"], flags),
                description=item["description"],
                benign_literal=re.compile(benign, re.DOTALL) if benign else None,
            )
        )
    return tuple(out), int(raw.get("max_template_chars", 65536))


def scan_text(text: str, kind: TextKind) -> list[TemplateHit]:
    """Every suspicious spot in `text`, at most a few per pattern, in order of appearance."""
    patterns, max_chars = load_patterns()
    hits: list[TemplateHit] = []
    for pattern in patterns:
        if kind not in pattern.applies_to:
            continue
        found = 0
        for match in pattern.regex.finditer(text):
            literal = match.groupdict().get("lit")
            if pattern.benign_literal is not None and literal is not None:
                if pattern.benign_literal.match(literal):
                    continue
            hits.append(TemplateHit(pattern, match.start(), match.group(0)[:200], excerpt(text, match)))
            found += 1
            if found >= MAX_HITS_PER_PATTERN:
                break
    if kind != "system" and len(text) > max_chars:
        oversize = TemplatePattern(
            id="oversized-template",
            severity=Severity.LOW,
            applies_to=frozenset({kind}),
            regex=re.compile(""),
            description=f"The template is {len(text)} characters long (standard ones are a few thousand); "
            "large templates are where hidden logic goes unnoticed.",
        )
        hits.append(TemplateHit(oversize, 0, "", visible(text[: EXCERPT_RADIUS * 2])))
    hits.sort(key=lambda h: h.start)
    return hits


def excerpt(text: str, match: re.Match[str]) -> str:
    start = max(0, match.start() - EXCERPT_RADIUS)
    end = min(len(text), max(match.end(), match.start() + 1) + EXCERPT_RADIUS)
    if end - start > 4 * EXCERPT_RADIUS:
        end = start + 4 * EXCERPT_RADIUS
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    return prefix + visible(text[start:end]) + suffix


def visible(text: str) -> str:
    """Shows invisible and control characters as <U+XXXX> so a reviewer can see them."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\n\t":
            out.append(ch)
        elif (
            code < 0x20
            or 0x7F <= code < 0xA0
            or code == 0xAD
            or 0x200B <= code <= 0x200F
            or 0x202A <= code <= 0x202E
            or 0x2060 <= code <= 0x2069
            or code in (0x180E, 0xFEFF)
            or 0xE0000 <= code <= 0xE007F
        ):
            out.append(f"<U+{code:04X}>")
        else:
            out.append(ch)
    return "".join(out)
