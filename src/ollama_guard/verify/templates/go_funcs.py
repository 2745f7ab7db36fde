"""The functions a template can call in Ollama (Go's text/template built-ins plus Ollama's FuncMap), folded
on constants and followed for data flow; comparisons are checked for triggers."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ollama_guard.verify.templates.flow import MAX_FOLD, UNKNOWN, Gate, Val, join, taint
from ollama_guard.verify.templates.go_flow import ESCAPERS, fold_printf, go_str
from ollama_guard.verify.templates.jinja_ops import element, trigger

if TYPE_CHECKING:
    from ollama_guard.verify.templates.go_flow import GoFlow

COMPARE = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "lteq", "gt": "gt", "ge": "gteq"}
OLLAMA_FUNCS = frozenset({"json", "currentDate", "yesterdayDate", "toTypeScriptType"})
GO_BUILTINS = frozenset(
    {
        "and",
        "or",
        "not",
        "len",
        "index",
        "slice",
        "print",
        "printf",
        "println",
        "html",
        "js",
        "urlquery",
        "call",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
    }
)


def label(name: str, vals: list[Val]) -> str:
    def one(v: Val) -> str:
        if v.known:
            return json.dumps(v.const, ensure_ascii=False) if isinstance(v.const, str) else go_str(v.const)
        kinds = sorted(v.taint - {"root"})
        return "(" + "|".join(kinds) + ")" if kinds else "…"

    return f"{name} " + " ".join(one(v) for v in vals)


def call(flow: GoFlow, name: str, vals: list[Val], line: int) -> Val:
    if name in COMPARE:
        return _compare(name, vals, line)
    if name in ("and", "or"):
        result: Any = UNKNOWN
        if vals and all(v.known for v in vals):
            result = vals[-1].const
            for v in vals:
                if (name == "and" and not v.const) or (name == "or" and v.const):
                    result = v.const
                    break
        out = join(*vals)
        return Val(result, out.lits if name == "or" else (), out.taint, out.gates)
    if name == "not":
        inner = vals[0] if vals else Val()
        return Val(not inner.const if inner.known else UNKNOWN, (), inner.taint, inner.gates)
    if name == "len":
        inner = vals[0] if vals else Val()
        if inner.known and isinstance(inner.const, str | list | dict):
            return join(inner, result=len(inner.const))
        kinds = {"count"} if {"msgs", "count"} & inner.taint or not inner.taint else set(inner.taint)
        return Val(UNKNOWN, (), frozenset(kinds), inner.gates)
    if name == "index":
        return _index(vals)
    if name == "slice":
        return _slice(vals)
    if name in ("print", "println", "printf"):
        return _print(name, vals)
    if name in ESCAPERS:
        text = _print("print", vals)
        if text.known and isinstance(text.const, str):
            return join(*vals, result=ESCAPERS[name](text.const))
        return text
    if name == "json":
        inner = vals[0] if vals else Val()
        if inner.known:
            return join(inner, result=json.dumps(inner.const, ensure_ascii=False, separators=(",", ":")))
        return inner
    if name in ("currentDate", "yesterdayDate"):
        return taint("date")
    if name == "toTypeScriptType":
        return taint("tools")
    if name == "call":
        flow.out.problem("go-call", "high", line, "`call` invokes a function value; Ollama passes none")
        return join(*vals)
    flow.out.problem(
        "go-unknown-function",
        "medium",
        line,
        f"function {name!r} is not defined in Ollama's templates (the template fails to load)",
    )
    # other engines' spellings (contains, hasPrefix…): a comparison of content with a word is still a trigger
    return _compare("eq", vals, line, shown=name) if len(vals) >= 2 else join(*vals)


def _compare(name: str, vals: list[Val], line: int, shown: str = "") -> Val:
    if len(vals) < 2:
        return join(*vals)
    gates: set[Gate] = set()
    text = label(shown or name, vals)
    first = vals[0]
    for other in vals[1:]:  # eq a b c: a == b || a == c
        gate = trigger(first, other, COMPARE[name], text, line)
        if gate is not None:
            gates.add(gate)
        elif "tools" in first.taint or "tools" in other.taint:
            gates.add(Gate("tools", text, line))
    result: Any = UNKNOWN
    if all(v.known for v in vals):
        try:
            a = first.const
            result = {
                "eq": lambda: any(a == v.const for v in vals[1:]),
                "ne": lambda: a != vals[1].const,
                "lt": lambda: a < vals[1].const,
                "le": lambda: a <= vals[1].const,
                "gt": lambda: a > vals[1].const,
                "ge": lambda: a >= vals[1].const,
            }[name]()
        except TypeError:
            result = UNKNOWN
    out = join(*vals)
    return Val(result, (), out.taint - {"content", "msgs"}, out.gates | frozenset(gates))


def _index(vals: list[Val]) -> Val:
    if not vals:
        return Val()
    base = vals[0]
    for key in vals[1:]:
        if base.known and key.known:
            try:
                base = join(base, key, result=base.const[key.const])
                continue
            except (KeyError, IndexError, TypeError):
                return Val()
        if base.known and isinstance(base.const, dict) and "content" in key.taint:
            gate = Gate("content", label("index", [base, key]), 0)
            base = Val(UNKNOWN, base.lits, frozenset(), base.gates | key.gates | {gate})
            continue
        base = join(element(base), key) if key.taint else element(base)
    return base


def _slice(vals: list[Val]) -> Val:
    if not vals:
        return Val()
    base = vals[0]
    if base.known and all(v.known for v in vals) and isinstance(base.const, str | list):
        try:
            bounds = [int(v.const) for v in vals[1:3]]
            return join(*vals, result=base.const[slice(*bounds)] if bounds else base.const)
        except (TypeError, ValueError):
            return Val()
    return Val(UNKNOWN, base.lits, base.taint, join(*vals).gates)


def _print(name: str, vals: list[Val]) -> Val:
    if all(v.known for v in vals):
        consts = [v.const for v in vals]
        if name == "printf":
            if not consts or not isinstance(consts[0], str):
                return join(*vals)
            result = fold_printf(consts[0], consts[1:])
        elif name == "println":
            result = " ".join(go_str(c) for c in consts) + "\n"
        else:  # Sprint: a space between operands when neither is a string
            parts: list[str] = []
            for i, c in enumerate(consts):
                if i and not isinstance(c, str) and not isinstance(consts[i - 1], str):
                    parts.append(" ")
                parts.append(go_str(c))
            result = "".join(parts)
        if result is not UNKNOWN and len(result) <= MAX_FOLD:
            return join(*vals, result=result)
    if name == "printf" and vals and vals[0].known and isinstance(vals[0].const, str):
        pieces = [p for p in vals[0].const.replace("%%", "%").split("%") if p]
        rest = join(*vals[1:])
        lits = tuple(pieces[:1]) + rest.lits + tuple(p[1:] for p in pieces[1:] if len(p) > 1)
        return Val(UNKNOWN, lits[:64], rest.taint, rest.gates)
    lits: list[str] = []
    for v in vals:
        lits.extend([go_str(v.const)] if v.known else list(v.lits))
    out = join(*vals)
    return Val(UNKNOWN, tuple(lits)[:64], out.taint, out.gates)
