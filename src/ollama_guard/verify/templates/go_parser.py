"""A parser for Go's text/template as Ollama uses it (template/template.go parses with text/template and its
own FuncMap). Produces a small tree; nothing is executed.

Covers: text and actions with trim markers (`{{- ` / ` -}}`), comments, pipelines with `|`, variable
declaration and assignment (`$x := …`, `$x = …`), `if`/`else if`/`else with`/`with`/`range` (with
`$i, $v :=`), `define`/`template`/`block`, `break`/`continue`, string (interpreted and raw), character,
number, bool and nil literals, fields, chained fields on variables and parenthesised pipelines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class GoParseError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass
class Arg:
    kind: str  # field | var | dot | ident | str | num | bool | nil | pipe
    value: Any = None
    fields: tuple[str, ...] = ()


@dataclass
class Cmd:
    args: list[Arg]


@dataclass
class Pipe:
    cmds: list[Cmd]
    decl: list[str] = field(default_factory=list)
    assign: bool = False
    line: int = 1


@dataclass
class Node:
    kind: str  # text | action | if | with | range | template | break | continue
    line: int
    text: str = ""
    pipe: Pipe | None = None
    body: list[Node] = field(default_factory=list)
    else_: list[Node] = field(default_factory=list)
    name: str = ""


@dataclass
class Tree:
    root: list[Node]
    defines: dict[str, list[Node]]


_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r\n]+)|(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\[^\n]+?)')
    |(?P<op>:=|=|\||\(|\)|,)|(?P<var>\$[A-Za-z0-9_]*)|(?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)|(?P<dot>\.)
    |(?P<num>[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?i?))
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*)""",
    re.X,
)
_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}
_GO_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.S)
KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "define", "template", "block", "break", "continue"}
)


def unquote(literal: str, line: int) -> str:
    if literal.startswith("`"):
        return literal[1:-1].replace("\r", "")

    def one(m: re.Match[str]) -> str:
        esc = m.group(0)[1:]
        if esc[0] in "xuU":
            return chr(int(esc[1:], 16)) if esc[0] != "x" else bytes([int(esc[1:], 16)]).decode("latin-1")
        if esc[0] in "01234567" and len(esc) == 3:
            return chr(int(esc, 8))
        if esc in _ESCAPES:
            return _ESCAPES[esc]
        raise GoParseError(f"unknown escape sequence \\{esc}", line)

    return _GO_ESCAPE.sub(one, literal[1:-1])


def _number(text: str) -> Any:
    clean = text.replace("_", "")
    try:
        return int(clean, 0)
    except ValueError:
        try:
            return float(clean)
        except ValueError:
            return clean


def _split_actions(src: str) -> list[tuple[str, str, int]]:
    """[(kind, text, line)] with kind text|action; trim markers applied to the neighbouring text."""
    out: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            if text:
                out.append(("text", text, line))
            return out
        inner = start + 2
        if (
            src.startswith("- ", inner)
            or src.startswith("-\t", inner)
            or src.startswith("-\n", inner)
            or src.startswith("-\r", inner)
        ):
            text = text.rstrip(" \t\r\n")
            inner += 1
        if text:
            out.append(("text", text, line))
        line += src.count("\n", pos, start)
        body_start = inner
        trimmed = inner > start + 2
        # as in Go: the comment opens right after the delimiter, or after the trim marker and one space
        if src.startswith("/*", inner) or (trimmed and src.startswith("/*", inner + 1)):
            end = src.find("*/", inner)
            if end < 0:
                raise GoParseError("unclosed comment", line)
            close = end + 2
            if src.startswith((" -}}", "\t-}}", "\n-}}", "\r-}}"), close):
                close += 2
            if not src.startswith("}}", close):
                raise GoParseError("comment ends before closing delimiter", line)
            trim_next = src.startswith("-}}", close - 1)
            out.append(("comment", "", line))
            line += src.count("\n", start, close)
            pos = close + 2
            continue
        close = _find_close(src, inner, line)
        body = src[body_start:close]
        trim_next = body.endswith((" -", "\t-", "\n-", "\r-"))
        if trim_next:
            body = body[:-1]
        out.append(("action", body, line))
        line += src.count("\n", start, close)
        pos = close + 2


def _find_close(src: str, at: int, line: int) -> int:
    i = at
    while True:
        m = re.compile(r'}}|"|`|\'').search(src, i)
        if m is None:
            raise GoParseError("unclosed action", line)
        if m.group(0) == "}}":
            return m.start()
        quote = m.group(0)
        j = m.end()
        while True:
            k = src.find(quote, j)
            if k < 0:
                raise GoParseError("unterminated quoted string", line)
            if quote != "`" and src[k - 1] == "\\" and (k - j < 1 or _odd_backslashes(src, k)):
                j = k + 1
                continue
            break
        i = k + 1


def _odd_backslashes(src: str, k: int) -> bool:
    n = 0
    while k - 1 - n >= 0 and src[k - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def tokens(body: str, line: int) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None:
            raise GoParseError(f"unexpected {body[pos : pos + 10]!r} in action", line)
        if m.lastgroup != "ws":
            out.append((m.lastgroup or "", m.group(0)))
        pos = m.end()
    return out


class _Pipeline:
    def __init__(self, toks: list[tuple[str, str]], line: int) -> None:
        self.toks, self.i, self.line = toks, 0, line

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("eof", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        self.i += 1
        return tok

    def pipe(self, decl_ok: bool = True) -> Pipe:
        pipe = Pipe([], line=self.line)
        if decl_ok:
            save = self.i
            names = []
            while self.peek()[0] == "var":
                names.append(self.take()[1])
                if self.peek() == ("op", ","):
                    self.take()
                    continue
                break
            if names and self.peek() in (("op", ":="), ("op", "=")):
                pipe.assign = self.take()[1] == "="
                pipe.decl = names
            else:
                self.i = save
        while True:
            args = []
            while self.peek()[0] not in ("eof",) and self.peek() not in (("op", "|"), ("op", ")")):
                args.append(self.operand())
            if not args:
                if pipe.cmds and self.peek()[0] == "eof":  # `{{ x | }}`: Go (1.19) accepts a trailing pipe
                    return pipe
                raise GoParseError("missing command in pipeline", self.line)
            pipe.cmds.append(Cmd(args))
            if self.peek() != ("op", "|"):
                return pipe
            self.take()

    def operand(self) -> Arg:
        kind, text = self.take()
        if kind == "op" and text == "(":
            inner = self.pipe()
            if self.take() != ("op", ")"):
                raise GoParseError("unclosed left paren", self.line)
            arg = Arg("pipe", inner)
        elif kind == "field":
            return Arg("field", None, tuple(text[1:].split(".")))
        elif kind == "var":
            arg = Arg("var", text)
        elif kind == "dot":
            return Arg("dot")
        elif kind in ("str", "raw"):
            return Arg("str", unquote(text, self.line))
        elif kind == "char":
            return Arg("num", ord(unquote('"' + text[1:-1].replace('"', '\\"') + '"', self.line)[:1] or "\0"))
        elif kind == "num":
            return Arg("num", _number(text))
        elif kind == "ident":
            if text in ("true", "false"):
                return Arg("bool", text == "true")
            if text == "nil":
                return Arg("nil")
            return Arg("ident", text)
        else:
            raise GoParseError(f"unexpected {text!r} in operand", self.line)
        if self.peek()[0] == "field":
            arg.fields = tuple(self.take()[1][1:].split("."))
        return arg


def parse(src: str) -> Tree:
    defines: dict[str, list[Node]] = {}
    stack: list[tuple[Node | None, list[Node], str]] = []
    root: list[Node] = []
    current = root
    for kind, body, line in _split_actions(src):
        if kind == "text":
            current.append(Node("text", line, text=body))
            continue
        if kind == "comment":
            continue
        toks = tokens(body, line)
        if not toks:
            raise GoParseError("missing value for command", line)
        word = toks[0][1] if toks[0][0] == "ident" else ""
        rest = _Pipeline(toks[1:], line)
        if word in ("if", "with", "range"):
            node = Node(word, line, pipe=rest.pipe())
            current.append(node)
            stack.append((node, current, word))
            current = node.body
        elif word == "else":
            if not stack or stack[-1][0] is None:
                raise GoParseError("unexpected {{else}}", line)
            node = stack[-1][0]
            if len(toks) > 1 and toks[1][1] in ("if", "with"):
                chained = Node(toks[1][1], line, pipe=_Pipeline(toks[2:], line).pipe())
                node.else_.append(chained)
                stack[-1] = (chained, stack[-1][1], stack[-1][2])
                current = chained.body
            else:
                current = node.else_
        elif word == "end":
            if not stack:
                raise GoParseError("unexpected {{end}}", line)
            _, current, _ = stack.pop()
        elif word in ("define", "block"):
            name_tok = rest.take()
            if name_tok[0] not in ("str", "raw"):
                raise GoParseError(f"{word} needs a name", line)
            name = unquote(name_tok[1], line)
            defines[name] = []
            if word == "block":
                current.append(Node("template", line, name=name, pipe=rest.pipe()))
            stack.append((None, current, word))
            current = defines[name]
        elif word == "template":
            name_tok = rest.take()
            if name_tok[0] not in ("str", "raw"):
                raise GoParseError("template needs a name", line)
            pipe = rest.pipe() if rest.peek()[0] != "eof" else None
            current.append(Node("template", line, name=unquote(name_tok[1], line), pipe=pipe))
        elif word in ("break", "continue"):
            if not any(kind == "range" for _, _, kind in stack):
                raise GoParseError(f"{{{{{word}}}}} outside {{{{range}}}}", line)
            current.append(Node(word, line))
        else:
            pipe = _Pipeline(toks, line).pipe()
            if rest.peek() == ("op", ")"):
                raise GoParseError("unexpected right paren", line)
            current.append(Node("action", line, pipe=pipe))
    if stack:
        raise GoParseError(
            f"unexpected EOF: {{{{{stack[-1][2]}}}}} without {{{{end}}}}",
            stack[-1][1][-1].line if stack[-1][1] else 1,
        )
    return Tree(root, defines)
