"""Data flow through an Ollama (Go text/template) chat template, from `go_parser`'s tree.

Ollama executes templates with `.Messages` (each with `.Role`, `.Content`, `.Thinking`, `.ToolCalls`…),
`.Tools`, `.System`, `.Prompt`, `.Response`, `.Suffix`, `.Think`, `.ThinkLevel`, `.IsThinkSet`, and
registers `json`, `currentDate`, `yesterdayDate` and `toTypeScriptType` besides Go's built-ins
(template/template.go). The walk mirrors `jinja_flow`: constants are folded (`print`, `printf`, `slice`,
`index`, `html`/`js`/`urlquery`), data is tracked through dot, variables, `with`/`range` and
`define`/`template`, and emitted text is recorded with the trigger conditions that gate it."""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from typing import Any

from ollama_guard.verify.templates.flow import (
    MAX_FOLD,
    UNKNOWN,
    Analysis,
    Gate,
    Val,
    const,
    join,
    merge,
    system_text,
    taint,
)
from ollama_guard.verify.templates.go_parser import Arg, GoParseError, Node, Pipe, parse
from ollama_guard.verify.templates.jinja_ops import element

__all__ = ["GoParseError", "analyse"]

ROOT_FIELDS = {
    "Messages": "msgs",
    "Tools": "tools",
    "System": "syscontent",
    "Prompt": "content",
    "Response": "content",
    "Suffix": "content",
}
MSG_FIELDS = {
    "Content": "content",
    "Thinking": "content",
    "Role": "role",
    "ToolCalls": "toolcalls",
    "ToolName": "role",
    "ToolCallID": "role",
    "Images": "part",
}
MAX_DEPTH = 6
MAX_STEPS = 200_000
_VERB = re.compile(r"%([-+# 0]*)(\d*|\*)(?:\.(\d*|\*))?([a-zA-Z%])")


class GoFlow:
    def __init__(self, defines: dict[str, list[Node]]) -> None:
        self.out = Analysis()
        self.defines = defines
        self.steps = 0
        self.depth = 0
        self.control = 0
        self.tool = 0
        self.system = 0
        self.loops = 0

    def block(self, body: list[Node], env: dict[str, Val], dot: Val, gates: frozenset[Gate]) -> None:
        for node in body:
            self.steps += 1
            if self.steps > MAX_STEPS:
                return
            if node.kind == "text":
                self.out.emit(node.text, node.line, gates)
            elif node.kind == "action" and node.pipe is not None:
                value = self.pipe(node.pipe, env, dot)
                if node.pipe.decl:
                    self.declare(node.pipe, value.with_gates(gates), env)
                else:
                    self.emit(value, node.line, gates)
            elif node.kind in ("if", "with"):
                self.branch(node, env, dot, gates)
            elif node.kind == "range":
                self.range_(node, env, dot, gates)
            elif node.kind == "template":
                self.template(node, env, dot, gates)

    def emit(self, value: Val, line: int, gates: frozenset[Gate]) -> None:
        gates = gates | value.gates
        if value.known and isinstance(value.const, str | int | float) and not isinstance(value.const, bool):
            self.out.emit(str(value.const), line, gates)
            return
        for lit in value.lits:
            self.out.emit(lit, line, gates)
        if value.taint:
            self.out.gap(value.taint)

    def declare(self, pipe: Pipe, value: Val, env: dict[str, Val]) -> None:
        if self.system:
            value = system_text(value)
        if len(pipe.decl) == 1:
            env[pipe.decl[0]] = value
        else:
            for name in pipe.decl:
                env[name] = element(value)

    def test_gates(self, test: Val) -> frozenset[Gate]:
        return self.out.note(test.gates, control=self.control > 0, tool=self.tool > 0)

    def branch(self, node: Node, env: dict[str, Val], dot: Val, gates: frozenset[Gate]) -> None:
        assert node.pipe is not None
        inner = dict(env)
        test = self.pipe(node.pipe, inner, dot)
        if node.pipe.decl:
            self.declare(node.pipe, test, inner)
        control = any(g.kind in ("control-role", "system-role") for g in test.gates)
        self.system += any(g.kind == "system-role" for g in test.gates)
        tool = any(g.kind == "tool-role" for g in test.gates)
        not_tool = any(g.kind == "not-tool-role" for g in test.gates)
        test_gates = self.test_gates(test)
        self.control += control
        self.tool += tool
        left, right = dict(inner), dict(env)
        self.block(node.body, left, test if node.kind == "with" else dot, gates | test_gates)
        self.control -= control
        self.system -= any(g.kind == "system-role" for g in test.gates)
        self.tool -= tool
        self.tool += not_tool
        self.block(node.else_, right, dot, gates | test_gates)
        self.tool -= not_tool
        for name in env:
            env[name] = merge(left.get(name, env[name]), right.get(name, env[name]))

    def range_(self, node: Node, env: dict[str, Val], dot: Val, gates: frozenset[Gate]) -> None:
        assert node.pipe is not None
        seq = self.pipe(node.pipe, env, dot)
        inner = dict(env)
        item = element(seq) if not (seq.known and isinstance(seq.const, int)) else taint("count")
        if len(node.pipe.decl) == 2:
            inner[node.pipe.decl[0]] = taint("count")
            inner[node.pipe.decl[1]] = item
        elif node.pipe.decl:
            inner[node.pipe.decl[0]] = item
        self.loops += 1
        for _ in range(2 if self.loops <= 1 else 1):
            self.block(node.body, inner, item, gates | seq.gates)
        self.loops -= 1
        for name in env:
            env[name] = merge(env[name], inner[name])
        self.block(node.else_, env, dot, gates)

    def template(self, node: Node, env: dict[str, Val], dot: Val, gates: frozenset[Gate]) -> None:
        body = self.defines.get(node.name)
        if body is None or self.depth >= MAX_DEPTH:
            return
        arg = self.pipe(node.pipe, env, dot) if node.pipe is not None else Val()
        self.depth += 1
        self.block(body, {"$": env.get("$", Val())}, arg, gates)
        self.depth -= 1

    # pipelines --------------------------------------------------------------------------------------
    def pipe(self, pipe: Pipe, env: dict[str, Val], dot: Val) -> Val:
        value: Val | None = None
        for cmd in pipe.cmds:
            args = list(cmd.args)
            extra = [value] if value is not None else []
            value = self.command(args, extra, env, dot, pipe.line)
        return value if value is not None else Val()

    def command(self, args: list[Arg], extra: list[Val], env: dict[str, Val], dot: Val, line: int) -> Val:
        head = args[0]
        if head.kind == "ident":
            vals = [self.operand(a, env, dot, line) for a in args[1:]] + extra
            return self.call(head.value, vals, line)
        if len(args) > 1 or extra:
            vals = [self.operand(a, env, dot, line) for a in args] + extra
            return join(*vals)
        return self.operand(head, env, dot, line)

    def operand(self, arg: Arg, env: dict[str, Val], dot: Val, line: int) -> Val:
        self.steps += 1
        if arg.kind in ("str", "num", "bool"):
            base = const(arg.value)
        elif arg.kind == "nil":
            base = const(None)
        elif arg.kind == "dot":
            base = dot
        elif arg.kind == "field":
            base = dot
        elif arg.kind == "var":
            base = env.get(arg.value, Val())
        elif arg.kind == "pipe":
            base = self.pipe(arg.value, env, dot)
        else:
            return self.call(arg.value, [], line)
        for name in arg.fields:
            base = self.field(base, name)
        return base

    def field(self, base: Val, name: str) -> Val:
        if base.known and isinstance(base.const, dict):
            return const(base.const.get(name))
        kinds: set[str] = set()
        if "root" in base.taint:
            kinds.add(ROOT_FIELDS.get(name, "param"))
        if "msg" in base.taint:
            kinds.add(MSG_FIELDS.get(name, "msgmeta"))
        for kind in ("tools", "toolcalls", "content", "date", "part"):
            if kind in base.taint:
                kinds.add(kind)
        return Val(UNKNOWN, (), frozenset(kinds), base.gates)

    def call(self, name: str, vals: list[Val], line: int) -> Val:
        from ollama_guard.verify.templates import go_funcs

        return go_funcs.call(self, name, vals, line)


def fold_printf(fmt: str, args: list[Any]) -> Any:
    """Go's fmt.Sprintf for the verbs templates use (%s %v %d %q %c %x %X %%), or UNKNOWN."""
    out: list[str] = []
    pos = 0
    it = iter(args)
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        try:
            value = next(it)
        except StopIteration:
            out.append(f"%!{verb}(MISSING)")
            continue
        if width == "*" or prec == "*":
            return UNKNOWN
        if verb in "sv":
            text = go_str(value)
        elif verb == "q":
            text = json.dumps(go_str(value), ensure_ascii=False)
        elif verb == "d" and isinstance(value, int):
            text = str(value)
        elif verb == "c" and isinstance(value, int) and 0 <= value < 0x110000:
            text = chr(value)
        elif verb in "xX":
            text = (
                value.encode().hex()
                if isinstance(value, str)
                else format(value, "x")
                if isinstance(value, int)
                else None
            )
            if text is None:
                return UNKNOWN
            text = text.upper() if verb == "X" else text
        else:
            return UNKNOWN
        if prec:
            text = text[: int(prec)]
        if width and int(width) <= MAX_FOLD:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width))
        out.append(text)
    out.append(fmt[pos:])
    return "".join(out)


def go_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "<nil>"
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    return str(value)


ESCAPERS = {"html": html.escape, "urlquery": urllib.parse.quote_plus, "js": lambda s: json.dumps(s)[1:-1]}


def analyse(source: str) -> Analysis:
    tree = parse(source)
    flow = GoFlow(tree.defines)
    root = taint("root")
    flow.block(tree.root, {"$": root}, root, frozenset())
    for body in tree.defines.values():
        flow.block(body, {"$": root}, Val(), frozenset())
    return flow.out
