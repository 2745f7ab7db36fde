"""Jinja filters and `str.format` for the data-flow walk: folded on constants (the pure filters only),
followed for data flow otherwise; `attr()` with an underscore name or a computed name is reported."""

from __future__ import annotations

import json
import string
from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from ollama_guard.verify.templates.flow import (
    CONTENT_KEYS,
    MAX_FOLD,
    UNKNOWN,
    Gate,
    Val,
    inserts_words,
    is_content,
    join,
    word_bearing,
)
from ollama_guard.verify.templates.jinja_ops import UNSAFE_ATTRS, member, text

if TYPE_CHECKING:
    from ollama_guard.verify.templates.jinja_flow import JinjaFlow


def format_call(flow: JinjaFlow, fmt: Val, args: list[Val], kwargs: dict[str, Val], line: int) -> Val:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(fmt.const) if f]
    except ValueError:
        return join(fmt, *args)
    if any("_" in f or "." in f or "[" in f for f in fields):
        flow.out.problem(
            "jinja-sandbox-escape", "critical", line, f"str.format fields {fields!r} reach into objects"
        )
        return join(fmt, *args)
    if all(a.known for a in args) and all(v.known for v in kwargs.values()):
        try:
            return join(
                fmt,
                *args,
                result=fmt.const.format(*(a.const for a in args), **{k: v.const for k, v in kwargs.items()}),
            )
        except (IndexError, KeyError, ValueError):
            pass
    return join(fmt, *args, *kwargs.values())


FILTERS: dict[str, Any] = {
    "lower": lambda v: v.lower(),
    "upper": lambda v: v.upper(),
    "title": lambda v: v.title(),
    "capitalize": lambda v: v.capitalize(),
    "trim": lambda v, chars=None: v.strip(chars),
    "reverse": lambda v: v[::-1],
    "string": str,
    "list": list,
    "length": len,
    "count": len,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "join": lambda v, sep="": sep.join(map(str, v)),
    "replace": lambda v, old, new, count=None: v.replace(old, new, -1 if count is None else count),
    "tojson": lambda v, indent=None: json.dumps(v, indent=indent),
    "int": int,
    "float": float,
    "default": lambda v, d=None, b=False: v,
    "d": lambda v, d=None, b=False: v,
    "e": lambda v: v,
    "escape": lambda v: v,
    "safe": lambda v: v,
    "unique": lambda v: list(dict.fromkeys(v)),
    "sort": sorted,
    "abs": abs,
    "format": lambda v, *a: v % a,
    "items": lambda v: list(v.items()),
    "center": lambda v, w=80: v.center(min(w, MAX_FOLD)),
    "indent": lambda v, *a: v,
}


SELECTORS = frozenset({"selectattr", "rejectattr", "select", "reject", "map", "groupby", "batch", "slice"})


def filter_(flow: JinjaFlow, node: nodes.Filter, env: dict[str, Val]) -> Val:
    base = flow.ev(node.node, env) if node.node is not None else Val()
    args = [flow.ev(a, env) for a in node.args]
    name = node.name
    if name == "attr":
        key = args[0] if args else Val()
        if not (key.known and isinstance(key.const, str)):
            flow.out.problem(
                "jinja-dynamic-attribute",
                "high",
                node.lineno,
                f"attribute name computed at render time: {text(node)}",
            )
            return join(base, key)
        if key.const.startswith("_") or key.const in UNSAFE_ATTRS:
            flow.out.problem(
                "jinja-sandbox-escape",
                "critical",
                node.lineno,
                f"attr({key.const!r}): Python object traversal (CVE-2024-34359)",
            )
        return member(base, key.const)
    gates: set[Gate] = set()
    if name in ("selectattr", "rejectattr", "select", "reject", "replace", "map"):
        attr = args[0] if args else Val()
        on_content = is_content(base) or (
            attr.known
            and isinstance(attr.const, str)
            and attr.const.split(".")[-1] in CONTENT_KEYS
            and ("msgs" in base.taint or "msg" in base.taint)
        )
        # what the content is compared with: the test's arguments, not the test's name
        # (selectattr('type', 'equalto', 'text'), select('equalto', 'x')) nor map's filter name
        tests = {"selectattr": args[2:], "rejectattr": args[2:], "select": args[1:], "reject": args[1:],
                 "replace": args[:1], "map": []}[name]  # fmt: skip
        respelling = name == "replace" and len(args) > 1 and not inserts_words(args[0], args[1])
        if on_content and not respelling and any(word_bearing(a) for a in tests):
            gates.add(Gate("content", text(node), node.lineno))
        if name == "map" and attr.known and attr.const in CONTENT_KEYS and "msgs" in base.taint:
            return Val(UNKNOWN, (), frozenset({"content"}), base.gates)
    if base.known and all(a.known for a in args) and name in FILTERS:
        try:
            folded = FILTERS[name](base.const, *(a.const for a in args))
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError):
            folded = UNKNOWN
        if not (isinstance(folded, str) and len(folded) > MAX_FOLD):
            return join(base, *args, result=folded)
    if name in ("length", "count") and ({"msgs", "loop"} & base.taint or "count" in base.taint):
        return Val(taint=frozenset({"count"}), gates=base.gates)
    if name == "replace" and is_content(base):
        return Val(
            UNKNOWN,
            tuple(lit for a in args[1:2] for lit in a.lits),
            base.taint,
            base.gates | frozenset(gates),
        )
    if name in SELECTORS:  # the result is a part of `base`: the selector arguments are not data
        return Val(UNKNOWN, base.lits, base.taint, base.gates | frozenset(gates))
    out = join(base, *args)
    if name in ("default", "d") and not base.known:
        return out.with_gates(frozenset(gates))
    return Val(out.const, out.lits, out.taint, out.gates | frozenset(gates))
