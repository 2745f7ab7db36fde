"""The known-good index: real chat templates of the model families people run (Ollama's library templates
and their Hugging Face counterparts, the Modelfiles copied from ollama.com/library, popular Jinja
templates), normalised and hashed, shipped as package data (`known_templates.json.gz`, built by
scripts/templates_index.py from tests/data/templates/benign/ and its SOURCES.tsv).

* exact match (whitespace-insensitive) → the template is that family's;
* a near match (most of a known template's segments, in order) → the diff against it; inserted
  sentences that are not in any known template and tell the model what to do are judged high."""

from __future__ import annotations

import difflib
import gzip
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ollama_guard.verify.templates.prose import strip_structure

INDEX_FILE = "known_templates.json.gz"
NEAR = 0.6  # share of segments in common (Jaccard) for a near match
SAME_SENTENCE = 0.6  # share of (stemmed) words in common for a sentence to count as known
MAX_DIFF_LINES = 80
_SEGMENT = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"|`([^`]*)`", re.S)
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_DIRECTIVE = re.compile(
    r"\b(?:you|the assistant|the model|answers?|responses?|replies|each (?:answer|reply|response))\s+"
    r"(?:\w+\s+){0,4}(?:must|should|shall|will always|need to|have to|are to|may not|cannot|can't)\b"
    r"|\b(?:always|never|whenever|from now on|make sure|be sure|do not|don't|under no circumstances)\b"
    r"|^\s*(?:answer|respond|reply|say|tell|write|keep|add|include|insert|append|mention|recommend|use|ignore"
    r"|avoid|refuse|pretend|act|claim|close|end|begin|start|remember|treat|give|send|ask|output|print"
    r"|translate|report|forward|suggest|describe|state|insist|link|cite|praise|warn)\b",
    re.IGNORECASE,
)


def words(sentence: str) -> frozenset[str]:
    """Crudely stemmed words: "responses"/"response", "completes"/"complete" are the same word."""
    return frozenset(re.sub(r"(?:ing|ed|es|s)$", "", w) for w in re.findall(r"[^\W_]+", sentence.lower()))


def normal(text: str) -> str:
    return " ".join(text.split())


def digest(text: str) -> str:
    return hashlib.sha256(normal(text).encode("utf-8", "replace")).hexdigest()


def segments(text: str) -> list[str]:
    return [s for s in (normal(p) for p in _SEGMENT.split(text)) if s]


def sentences(text: str) -> list[str]:
    """Prose sentences of a piece of template source: its text and the string literals in its tags."""
    pieces = []
    for segment in segments(text) if "{" in text else [text]:
        if segment.startswith(("{{", "{%")):
            pieces += [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(segment)]
        elif not segment.startswith("{#"):
            pieces.append(segment)
    out = []
    for piece in pieces:
        prose = strip_structure(piece.replace("\\n", "\n"))
        for sentence in _SENTENCE.findall(prose):
            clean = normal(sentence).strip(" -*#:")
            if len(re.findall(r"[^\W\d_]{2,}", clean)) >= 3:
                out.append(clean.lower())
    return out


@dataclass
class Entry:
    family: str
    kind: str
    source: str
    text: str
    hash: str = ""
    segs: list[str] = field(default_factory=list)
    seg_set: frozenset[str] = frozenset()


@dataclass
class Match:
    entry: Entry
    exact: bool
    similarity: float = 1.0
    inserted: list[str] = field(default_factory=list)  # inserted/replaced segments of the checked text
    diff: list[str] = field(default_factory=list)


class KnownIndex:
    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries
        self.by_hash: dict[str, Entry] = {}
        for entry in entries:
            entry.hash = entry.hash or digest(entry.text)
            self.by_hash.setdefault(entry.hash, entry)
        self.prepared = False
        self.vocabulary: set[str] = set()
        self.word_sets: list[frozenset[str]] = []
        self.by_word: dict[str, list[int]] = {}

    def prepare(self) -> None:
        """Segments and sentences of every entry: only needed once a template is not an exact match."""
        if self.prepared:
            return
        for entry in self.entries:
            entry.segs = segments(entry.text)
            entry.seg_set = frozenset(entry.segs)
            self.vocabulary.update(sentences(entry.text))
        self.word_sets = [words(s) for s in sorted(self.vocabulary)]
        for number, word_set in enumerate(self.word_sets):
            for word in word_set:
                self.by_word.setdefault(word, []).append(number)
        self.prepared = True

    def known_sentence(self, sentence: str) -> bool:
        """Is this sentence (or one with mostly the same words) in a known template?"""
        self.prepare()
        if sentence in self.vocabulary:
            return True
        mine = words(sentence)
        counts: dict[int, int] = {}
        for word in mine:
            for number in self.by_word.get(word, ()):
                counts[number] = counts.get(number, 0) + 1
        for number, common in counts.items():
            if common / len(mine | self.word_sets[number]) >= SAME_SENTENCE:
                return True
        return False

    def match(self, text: str, kind: str) -> Match | None:
        exact = self.by_hash.get(digest(text))
        if exact is not None and exact.kind == kind:
            return Match(exact, True)
        self.prepare()
        query = segments(text)
        qset = frozenset(query)
        best: tuple[float, Entry] | None = None
        for entry in self.entries:
            if entry.kind != kind or not entry.seg_set:
                continue
            common = len(qset & entry.seg_set)
            if not common:
                continue
            similarity = common / len(qset | entry.seg_set)
            if best is None or similarity > best[0]:
                best = (similarity, entry)
        if best is None or best[0] < NEAR:
            return None
        similarity, entry = best
        matcher = difflib.SequenceMatcher(None, entry.segs, query, autojunk=False)
        inserted = []
        for op, _i1, _i2, j1, j2 in matcher.get_opcodes():
            if op in ("insert", "replace"):
                inserted += query[j1:j2]
        diff = list(difflib.unified_diff(entry.segs, query, entry.family, "this template", n=1, lineterm=""))
        return Match(entry, False, similarity, inserted, diff[:MAX_DIFF_LINES])

    def unknown_directives(self, inserted: list[str]) -> list[str]:
        """Sentences in inserted segments that no known template has and that instruct the model."""
        out = []
        for sentence in sentences("".join(inserted)):
            if _DIRECTIVE.search(sentence) and not self.known_sentence(sentence):
                out.append(sentence)
        return out


def to_json(entries: list[Entry]) -> bytes:
    rows = [
        {"family": e.family, "kind": e.kind, "source": e.source, "hash": digest(e.text), "text": e.text}
        for e in entries
    ]
    return gzip.compress(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode("utf-8"), mtime=0)


@lru_cache(maxsize=1)
def shipped() -> KnownIndex:
    try:
        raw = resources.files(__package__).joinpath(INDEX_FILE).read_bytes()
    except FileNotFoundError:
        return KnownIndex([])
    rows = json.loads(gzip.decompress(raw))
    entries = [Entry(r["family"], r["kind"], r["source"], r["text"], r.get("hash", "")) for r in rows]
    return KnownIndex(entries)
