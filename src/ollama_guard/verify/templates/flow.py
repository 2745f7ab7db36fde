"""The abstract values both template analysers (Jinja and Go) compute: what a template expression may hold
(a constant, the string literals that may flow into it, where its data comes from) and under which
trigger conditions it was produced; what the template emits into the prompt and under which conditions.

Sources of data ("taints"): `msgs` the message list, `msg` one message, `content` message text,
`part` a content part (image/text dict), `role`, `tools`, `count` a message count or loop index,
`date` the current date/time. A condition is a *trigger* when it compares message content with a
word-bearing constant, or tests a date, or compares a count with a constant of 3 or more; text emitted
under a trigger only appears when the trigger fires."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ollama_guard.verify.templates.prose import strip_structure

UNKNOWN: Any = type("Unknown", (), {"__repr__": lambda self: "?"})()

# keys of content parts (OpenAI/HF message format): testing for them is structure, not a trigger
PART_KEYS = frozenset(
    {"image", "image_url", "text", "type", "video", "video_url", "audio", "input_audio", "url"}
)
CONTENT_KEYS = frozenset(
    {
        "content",
        "text",
        "reasoning_content",
        "thinking",
        "reasoning",
        "Content",
        "Thinking",
        "Prompt",
        "Response",
        "Suffix",
    }
)
HARD_KINDS = frozenset({"content", "date", "count"})
SOFT_KINDS = frozenset({"tool-content"})  # content of tool results: agent frameworks react to it in templates
TOOL_ROLES = frozenset({"tool", "ipython", "function", "tool_response", "observation"})
STANDARD_ROLES = frozenset(
    {
        "user",
        "assistant",
        "system",
        "tool",
        "ipython",
        "function",
        "developer",
        "model",
        "human",
        "gpt",
        "bot",
        "tool_response",
        "tool_call",
        "observation",
    }
)
_COMMAND = re.compile(r"(?<!\w)/[a-z_]+")
_WORD = re.compile(r"[^\W\d_]{3,}")


@dataclass(frozen=True)
class Gate:
    kind: str  # content | date | count | tools
    text: str  # the condition, readable
    line: int
    words: tuple[str, ...] = ()  # content gates: the word-bearing constants the content is compared with
    negated: bool = False  # `not in` / `!=`: the text sits where the word is absent (or in its else branch)


@dataclass(frozen=True)
class Val:
    const: Any = UNKNOWN
    lits: tuple[str, ...] = ()
    taint: frozenset[str] = frozenset()
    gates: frozenset[Gate] = frozenset()

    @property
    def known(self) -> bool:
        return self.const is not UNKNOWN

    def with_gates(self, gates: frozenset[Gate]) -> Val:
        return Val(self.const, self.lits, self.taint, self.gates | gates) if gates else self


def const(value: Any) -> Val:
    return Val(value, (value,) if isinstance(value, str) else _str_items(value))


def _str_items(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(x for x in value if isinstance(x, str))[:64]
    if isinstance(value, dict):
        return tuple(x for x in list(value.keys()) + list(value.values()) if isinstance(x, str))[:64]
    return ()


def taint(*kinds: str) -> Val:
    return Val(taint=frozenset(kinds))


def join(*vals: Val, result: Any = UNKNOWN) -> Val:
    """A value computed from `vals`: their literals, taints and gates together."""
    lits: list[str] = []
    for v in vals:
        lits.extend(v.lits)
    taints: frozenset[str] = frozenset().union(*(v.taint for v in vals)) if vals else frozenset()
    gates: frozenset[Gate] = frozenset().union(*(v.gates for v in vals)) if vals else frozenset()
    if result is not UNKNOWN:
        return Val(result, (result,) if isinstance(result, str) else _str_items(result), taints, gates)
    return Val(UNKNOWN, tuple(dict.fromkeys(lits))[:64], taints, gates)


def merge(a: Val, b: Val) -> Val:
    """The value of a variable after two branches assigned `a` and `b`."""
    if a is b:
        return a
    same = a.known and b.known and type(a.const) is type(b.const) and a.const == b.const
    return Val(
        a.const if same else UNKNOWN,
        tuple(dict.fromkeys(a.lits + b.lits))[:64],
        a.taint | b.taint,
        a.gates | b.gates,
    )


def bearing_words(val: Val) -> tuple[str, ...]:
    """The literals of `val` that hold a word (see `word_bearing`)."""
    return tuple(lit for lit in val.lits if word_bearing(Val(lits=(lit,))))[:16]


def word_bearing(val: Val) -> bool:
    """Does the value hold a word (not a special token, tag, `/command` or content-part key)?"""
    if "msgs" in val.taint or "msg" in val.taint or "content" in val.taint:
        return False
    for lit in val.lits:
        text = _COMMAND.sub(" ", strip_structure(lit))
        if lit.strip() in PART_KEYS:
            continue
        if _WORD.search(text):
            return True
    return False


# A tool result tested for its own failure ('"error": true', 'traceback', 'command not found'): agent
# templates add retry guidance after failed calls. Such a trigger fires in every test with a failing tool,
# so it hides nothing, and the tool output it looks at is already in the prompt.
_FAILURE = re.compile(
    r"\b(?:errors?|errno|exceptions?|traceback|fail(?:s|ed|ure)?|invalid|denied|refused|timed\s*out|timeout"
    r"|fatal|panic|unsuccessful|not\s+found|no\s+such|cannot|unable|could\s+not)\b",
    re.IGNORECASE,
)
_STATUS_WORDS = frozenset(
    "error errors errno exception exceptions traceback fail fails failed failure invalid denied refused "
    "timed timeout out fatal panic unsuccessful not found no such cannot unable could to command status "
    "syntax true false code exit permission access file directory module named key value type name index "
    "attribute runtime http request response connection tool call returned result unknown missing bad the "
    "a an is was has been did does with of for in on at by recent most last".split()
)


def status_gated(gates: frozenset[Gate]) -> bool:
    """Is text under these tool-content gates guidance after a failed tool call: at least one test of the
    result for a failure, every other one a failure test too or an exclusion (`'took ' not in content`)?"""
    return any(failure_check(g) for g in gates) and all(failure_check(g) or g.negated for g in gates)


def failure_check(gate: Gate) -> bool:
    """Is this a tool result tested for a failure (every compared constant an error/status phrase)?"""
    if gate.kind != "tool-content" or gate.negated or not gate.words:
        return False
    for lit in gate.words:
        words = re.findall(r"[^\W\d_]+", lit.lower())
        if not words or not _FAILURE.search(lit) or any(w not in _STATUS_WORDS for w in words):
            return False
    return True


def inserts_words(old: Val, new: Val, more: int = 3) -> bool:
    """Does replacing `old` by `new` add more than `more` words (an instruction, not a respelling)?"""
    count = lambda v: sum(len(_WORD.findall(strip_structure(lit))) for lit in v.lits)  # noqa: E731
    return not new.lits or count(new) - count(old) > more


def is_content(val: Val) -> bool:
    return "content" in val.taint


def system_text(val: Val) -> Val:
    """A value taken from the system message: the deployer's configuration, not a trigger source."""
    if "content" not in val.taint:
        return val
    return Val(val.const, val.lits, (val.taint - {"content"}) | {"syscontent"}, val.gates)


def small_count(val: Val) -> bool:
    """0, 1, 2 and -1: first/last/alternation idioms, not a turn-count bomb."""
    return val.known and isinstance(val.const, int | float) and -1 <= val.const <= 2


@dataclass
class Emit:
    text: str
    line: int
    gates: frozenset[Gate]


@dataclass
class Problem:
    """Something found by the tree walk itself (not by judging prose)."""

    id: str
    severity: str
    line: int
    detail: str


@dataclass
class Analysis:
    emits: list[Emit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    gates_seen: list[Gate] = field(default_factory=list)
    joinable: bool = False
    dynamic: frozenset[str] = frozenset()

    def emit(self, text: str, line: int, gates: frozenset[Gate]) -> None:
        """Records emitted text; adjacent constant text under the same gates is joined (`ig{# #}nore`)."""
        if not text:
            return
        last = self.emits[-1] if self.emits else None
        if self.joinable and last is not None and last.gates == gates and len(last.text) < 65536:
            last.text += text
        else:
            self.emits.append(Emit(text, line, gates))
        self.joinable = True

    def note(self, gates: frozenset[Gate], *, control: bool = False, tool: bool = False) -> frozenset[Gate]:
        """See `_note`; `control` also covers branches for the system message (the deployer's text)."""
        return self._note(gates, control=control, tool=tool)

    def _note(self, gates: frozenset[Gate], *, control: bool = False, tool: bool = False) -> frozenset[Gate]:
        """Gates of a condition, recorded; inside a branch for a control role (Granite's `control` messages
        that switch features on), content comparisons are settings, not user-text triggers; inside a branch
        for tool results they are `tool-content` triggers (judged medium, not high)."""
        if control or tool:
            kind = "control" if control else "tool-content"
            gates = frozenset(
                Gate(kind, g.text, g.line, g.words, g.negated) if g.kind == "content" else g for g in gates
            )
        for gate in gates:
            if gate not in self.gates_seen and len(self.gates_seen) < 100:
                self.gates_seen.append(gate)
        return gates

    def gap(self, kinds: frozenset[str] = frozenset()) -> None:
        """Dynamic text (message content) was emitted: what follows is not joined to what came before;
        `kinds` (where that text comes from) is remembered for a capture (`{% set %}` block, macro call)."""
        self.joinable = False
        self.dynamic |= kinds

    def problem(self, id: str, severity: str, line: int, detail: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(Problem(id, severity, line, detail))


SAFE_STR_METHODS = frozenset(
    {
        "lower",
        "upper",
        "title",
        "capitalize",
        "strip",
        "lstrip",
        "rstrip",
        "replace",
        "split",
        "rsplit",
        "join",
        "startswith",
        "endswith",
        "find",
        "rfind",
        "count",
        "index",
        "zfill",
        "center",
        "ljust",
        "rjust",
        "swapcase",
        "casefold",
        "splitlines",
        "removeprefix",
        "removesuffix",
        "partition",
    }
)
MATCH_METHODS = frozenset(
    {
        "startswith",
        "endswith",
        "find",
        "rfind",
        "count",
        "index",
        "rindex",
        "__contains__",
        "search",
        "match",
        "split",
        "partition",
    }
)
MAX_FOLD = 1 << 20


def fold_method(obj: Any, name: str, args: list[Any]) -> Any:
    """A str/list/dict method applied to constants, or UNKNOWN (never anything but pure methods)."""
    try:
        if isinstance(obj, str) and name in SAFE_STR_METHODS:
            if name in ("center", "ljust", "rjust", "zfill") and args and int(args[0]) > MAX_FOLD:
                return UNKNOWN
            result = getattr(obj, name)(*args)
        elif isinstance(obj, dict) and name in ("get", "keys", "values", "items"):
            result = getattr(obj, name)(*args)
            result = list(result) if name != "get" else result
        else:
            return UNKNOWN
    except (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError):
        return UNKNOWN
    if isinstance(result, str) and len(result) > MAX_FOLD:
        return UNKNOWN
    return list(result) if isinstance(result, tuple) else result
