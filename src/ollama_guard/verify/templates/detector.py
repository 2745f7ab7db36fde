"""One call for one text: `check(text, kind)` → `Verdict` (evidence with severities, the family when the
template is a known one, the diff when it is a known one with insertions)."""

from __future__ import annotations

from typing import Literal

from jinja2 import TemplateSyntaxError

from ollama_guard.findings import Severity
from ollama_guard.verify.templates import go_flow, jinja_flow, known
from ollama_guard.verify.templates.flow import Analysis
from ollama_guard.verify.templates.go_parser import GoParseError
from ollama_guard.verify.templates.judge import Evidence, Verdict, judge_analysis, judge_text

Kind = Literal["jinja", "go", "system"]

OVERSIZED_CHARS = 256 * 1024  # the largest real chat templates are about 40 KB
MAX_ANALYSED_CHARS = 4 * 1024 * 1024  # parsed as a template up to here; prose-scanned in windows beyond
WINDOW = 1024 * 1024
OVERLAP = 4096


SHIPPED: known.KnownIndex | None = None  # sentinel: use the shipped index


def check(
    text: str, kind: Kind, index: known.KnownIndex | None = SHIPPED, *, use_index: bool = True
) -> Verdict:
    """Evidence about one template (`jinja`, `go`) or prompt (`system`). `index`: the known-good templates
    (default: the shipped index); `use_index=False` judges the template on its own."""
    match = None
    if use_index and kind != "system" and len(text) <= OVERSIZED_CHARS:
        match = (index or known.shipped()).match(text, kind)
        if match is not None and match.exact:
            verdict = Verdict(kind, family=match.entry.family)
            verdict.add(
                Evidence(
                    "known-template",
                    Severity.INFO,
                    1,
                    1,
                    "",
                    "",
                    f"identical to the known {match.entry.family} template ({match.entry.source})",
                )
            )
            return verdict
    verdict = _check(text, kind)
    if match is not None:
        _near(verdict, text, match, index or known.shipped())
    return verdict


def _near(verdict: Verdict, text: str, match: known.Match, index: known.KnownIndex) -> None:
    """A known template with insertions: the diff, and inserted instructions judged high."""
    entry = match.entry
    verdict.family = f"{entry.family} ({entry.source}), {match.similarity:.0%} of its segments"
    verdict.diff = match.diff
    lowered = text.lower()
    for sentence in index.unknown_directives(match.inserted):
        at = lowered.find(sentence[:40])
        line = text.count("\n", 0, at) + 1 if at >= 0 else 1
        column = at - text.rfind("\n", 0, at) if at >= 0 else 1
        verdict.add(
            Evidence(
                "inserted-instruction",
                Severity.HIGH,
                line,
                column,
                sentence[:400],
                "",
                f"an instruction inserted into the known {entry.family} template ({entry.source}); "
                "no known template has it",
            )
        )


def _check(text: str, kind: Kind) -> Verdict:
    verdict = Verdict(kind)
    if kind != "system" and len(text) > OVERSIZED_CHARS:
        verdict.add(
            Evidence(
                "oversized-template",
                Severity.HIGH,
                1,
                1,
                "",
                "",
                f"{len(text)} characters; real chat templates are under 64 KB, and size is "
                "where hidden logic goes unnoticed",
            )
        )
    if kind == "system" or len(text) > MAX_ANALYSED_CHARS:
        return _windows(kind, text, verdict)
    try:
        analysis = _analyse(text, kind)
    except RecursionError:
        verdict.add(Evidence("unanalysable-template", Severity.HIGH, 1, 1, "", "",
                             "nested too deeply to analyse; other engines (llama.cpp, Ollama) may still "
                             "render it, so its logic is hidden from review"))  # fmt: skip
        return _windows(kind, text, verdict)
    except (TemplateSyntaxError, GoParseError) as exc:
        line = getattr(exc, "lineno", None) or getattr(exc, "line", 1) or 1
        engine = "Jinja2" if kind == "jinja" else "Go's text/template"
        verdict.add(Evidence("unparseable-template", Severity.MEDIUM, line, 1, "", "",
                             f"{engine} cannot parse it: {str(exc)[:200]}"))  # fmt: skip
        return _windows(kind, text, verdict)
    return judge_analysis(kind, text, analysis, verdict)


def _analyse(text: str, kind: Kind) -> Analysis:
    if kind == "jinja":
        return jinja_flow.JinjaFlow().run(jinja_flow.parse(text))
    return go_flow.analyse(text)


def _windows(kind: Kind, text: str, verdict: Verdict) -> Verdict:
    """Prose-scan `text` in overlapping windows (bounded memory per step, every byte seen)."""
    start = 0
    while start < len(text):
        chunk = text[start : start + WINDOW]
        judge_text(kind, chunk, verdict, line=text.count("\n", 0, start) + 1 if start else 1)
        start += WINDOW - OVERLAP
    return verdict
