"""The standalone HTML report: one self-contained page (inline CSS, no scripts), autoescaped."""

from __future__ import annotations

import json
import re
from functools import cache
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
_WORD = re.compile(r"\S+")
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
    out = []
    for part in text_parts(str(value)):
        text = _visible(part.text)
        if part.kind == "code":
            out.append(Markup("<code>%s</code>") % text)
        elif part.kind == "block":
            out.append(Markup('<pre class="code">%s</pre>') % text)
        else:
            out.append(_whole_words(text))
    return Markup("").join(out)


def _whole_words(text: str) -> Markup:
    """Escapes prose, keeping short hyphenated or slashed words (dates, rule ids, addresses, paths) on
    one line: browsers would break them after each '-' or '/'. Long ones (digests, URLs) may still break."""
    out = []
    pos = 0
    for match in _WORD.finditer(text):
        out.append(escape(text[pos : match.start()]))
        word = match.group()
        if len(word) <= LONG_TOKEN and ("-" in word or "/" in word):
            out.append(Markup('<span class="w">%s</span>') % word)
        else:
            out.append(escape(word))
        pos = match.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out)


def _has_long_token(value: Any) -> bool:
    """Whether a cell holds a word too long for a column (a digest, a URL): only such cells may break
    inside words, so addresses, dates and rule ids stay whole."""
    return any(len(word) > LONG_TOKEN for word in str(value).split())


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
