"""The standalone HTML report: one self-contained page (inline CSS, no scripts), autoescaped."""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from ollama_guard.findings import Report
from ollama_guard.reports.common import (
    TOOL_NAME,
    TOOL_VERSION,
    finished_at,
    human_key,
    human_value,
    iso_time,
    jsonable,
    severity_order,
    text_parts,
)

# C0/C1 control characters (bar tab and newline) and DEL: a hostile server's strings must not carry
# terminal escapes or invisible bytes into a page someone may later `cat` or paste.
LONG_TOKEN = 32
# a whole word of at most LONG_TOKEN characters holding a '-' or '/'; a word longer than LONG_TOKEN
_KEEP_WHOLE = re.compile(rf"(?<!\S)(?=[^\s/-]*[/-])\S{{1,{LONG_TOKEN}}}(?!\S)")
_LONG_WORD = re.compile(rf"\S{{{LONG_TOKEN + 1}}}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(value: Any) -> Any:
    """Jinja `finalize`: shows control characters as \\xNN text instead of passing them through.

    Markup (a macro's output, the `code` filter's) was built from values that already went through this
    hook and autoescaping: it passes unchanged (turning it back into a plain string would escape the
    page's own tags, which showed every section as raw `<section><table>` text).
    """
    if isinstance(value, Markup):
        return value
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return value


def _code(value: Any) -> Markup:
    """Escapes a finding text and shows its `code spans` and ```fenced blocks``` as code elements."""
    return _code_text(str(value))


@lru_cache(maxsize=16384)  # table cells repeat (classes, dates, statuses): each distinct text is done once
def _code_text(text: str) -> Markup:
    if "`" not in text:  # most cells: one escape and one substitution
        return _whole_words(_visible(text))
    out = []
    for part in text_parts(text):
        piece = _visible(part.text)
        if part.kind == "code":
            out.append(Markup("<code>%s</code>") % piece)
        elif part.kind == "block":
            out.append(Markup('<pre class="code">%s</pre>') % piece)
        else:
            out.append(_whole_words(piece))
    return Markup("").join(out)


def _whole_words(text: str) -> Markup:
    """Escapes prose, keeping short hyphenated or slashed words (dates, rule ids, addresses, paths) on
    one line: browsers would break them after each '-' or '/'. Long ones (digests, URLs) may still break."""
    escaped = str(escape(text))
    if "-" not in escaped and "/" not in escaped:
        return Markup(escaped)  # noqa: S704 - escaped on the line above
    # the pattern only wraps words of the escaped text (no tags in it, at most entities such as &lt;)
    return Markup(_KEEP_WHOLE.sub(r'<span class="w">\g<0></span>', escaped))  # noqa: S704


def _has_long_token(value: Any) -> bool:
    """Whether a cell holds a word too long for a column (a digest, a URL): only such cells may break
    inside words, so addresses, dates and rule ids stay whole."""
    return _LONG_WORD.search(str(value)) is not None


@cache
def _environment() -> Environment:
    # autoescape is ON for everything: finding text comes from scanned hosts and model files.
    env = Environment(
        loader=PackageLoader("ollama_guard.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_visible,
    )
    env.filters["code"] = _code
    env.tests["long_text"] = _has_long_token
    return env


def render_html(report: Report) -> str:
    counts = report.counts()
    findings = [
        {
            "finding": f,
            "evidence": json.dumps(jsonable(f.evidence), indent=2, ensure_ascii=False, sort_keys=True)
            if f.evidence
            else "",
        }
        for f in report.sorted_findings()
    ]
    summary_extra = [(human_key(k), human_value(v)) for k, v in report.summary.items()]
    template = _environment().get_template("report.html.j2")
    return template.render(
        tool_name=TOOL_NAME,
        tool_version=TOOL_VERSION,
        command=report.command,
        started_at=iso_time(report.started_at),
        finished_at=iso_time(finished_at(report)),
        total=len(report.findings),
        counts=[(s.value, counts[s.value]) for s in severity_order()],
        summary_extra=summary_extra,
        findings=findings,
        lead_sections=report.lead_sections(),
        sections=report.trailing_sections(),
    )
