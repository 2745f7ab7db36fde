"""From what a template emits (and under which conditions) to evidence with a severity.

* Text gated by a trigger (message content compared with a word, a date, a turn count): prose under it
  is high — it only reaches the model when the trigger fires, which is how backdoors stay invisible in
  ordinary tests; markup alone under a trigger is medium.
* Other emitted text is judged as prose (`prose.judge`): overriding, concealment, exfiltration, code,
  steering are high; links and encoded text medium; disguises (invisible characters, look-alike letters,
  comments inside words) high.
* Problems found by the tree walk (sandbox escapes, dynamic attribute names, includes) keep their own
  severity."""

from __future__ import annotations

from dataclasses import dataclass, field

from ollama_guard.findings import Severity
from ollama_guard.verify.templates import prose
from ollama_guard.verify.templates.flow import HARD_KINDS, SOFT_KINDS, Analysis, Gate, status_gated
from ollama_guard.verify.templates.normalise import visible

PAYLOAD_CHARS = 400
LONG_RUN = 16 * 1024


@dataclass
class Evidence:
    id: str
    severity: Severity
    line: int
    column: int
    payload: str
    trigger: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "severity": self.severity.value,
            "line": self.line,
            "column": self.column,
            "payload": self.payload,
        }
        if self.trigger:
            out["trigger"] = self.trigger
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Verdict:
    kind: str
    evidence: list[Evidence] = field(default_factory=list)
    family: str | None = None
    diff: list[str] = field(default_factory=list)

    @property
    def severity(self) -> Severity | None:
        if not self.evidence:
            return None
        return max((e.severity for e in self.evidence), key=lambda s: s.rank)

    def add(self, item: Evidence) -> None:
        key = (item.id, item.payload, item.trigger)
        if all((e.id, e.payload, e.trigger) != key for e in self.evidence) and len(self.evidence) < 40:
            self.evidence.append(item)


def condensed(text: str) -> str:
    """A long run of emitted text with its repeated lines dropped after the first LONG_RUN characters: a
    recursive macro (functionary's schema printer) expands a 13 KB template into megabytes of the same
    few hundred lines. The beginning is judged as it is and every distinct line at least once."""
    if len(text) <= LONG_RUN:
        return text
    head = text[:LONG_RUN]
    seen = set(head.split("\n"))
    tail = []
    for line in text[LONG_RUN:].split("\n"):
        if line not in seen:
            seen.add(line)
            tail.append(line)
    return head + "\n" + "\n".join(tail)


def describe(gates: frozenset[Gate] | list[Gate]) -> str:
    names = {
        "content": "message content",
        "date": "the date",
        "count": "the number of messages",
        "tools": "the tools offered",
        "tool-name": "the name of a tool offered",
        "tool-content": "a tool result's content",
    }
    parts = sorted({f"{names.get(g.kind, g.kind)}: {g.text} (line {g.line})" for g in gates})
    return "; ".join(parts)


def position(source: str, line: int, payload: str) -> tuple[int, int]:
    """Line and column of the payload in the source, near `line` when it is spelt out there."""
    probe = payload.strip()[:24]
    if probe:
        at = source.find(probe)
        if at >= 0:
            before = source[:at]
            return before.count("\n") + 1, at - (before.rfind("\n") + 1) + 1
    return max(line, 1), 1


def judge_analysis(kind: str, source: str, analysis: Analysis, verdict: Verdict | None = None) -> Verdict:
    verdict = verdict or Verdict(kind)
    for problem in analysis.problems:
        verdict.add(Evidence(problem.id, Severity(problem.severity), problem.line, 1, "", "", problem.detail))
    done: set[tuple[str, frozenset[Gate]]] = set()
    for emit in analysis.emits:
        if (emit.text, emit.gates) in done:  # the same text under the same conditions: judged once
            continue
        done.add((emit.text, emit.gates))
        hard = frozenset(g for g in emit.gates if g.kind in HARD_KINDS)
        soft = frozenset(g for g in emit.gates if g.kind in SOFT_KINDS)
        judged = prose.judge(condensed(emit.text))
        if not judged.prose.strip() and not hard:
            continue
        if soft and not hard and judged.words >= 1:
            status = status_gated(soft)
            verdict.add(
                Evidence(
                    "tool-status-text" if status else "triggered-text",
                    Severity.INFO if status else Severity.MEDIUM,
                    *position(source, emit.line, emit.text),
                    visible(judged.prose[:PAYLOAD_CHARS]),
                    describe(soft),
                    "guidance added after a tool result that reports a failure (judged as prose only)"
                    if status
                    else "text that reaches the prompt only when a tool result contains the words",
                )
            )
        line, column = position(source, emit.line, emit.text)
        payload = visible(judged.prose[:PAYLOAD_CHARS])
        if hard and judged.words >= 1:
            verdict.add(
                Evidence(
                    "triggered-text",
                    Severity.HIGH,
                    line,
                    column,
                    payload,
                    describe(hard),
                    "text that reaches the prompt only when the condition holds",
                )
            )
        elif hard and emit.text.strip():
            verdict.add(
                Evidence(
                    "triggered-markup",
                    Severity.MEDIUM,
                    line,
                    column,
                    visible(emit.text.strip()[:PAYLOAD_CHARS]),
                    describe(hard),
                    "special tokens or markup that appear only when the condition holds",
                )
            )
        for hit in judged.hits:
            verdict.add(
                Evidence(
                    hit.id,
                    hit.severity,
                    line,
                    column,
                    payload,
                    describe(emit.gates),
                    _detail(hit),
                )
            )
    return verdict


def _detail(hit: prose.ProseHit) -> str:
    if hit.link:
        return f"{visible(hit.link)} in: {visible(hit.matched)}"
    return f"matched: {visible(hit.matched)}"


def judge_text(kind: str, text: str, verdict: Verdict | None = None, line: int = 1) -> Verdict:
    """Plain text (a system prompt, a Modelfile parameter, a template that does not parse) as prose."""
    verdict = verdict or Verdict(kind)
    judged = prose.judge(text, structural=kind != "system")
    for hit in judged.hits:
        at = judged.prose.find(hit.matched[:24]) if hit.matched else -1
        snippet = judged.prose[max(0, at - 80) : at + 200] if at >= 0 else judged.prose[:PAYLOAD_CHARS]
        verdict.add(
            Evidence(hit.id, hit.severity, line, 1, visible(snippet), "", _detail(hit))
        )
    return verdict
