"""Jinja expressions for the data-flow walk: member access, calls, filters, tests, comparisons and
operators, each folding constants where it can and recognising trigger conditions where data from the
conversation meets a word-bearing constant."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from ollama_guard.verify.templates.flow import (
    CONTENT_KEYS,
    MATCH_METHODS,
    MAX_FOLD,
    STANDARD_ROLES,
    TOOL_ROLES,
    UNKNOWN,
    Gate,
    Val,
    bearing_words,
    const,
    fold_method,
    inserts_words,
    is_content,
    join,
    small_count,
    taint,
    word_bearing,
)

if TYPE_CHECKING:
    from ollama_guard.verify.templates.jinja_flow import JinjaFlow

UNSAFE_ATTRS = frozenset({"mro", "func_globals", "f_globals", "gi_frame", "cr_frame", "tb_frame", "f_back"})
TYPE_TESTS = frozenset(
    {
        "defined",
        "undefined",
        "none",
        "string",
        "mapping",
        "iterable",
        "sequence",
        "number",
        "integer",
        "float",
        "boolean",
        "true",
        "false",
        "callable",
        "escaped",
        "filter",
        "test",
        "lower",
        "upper",
        "odd",
        "even",
        "divisibleby",
    }
)
LOOP_COUNTS = frozenset({"index", "index0", "revindex", "revindex0", "length", "depth", "depth0"})
MSG_META = {
    "role": "role",
    "tool_calls": "toolcalls",
    "name": "role",
    "tool_call_id": "role",
    "tool_responses": "toolresult",
}


def element(seq: Val) -> Val:
    """One item of a sequence that is iterated or indexed."""
    kinds = set(seq.taint) - {"msgs", "content"}
    if "msgs" in seq.taint:
        kinds.add("msg")
    if "content" in seq.taint:
        kinds.add("part")
    if seq.known and isinstance(seq.const, list) and len(seq.const) == 1:
        return Val(seq.const[0], seq.lits, frozenset(kinds), seq.gates)
    return Val(UNKNOWN, seq.lits, frozenset(kinds), seq.gates)


def member(base: Val, attr: str) -> Val:
    if base.known and isinstance(base.const, dict):
        value = base.const.get(attr, UNKNOWN)
        if value is not UNKNOWN:
            return Val(value, const(value).lits, base.taint, base.gates)
    kinds: set[str] = set()
    t = base.taint
    if "msg" in t:
        kinds.add("content" if attr in CONTENT_KEYS else MSG_META.get(attr, "msgmeta"))
    if "part" in t:
        kinds.add("content" if attr in ("text", "content") else "parttype")
    if "loop" in t:
        kinds.add("count" if attr in LOOP_COUNTS else "position")
    if "toolresult" in t:
        kinds.add("toolcontent" if attr in ("response", "content", "output", "result") else "toolresult")
    if "msgs" in t and attr not in ("length",):
        kinds.add("msgs")
    for kind in ("content", "tools", "date", "docs", "count", "toolcontent"):
        if kind in t:
            kinds.add(kind)
    return Val(UNKNOWN, (), frozenset(kinds), base.gates)


def text(node: nodes.Node | None) -> str:
    """An expression as Jinja source, for evidence."""
    if node is None:
        return ""
    if isinstance(node, nodes.Const):
        return repr(node.value)
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{text(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return f"{text(node.node)}[{text(node.arg)}]"
    if isinstance(node, nodes.Slice):
        return f"{text(node.start)}:{text(node.stop)}" + (f":{text(node.step)}" if node.step else "")
    if isinstance(node, nodes.Call):
        return f"{text(node.node)}({', '.join(text(a) for a in node.args)})"
    if isinstance(node, nodes.Filter | nodes.Test):
        sep = " | " if isinstance(node, nodes.Filter) else " is "
        args = f"({', '.join(text(a) for a in node.args)})" if node.args else ""
        return f"{text(node.node)}{sep}{node.name}{args}"
    if isinstance(node, nodes.Compare):
        ops = {
            "eq": "==",
            "ne": "!=",
            "lt": "<",
            "lteq": "<=",
            "gt": ">",
            "gteq": ">=",
            "in": "in",
            "notin": "not in",
        }
        return text(node.expr) + "".join(f" {ops.get(o.op, o.op)} {text(o.expr)}" for o in node.ops)
    if isinstance(node, nodes.BinExpr):
        return f"({text(node.left)} {node.operator} {text(node.right)})"
    if isinstance(node, nodes.Not):
        return f"not {text(node.node)}"
    if isinstance(node, nodes.List | nodes.Tuple):
        return "[" + ", ".join(text(i) for i in node.items) + "]"
    if isinstance(node, nodes.Concat):
        return " ~ ".join(text(n) for n in node.nodes)
    if isinstance(node, nodes.NSRef):
        return f"{node.name}.{node.attr}"
    return "…"


def trigger(left: Val, right: Val, op: str, label: str, line: int) -> Gate | None:
    """The trigger a comparison of `left` with `right` makes, if any (`label`: the condition as written)."""
    negated = op in ("notin", "ne")
    if is_content(left) and word_bearing(right):
        return Gate("content", label, line, bearing_words(right), negated)
    if is_content(right) and word_bearing(left):
        return Gate("content", label, line, bearing_words(left), negated)
    if "toolcontent" in left.taint and word_bearing(right):
        return Gate("tool-content", label, line, bearing_words(right), negated)
    if "toolcontent" in right.taint and word_bearing(left):
        return Gate("tool-content", label, line, bearing_words(left), negated)
    if "date" in left.taint or "date" in right.taint:
        return Gate("date", label, line)
    if "countmod" in left.taint or "countmod" in right.taint:
        return Gate("count", label, line)
    for a, b in ((left, right), (right, left)):
        if "count" in a.taint and b.known and isinstance(b.const, int | float) and not small_count(b):
            return Gate("count", label, line)
        if "role" in a.taint and b.known and isinstance(b.const, str) and b.const.strip():
            if b.const.strip().lower() not in STANDARD_ROLES:
                return Gate("control-role", label, line)
            if op == "eq" and b.const.strip().lower() in ("system", "developer"):
                return Gate("system-role", label, line)
            if op in ("eq", "ne") and b.const.strip().lower() in TOOL_ROLES:
                return Gate("tool-role" if op == "eq" else "not-tool-role", label, line)
    if (
        op in ("eq", "ne")
        and ("tools" in left.taint) != ("tools" in right.taint)
        and (word_bearing(left) or word_bearing(right))
    ):
        return Gate("tool-name", label, line)
    return None


def compare(flow: JinjaFlow, node: nodes.Compare, env: dict[str, Val]) -> Val:
    left = flow.ev(node.expr, env)
    vals = [left]
    gates: set[Gate] = set()
    result: Any = UNKNOWN
    for op in node.ops:
        right = flow.ev(op.expr, env)
        vals.append(right)
        gate = trigger(left, right, op.op, text(node), node.lineno)
        if gate is not None:
            gates.add(gate)
        elif "tools" in left.taint or "tools" in right.taint:
            gates.add(Gate("tools", text(node), node.lineno))
        if left.known and right.known and len(node.ops) == 1:
            result = _fold_compare(op.op, left.const, right.const)
        left = right
    out = join(*vals, result=result)
    return Val(out.const, (), out.taint - {"content", "msgs"}, out.gates | frozenset(gates))


def _fold_compare(op: str, a: Any, b: Any) -> Any:
    try:
        return {
            "eq": lambda: a == b,
            "ne": lambda: a != b,
            "lt": lambda: a < b,
            "lteq": lambda: a <= b,
            "gt": lambda: a > b,
            "gteq": lambda: a >= b,
            "in": lambda: a in b,
            "notin": lambda: a not in b,
        }[op]()
    except (TypeError, KeyError):
        return UNKNOWN


def test(flow: JinjaFlow, node: nodes.Test, env: dict[str, Val]) -> Val:
    base = flow.ev(node.node, env)
    if node.name in TYPE_TESTS:
        if "tools" in base.taint:
            return Val(gates=base.gates | {Gate("tools", text(node), node.lineno)})
        return Val(gates=base.gates)
    args = [flow.ev(a, env) for a in node.args]
    op = {"in": "in", "eq": "eq", "equalto": "eq", "==": "eq", "ne": "ne", "!=": "ne", "sameas": "eq"}.get(
        node.name, "eq"
    )
    gates = set(base.gates)
    for arg in args:
        gate = trigger(base, arg, op, text(node), node.lineno)
        if gate is not None:
            gates.add(gate)
    return Val(gates=frozenset(gates))


def getitem(flow: JinjaFlow, node: nodes.Getitem, env: dict[str, Val]) -> Val:
    base = flow.ev(node.node, env)
    if isinstance(node.arg, nodes.Slice):
        parts = [
            flow.ev(p, env) if p is not None else const(None)
            for p in (node.arg.start, node.arg.stop, node.arg.step)
        ]
        if base.known and isinstance(base.const, str | list) and all(p.known for p in parts):
            try:
                return join(base, result=base.const[slice(*(p.const for p in parts))])
            except (TypeError, ValueError):
                return base
        return Val(UNKNOWN, base.lits, base.taint, base.gates)
    key = flow.ev(node.arg, env)
    if key.known and isinstance(key.const, str):
        if key.const.startswith("_"):
            flow.out.problem(
                "jinja-sandbox-escape",
                "critical",
                node.lineno,
                f"item {key.const!r}: Python object traversal (CVE-2024-34359)",
            )
        return member(base, key.const)
    if base.known and isinstance(base.const, dict) and is_content(key):
        gate = Gate("content", text(node), node.lineno)
        return Val(UNKNOWN, base.lits, frozenset(), base.gates | key.gates | {gate})
    if key.known and base.known and isinstance(base.const, list | str) and isinstance(key.const, int):
        try:
            return join(base, result=base.const[key.const])
        except IndexError:
            return Val()
    return element(base).with_gates(key.gates)  # an item picked by a count is an item, not a count


def call(flow: JinjaFlow, node: nodes.Call, env: dict[str, Val]) -> Val:
    args = [flow.ev(a, env) for a in node.args]
    kwargs = {kw.key: flow.ev(kw.value, env) for kw in node.kwargs}
    callee = node.node
    if isinstance(callee, nodes.Name):
        name = callee.name
        if name in flow.macros and name not in env:
            return flow.macro_call(flow.macros[name], args, kwargs, env)
        if name in ("strftime_now", "now", "datetime", "today", "utcnow", "current_time"):
            return taint("date")
        if name == "range":
            return taint("count")
        if name == "dict" and all(v.known for v in kwargs.values()):
            return join(*kwargs.values(), result={k: v.const for k, v in kwargs.items()})
        if name == "raise_exception":
            return Val()
        return join(*args, *kwargs.values())
    if not isinstance(callee, nodes.Getattr):
        return join(flow.ev(callee, env), *args)
    meth = callee.attr
    if meth.startswith("_"):
        flow.out.problem(
            "jinja-sandbox-escape",
            "critical",
            node.lineno,
            f"method {meth!r}: Python object traversal (CVE-2024-34359)",
        )
    obj = flow.ev(callee.node, env)
    if meth == "format" and obj.known and isinstance(obj.const, str):
        from ollama_guard.verify.templates import jinja_filters

        return jinja_filters.format_call(flow, obj, args, kwargs, node.lineno)
    if obj.known and all(a.known for a in args) and not kwargs:
        folded = fold_method(obj.const, meth, [a.const for a in args])
        if folded is not UNKNOWN:
            return join(obj, *args, result=folded)
    gates: set[Gate] = set()
    if meth in MATCH_METHODS or (meth == "replace" and len(args) > 1 and inserts_words(args[0], args[1])):
        for arg in args[:1]:
            gate = trigger(obj, arg, "in", text(node), node.lineno)
            if gate is not None:
                gates.add(gate)
    if meth == "get" and args:
        got = member(obj, args[0].const) if args[0].known and isinstance(args[0].const, str) else Val()
        if obj.known and isinstance(obj.const, dict) and is_content(args[0]):
            gates.add(Gate("content", text(node), node.lineno))
            got = Val(UNKNOWN, obj.lits)
        return got.with_gates(frozenset(gates) | obj.gates)
    if meth == "replace" and is_content(obj):
        extra = args[1:2]
        return Val(
            UNKNOWN, tuple(lit for a in extra for lit in a.lits), obj.taint, obj.gates | frozenset(gates)
        )
    if meth in ("strftime", "isoformat", "date") or "date" in obj.taint:
        return Val(taint=frozenset({"date"}) | obj.taint, gates=obj.gates)
    out = join(obj, *args)
    if gates:
        return Val(out.const, (), out.taint - {"content"}, out.gates | frozenset(gates))
    return out


def _bases(node: nodes.Node, key: str) -> list[nodes.Node]:
    """The objects whose `key` member `node` reads (`messages[0]` of `messages[0].role`)."""
    out = []
    for sub in [node, *node.find_all((nodes.Getattr, nodes.Getitem))]:
        if isinstance(sub, nodes.Getattr) and sub.attr == key:
            out.append(sub.node)
        elif isinstance(sub, nodes.Getitem) and isinstance(sub.arg, nodes.Const) and sub.arg.value == key:
            out.append(sub.node)
    return out


def settings(node: nodes.Node, val: Val, other_node: nodes.Node, other: Val) -> Val:
    """`messages[0].role == 'system' and 'detailed thinking on' in messages[0].content`: a content test
    conjoined with the test that the same message is the system message reads the deployer's setting
    (like a content test nested in a system-message branch), not a user-text trigger."""
    if not any(g.kind == "content" for g in val.gates):
        return val
    if not any(g.kind == "system-role" for g in other.gates):
        return val
    systems = _bases(other_node, "role")
    contents = _bases(node, "content")
    if not contents or not all(any(c == s for s in systems) for c in contents):
        return val
    gates = frozenset(
        Gate("control", g.text, g.line, g.words, g.negated) if g.kind == "content" else g for g in val.gates
    )
    return Val(val.const, val.lits, val.taint, gates)


def binary(flow: JinjaFlow, node: nodes.BinExpr, env: dict[str, Val]) -> Val:
    left, right = flow.ev(node.left, env), flow.ev(node.right, env)
    if isinstance(node, nodes.And | nodes.Or):
        result: Any = UNKNOWN
        if left.known and right.known:
            result = (
                (left.const and right.const) if isinstance(node, nodes.And) else (left.const or right.const)
            )
        if isinstance(node, nodes.And):
            left, right = (
                settings(node.left, left, node.right, right),
                settings(node.right, right, node.left, left),
            )
        out = join(left, right, result=result)
        return Val(out.const, (), out.taint, out.gates)
    if left.known and right.known:
        try:
            if isinstance(node, nodes.Mul) and (isinstance(left.const, str) or isinstance(right.const, str)):
                size = len(str(left.const if isinstance(left.const, str) else right.const))
                count = right.const if isinstance(left.const, str) else left.const
                if size * int(count) > MAX_FOLD:
                    raise OverflowError
            ops = {
                nodes.Add: lambda a, b: a + b,
                nodes.Sub: lambda a, b: a - b,
                nodes.Mul: lambda a, b: a * b,
                nodes.Div: lambda a, b: a / b,
                nodes.FloorDiv: lambda a, b: a // b,
                nodes.Mod: lambda a, b: a % b,
                nodes.Pow: lambda a, b: a**b if abs(b) < 64 else 1 / 0,
            }
            return join(left, right, result=ops[type(node)](left.const, right.const))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, KeyError):
            pass
    if isinstance(node, nodes.Mod) and "count" in left.taint and right.known and not small_count(right):
        return Val(taint=left.taint | {"countmod"}, gates=left.gates)
    if isinstance(node, nodes.Add):
        return concat([left, right])
    return join(left, right)


def concat(vals: list[Val]) -> Val:
    if all(v.known for v in vals):
        try:
            joined = "".join(str(v.const) for v in vals)
        except TypeError:
            joined = UNKNOWN
        if joined is not UNKNOWN and len(joined) <= MAX_FOLD:
            return join(*vals, result=joined)
    lits: list[str] = []
    buffer = ""
    for v in vals:
        if v.known and isinstance(v.const, str | int | float):
            buffer += str(v.const)
            continue
        if buffer:
            lits.append(buffer)
            buffer = ""
        lits.extend(v.lits)
    if buffer:
        lits.append(buffer)
    out = join(*vals)
    return Val(UNKNOWN, tuple(lits)[:64], out.taint, out.gates)
