"""Data flow through a Jinja chat template, from Jinja2's parse tree (the template is never rendered).

The walk follows statements in order with an environment of abstract values (`flow.Val`): literals are
folded (concatenation, `~`, `%`, filters such as replace/join/reverse/format, safe string methods,
slicing), message content/tools/counts/dates are tracked through variables, loops, namespaces, macros
and filters, and every text the template emits is recorded with the trigger conditions that gate it."""

from __future__ import annotations

import json
from typing import Any

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ollama_guard.verify.templates import jinja_filters, jinja_ops
from ollama_guard.verify.templates.flow import (
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

MAX_DEPTH = 6  # macro calls followed
MAX_STEPS = 200_000


class GenerationExtension(Extension):
    """`{% generation %}…{% endgeneration %}` (used by Hugging Face training templates): a plain block."""

    tags = {"generation"}  # noqa: RUF012

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body, lineno=lineno)


def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        extensions=["jinja2.ext.loopcontrols", "jinja2.ext.do", GenerationExtension]
    )


_ENV = environment()


def parse(source: str) -> nodes.Template:
    return _ENV.parse(source)


GLOBALS: dict[str, Val] = {
    "messages": taint("msgs"),
    "conversation": taint("msgs"),
    "tools": taint("tools"),
    "custom_tools": taint("tools"),
    "functions": taint("tools"),
    "documents": taint("docs"),
    "date_string": taint("date"),
    "current_date": taint("date"),
}
DATE_CALLS = frozenset({"strftime_now", "now", "datetime", "today", "utcnow", "current_time"})


class JinjaFlow:
    def __init__(self) -> None:
        self.out = Analysis()
        self.steps = 0
        self.macros: dict[str, nodes.Macro] = {}
        self.depth = 0
        self.loops = 0
        self.control = 0
        self.tool = 0
        self.system = 0
        self.memo: dict[tuple[object, ...], Val] = {}

    # statements -----------------------------------------------------------------------------------
    def run(self, tree: nodes.Template) -> Analysis:
        for macro in tree.find_all(nodes.Macro):
            self.macros.setdefault(macro.name, macro)
        self.block(tree.body, dict(GLOBALS), frozenset())
        for macro in self.macros.values():  # bodies on their own too: text they emit whatever the call
            env = dict(GLOBALS)
            env.update({a.name: Val() for a in macro.args})
            self.block(macro.body, env, frozenset())
        return self.out

    def block(self, body: list[nodes.Node], env: dict[str, Val], gates: frozenset[Gate]) -> None:
        for node in body:
            self.steps += 1
            if self.steps > MAX_STEPS:
                return
            self.stmt(node, env, gates)

    def stmt(self, node: nodes.Node, env: dict[str, Val], gates: frozenset[Gate]) -> None:
        if isinstance(node, nodes.Output):
            for child in node.nodes:
                if isinstance(child, nodes.TemplateData):
                    self.out.emit(child.data, child.lineno, gates)
                else:
                    self.emit_val(self.ev(child, env), child.lineno, gates)
        elif isinstance(node, nodes.If):
            self.stmt_if(node, env, gates)
        elif isinstance(node, nodes.For):
            self.stmt_for(node, env, gates)
        elif isinstance(node, nodes.Assign):
            self.assign(node.target, self.ev(node.node, env).with_gates(gates), env, node.node)
        elif isinstance(node, nodes.AssignBlock):
            captured = self.capture(node.body, env, gates)
            self.assign(node.target, captured, env, None)
        elif isinstance(node, nodes.Macro):
            self.macros[node.name] = node
        elif isinstance(node, nodes.CallBlock):
            self.emit_val(self.ev(node.call, env), node.lineno, gates)
            self.block(node.body, dict(env), gates)
        elif isinstance(node, nodes.ExprStmt):
            self.ev(node.node, env)
        elif isinstance(node, nodes.FilterBlock):
            self.block(node.body, env, gates)
        elif isinstance(node, nodes.With):
            inner = dict(env)
            for target, value in zip(node.targets, node.values, strict=False):
                self.assign(target, self.ev(value, env).with_gates(gates), inner, value)
            self.block(node.body, inner, gates)
        elif isinstance(node, nodes.Scope | nodes.ScopedEvalContextModifier | nodes.EvalContextModifier):
            self.block(getattr(node, "body", []), env, gates)
        elif isinstance(node, nodes.Include | nodes.Import | nodes.FromImport | nodes.Extends):
            self.out.problem(
                "template-include",
                "high",
                node.lineno,
                "the template loads another template (chat templates are self-contained)",
            )
        elif isinstance(node, nodes.Block):
            self.block(node.body, env, gates)

    def stmt_if(self, node: nodes.If, env: dict[str, Val], gates: frozenset[Gate]) -> None:
        test = self.ev(node.test, env)
        control = any(g.kind in ("control-role", "system-role") for g in test.gates)
        self.system += any(g.kind == "system-role" for g in test.gates)
        tool = any(g.kind == "tool-role" for g in test.gates)
        not_tool = any(g.kind == "not-tool-role" for g in test.gates)
        test_gates = self.note_gates(test.gates)
        branch_gates = gates | test_gates
        left = dict(env)
        self.control += control
        self.tool += tool
        self.block(node.body, left, branch_gates)
        self.control -= control
        self.system -= any(g.kind == "system-role" for g in test.gates)
        self.tool -= tool
        right = dict(env)
        self.tool += not_tool  # `role != 'tool'`: what follows (elif/else) is about tool results
        if node.elif_:
            self.stmt_if(
                nodes.If(
                    node.elif_[0].test,
                    node.elif_[0].body,
                    node.elif_[1:],
                    node.else_,
                    lineno=node.elif_[0].lineno,
                ),
                right,
                branch_gates,
            )
        else:
            self.block(node.else_, right, branch_gates)
        self.tool -= not_tool
        for name in set(left) | set(right):
            a, b = left.get(name), right.get(name)
            env[name] = merge(a, b) if a is not None and b is not None else (a or b or Val())

    def stmt_for(self, node: nodes.For, env: dict[str, Val], gates: frozenset[Gate]) -> None:
        seq = self.ev(node.iter, env)
        inner = dict(env)
        self.assign(node.target, jinja_ops.element(seq), inner, None)
        inner["loop"] = taint("loop")
        body_gates = gates | seq.gates
        if node.test is not None:
            body_gates |= self.note_gates(self.ev(node.test, inner).gates)
        self.loops += 1
        try:  # outer loops twice: values carried from one iteration to the next (namespaces, sets)
            for _ in range(2 if self.loops <= 1 else 1):
                self.block(node.body, inner, body_gates)
        finally:
            self.loops -= 1
        for name, value in inner.items():
            if "." in name or name in env:
                env[name] = merge(env[name], value) if name in env else value
        self.block(node.else_, env, gates)

    def note_gates(self, gates: frozenset[Gate]) -> frozenset[Gate]:
        return self.out.note(gates, control=self.control > 0, tool=self.tool > 0)

    def capture(self, body: list[nodes.Node], env: dict[str, Val], gates: frozenset[Gate]) -> Val:
        """Run `body` and return what it emits as a value (set blocks, macro calls)."""
        saved, saved_dynamic = self.out.emits, self.out.dynamic
        self.out.emits, self.out.dynamic = [], frozenset()
        self.block(body, env, frozenset())
        captured, dynamic = self.out.emits, self.out.dynamic
        self.out.emits, self.out.dynamic = saved, saved_dynamic | dynamic
        lits = tuple(e.text for e in captured)
        inner: frozenset[Gate] = frozenset().union(*(e.gates for e in captured)) if captured else frozenset()
        value = "".join(lits) if not (inner or dynamic) else UNKNOWN
        return Val(value, lits, dynamic, inner | gates)

    def assign(self, target: nodes.Node, value: Val, env: dict[str, Val], source: nodes.Node | None) -> None:
        if self.system:
            value = system_text(value)
        if isinstance(target, nodes.Name):
            env[target.name] = value
            if isinstance(source, nodes.Call) and isinstance(source.node, nodes.Name):
                if source.node.name == "namespace":
                    for kw in source.kwargs:
                        env[f"{target.name}.{kw.key}"] = self.ev(kw.value, env)
        elif isinstance(target, nodes.NSRef):
            env[f"{target.name}.{target.attr}"] = value
        elif isinstance(target, nodes.Tuple):
            for item in target.items:
                self.assign(item, jinja_ops.element(value), env, None)

    def emit_val(self, value: Val, line: int, gates: frozenset[Gate]) -> None:
        all_gates = gates | value.gates
        if value.known and isinstance(value.const, str | int | float) and not isinstance(value.const, bool):
            self.out.emit(str(value.const), line, all_gates)
            return
        if value.known and isinstance(value.const, list | tuple | dict):
            self.out.emit(json.dumps(value.const, ensure_ascii=False), line, all_gates)
            return
        for lit in value.lits:
            self.out.emit(lit, line, all_gates)
        if value.taint:
            self.out.gap(value.taint)

    # expressions ----------------------------------------------------------------------------------
    def ev(self, node: nodes.Node, env: dict[str, Val]) -> Val:
        self.steps += 1
        if self.steps > MAX_STEPS:
            return Val()
        if isinstance(node, nodes.Const):
            return const(node.value)
        if isinstance(node, nodes.Name):
            if node.name in env:
                return env[node.name]
            return Val()
        if isinstance(node, nodes.List | nodes.Tuple):
            items = [self.ev(i, env) for i in node.items]
            value: Any = [i.const for i in items] if all(i.known for i in items) else UNKNOWN
            if isinstance(node, nodes.Tuple) and value is not UNKNOWN:
                value = tuple(value)
            return join(*items, result=value)
        if isinstance(node, nodes.Dict):
            pairs = [(self.ev(p.key, env), self.ev(p.value, env)) for p in node.items]
            ok = all(k.known and v.known and isinstance(k.const, str | int) for k, v in pairs)
            result = {k.const: v.const for k, v in pairs} if ok else UNKNOWN
            return join(*(x for pair in pairs for x in pair), result=result)
        if isinstance(node, nodes.Getattr):
            return self.attribute(node, node.node, node.attr, env, node.lineno)
        if isinstance(node, nodes.Getitem):
            return jinja_ops.getitem(self, node, env)
        if isinstance(node, nodes.Call):
            return jinja_ops.call(self, node, env)
        if isinstance(node, nodes.Filter):
            return jinja_filters.filter_(self, node, env)
        if isinstance(node, nodes.Test):
            return jinja_ops.test(self, node, env)
        if isinstance(node, nodes.Compare):
            return jinja_ops.compare(self, node, env)
        if isinstance(node, nodes.CondExpr):
            test_gates = self.note_gates(self.ev(node.test, env).gates)
            a = self.ev(node.expr1, env)
            b = self.ev(node.expr2, env) if node.expr2 is not None else const("")
            return merge(a, b).with_gates(test_gates)
        if isinstance(node, nodes.BinExpr):
            return jinja_ops.binary(self, node, env)
        if isinstance(node, nodes.UnaryExpr):
            inner = self.ev(node.node, env)
            folded: Any = UNKNOWN
            if inner.known:
                folded = (
                    {nodes.Not: lambda v: not v, nodes.Neg: lambda v: -v, nodes.Pos: lambda v: +v}[
                        type(node)
                    ](inner.const)
                    if not isinstance(inner.const, str) or isinstance(node, nodes.Not)
                    else UNKNOWN
                )
            return join(inner, result=folded)
        if isinstance(node, nodes.Slice):
            return join(*(self.ev(n, env) for n in (node.start, node.stop, node.step) if n is not None))
        if isinstance(node, nodes.Concat):
            return jinja_ops.concat([self.ev(n, env) for n in node.nodes])
        if isinstance(node, nodes.NSRef):
            return env.get(f"{node.name}.{node.attr}", Val())
        return Val()

    def attribute(self, node: nodes.Node, base: nodes.Node, attr: str, env: dict[str, Val], line: int) -> Val:
        if attr.startswith("_") or attr in jinja_ops.UNSAFE_ATTRS:
            self.out.problem(
                "jinja-sandbox-escape",
                "critical",
                line,
                f"attribute {attr!r}: Python object traversal (CVE-2024-34359)",
            )
        if isinstance(base, nodes.Name) and f"{base.name}.{attr}" in env:
            return env[f"{base.name}.{attr}"]
        return jinja_ops.member(self.ev(base, env), attr)

    def macro_call(
        self, macro: nodes.Macro, args: list[Val], kwargs: dict[str, Val], env: dict[str, Val]
    ) -> Val:
        if self.depth >= MAX_DEPTH:
            return join(*args, *kwargs.values())
        inner = dict(GLOBALS)
        inner.update({k: v for k, v in env.items() if k in self.macros})
        defaults = [None] * (len(macro.args) - len(macro.defaults)) + list(macro.defaults)
        for i, (param, default) in enumerate(zip(macro.args, defaults, strict=True)):
            if i < len(args):
                inner[param.name] = args[i]
            elif param.name in kwargs:
                inner[param.name] = kwargs[param.name]
            else:
                inner[param.name] = self.ev(default, env) if default is not None else Val()
        key = (macro.name, *(_sig(inner[p.name]) for p in macro.args))
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = Val()  # recursion: the value of a call in progress is unknown
        self.depth += 1
        try:
            result = self.capture(macro.body, inner, frozenset())
        finally:
            self.depth -= 1
        self.memo[key] = result
        return result


def _sig(value: Val) -> tuple[object, ...]:
    const = value.const if isinstance(value.const, str | int | float | bool | None) else type(value.const)
    return (const, value.lits[:8], value.taint, value.gates)


def analyse(source: str) -> Analysis:
    return JinjaFlow().run(parse(source))
