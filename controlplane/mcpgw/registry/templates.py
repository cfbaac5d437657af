"""Parse the Go-template subset that Higress and Nacos tool definitions use into a small AST.

The filter never sees template syntax: the translator compiles this AST into the filter's
expression tree. Anything outside the supported subset is rejected here, by name, so an
operator learns at validation time, not from a wrong request at run time.

Supported:
- text, `{{ pipeline }}`, trim markers `{{-` / `-}}`;
- fields `.a.b`, `.items.0.name`, `$`, `$.args.x`, `.` ; literals "str", `raw`, 12, 1.5, true, false, nil;
- `if` / `else if` / `else` / `end`, `range` / `else` / `end`;
- functions (Sprig argument order) and pipes (`x | f a` is `f a x`): see FUNCTIONS.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# name → (minimum, maximum) argument count; None = unbounded
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    "default": (2, 2),
    "toJson": (1, 1),
    "quote": (1, 1),
    "urlquery": (1, 1),
    "b64enc": (1, 1),
    "upper": (1, 1),
    "lower": (1, 1),
    "trim": (1, 1),
    "join": (2, 2),
    "len": (1, 1),
    "not": (1, 1),
    "eq": (2, 2),
    "ne": (2, 2),
    "and": (2, None),
    "or": (2, None),
}
_UNSUPPORTED_KEYWORDS = ("with", "define", "template", "block", "break", "continue")
_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<variable>\$[A-Za-z_]\w*)
      | (?P<field>\$?(?:\.[A-Za-z0-9_\-#]+)+|\$|\.)
      | (?P<ident>[A-Za-z_]\w*)
      | (?P<punct>[|()]|:=|=|,)
    )""",
    re.VERBOSE,
)


class TemplateError(ValueError):
    """A template the gateway cannot execute; the message says why."""


# --- AST ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """`.a.b` (relative to dot) or `$.a.b` (relative to the template's root)."""

    path: tuple[str, ...]
    from_root: bool = False


@dataclass(frozen=True)
class Const:
    value: object


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Expr, ...]


Expr = Field | Const | Call


@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class Output:
    expr: Expr


@dataclass(frozen=True)
class If:
    cond: Expr
    then: tuple[Node, ...]
    otherwise: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Range:
    over: Expr
    body: tuple[Node, ...]
    otherwise: tuple[Node, ...] = ()


Node = Text | Output | If | Range


# --- parsing -----------------------------------------------------------------------------


def parse(source: str) -> tuple[Node, ...]:
    """Parse a template; raises `TemplateError` naming what is unsupported or malformed."""
    items = _split(source)
    nodes, position, closer = _parse_block(items, 0, top=True)
    assert closer is None and position == len(items)
    return nodes


def _split(source: str) -> list[str | tuple[str]]:
    """Text pieces as str, action bodies as 1-tuples, with trim markers applied."""
    items: list[str | tuple[str]] = []
    position = 0
    trim_next = False
    for match in _ACTION.finditer(source):
        text = source[position : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        if text:
            items.append(text)
        items.append((match.group(2).strip(),))
        trim_next = bool(match.group(3))
        position = match.end()
    rest = source[position:]
    if trim_next:
        rest = rest.lstrip()
    if "{{" in rest or "}}" in rest:
        raise TemplateError("unbalanced '{{' or '}}'")
    if rest:
        items.append(rest)
    return items


def _parse_block(
    items: list[str | tuple[str]], position: int, top: bool
) -> tuple[tuple[Node, ...], int, str | None]:
    """Nodes until `else…` / `end` (returned as the closer) or the end of input."""
    nodes: list[Node] = []
    while position < len(items):
        item = items[position]
        position += 1
        if isinstance(item, str):
            nodes.append(Text(item))
            continue
        action = item[0]
        if action.startswith("/*"):
            continue  # a comment
        keyword = action.split(None, 1)[0] if action else ""
        if keyword in ("end", "else"):
            if top:
                raise TemplateError(f"'{{{{{keyword}}}}}' without a matching if or range")
            return tuple(nodes), position, action
        if keyword in ("if", "range"):
            node, position = _parse_control(keyword, action[len(keyword) :].strip(), items, position)
            nodes.append(node)
            continue
        if keyword in _UNSUPPORTED_KEYWORDS:
            raise TemplateError(f"template action '{keyword}' is not supported")
        nodes.append(Output(parse_pipeline(action)))
    if not top:
        raise TemplateError("missing '{{end}}'")
    return tuple(nodes), position, None


def _parse_control(keyword: str, rest: str, items: list[str | tuple[str]], position: int) -> tuple[Node, int]:
    if not rest:
        raise TemplateError(f"'{keyword}' needs a value")
    if keyword == "range" and (":=" in rest or "," in rest):
        raise TemplateError("range variables ('$i, $v :=') are not supported; use '.' inside range")
    condition = parse_pipeline(rest)
    body, position, closer = _parse_block(items, position, top=False)
    otherwise: tuple[Node, ...] = ()
    if closer is not None and closer.startswith("else"):
        chained = closer[len("else") :].strip()
        if chained.startswith("if ") and keyword == "if":
            nested, position = _parse_control("if", chained[3:].strip(), items, position)
            return If(condition, body, (nested,)), position
        if chained:
            raise TemplateError(f"unsupported '{{{{{closer}}}}}'")
        otherwise, position, closer = _parse_block(items, position, top=False)
        if closer is not None and closer != "end":
            raise TemplateError("a second '{{else}}' in the same block")
    if closer != "end":
        raise TemplateError(f"'{keyword}' is missing its '{{{{end}}}}'")
    node: Node = If(condition, body, otherwise) if keyword == "if" else Range(condition, body, otherwise)
    return node, position


def _tokens(source: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise TemplateError(f"cannot parse {source[position:].strip()!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_pipeline(source: str) -> Expr:
    tokens = _tokens(source)
    expr, position = _pipeline(tokens, 0)
    if position != len(tokens):
        raise TemplateError(f"unexpected {tokens[position][1]!r} in {source!r}")
    return expr


def _pipeline(tokens: list[tuple[str, str]], position: int) -> tuple[Expr, int]:
    expr, position = _command(tokens, position, piped=None)
    while position < len(tokens) and tokens[position] == ("punct", "|"):
        expr, position = _command(tokens, position + 1, piped=expr)
    return expr, position


def _command(tokens: list[tuple[str, str]], position: int, piped: Expr | None) -> tuple[Expr, int]:
    if position >= len(tokens):
        raise TemplateError("missing value after '|'" if piped is not None else "empty action")
    kind, text = tokens[position]
    if kind == "ident" and text not in ("true", "false", "nil"):
        if text not in FUNCTIONS:
            raise TemplateError(
                f"template function '{text}' is not supported (supported: {', '.join(FUNCTIONS)})"
            )
        args: list[Expr] = []
        position += 1
        while position < len(tokens) and tokens[position] not in (("punct", "|"), ("punct", ")")):
            operand, position = _operand(tokens, position)
            args.append(operand)
        if piped is not None:
            args.append(piped)
        low, high = FUNCTIONS[text]
        if len(args) < low or (high is not None and len(args) > high):
            expected = f"{low}" if low == high else f"at least {low}"
            raise TemplateError(f"'{text}' takes {expected} argument(s), got {len(args)}")
        return Call(text, tuple(args)), position
    if piped is not None:
        raise TemplateError(f"only a function can follow '|', got {text!r}")
    operand, position = _operand(tokens, position)
    if position < len(tokens) and tokens[position] not in (("punct", "|"), ("punct", ")")):
        raise TemplateError(f"unexpected {tokens[position][1]!r}: only functions take arguments")
    return operand, position


def _operand(tokens: list[tuple[str, str]], position: int) -> tuple[Expr, int]:
    kind, text = tokens[position]
    if kind == "punct" and text == "(":
        expr, position = _pipeline(tokens, position + 1)
        if position >= len(tokens) or tokens[position] != ("punct", ")"):
            raise TemplateError("missing ')'")
        return expr, position + 1
    if kind == "field":
        return _field(text), position + 1
    if kind == "string":
        return Const(json.loads(text)), position + 1
    if kind == "raw":
        return Const(text[1:-1]), position + 1
    if kind == "number":
        number = float(text) if any(c in text for c in ".eE") else int(text)
        return Const(number), position + 1
    if kind == "ident" and text in ("true", "false", "nil"):
        return Const({"true": True, "false": False, "nil": None}[text]), position + 1
    if kind == "variable" or (kind == "punct" and text in (":=", "=")):
        raise TemplateError("template variables are not supported")
    if kind == "ident":
        raise TemplateError(f"'{text}' must be called in parentheses when used as an argument")
    raise TemplateError(f"unexpected {text!r}")


def _field(text: str) -> Field:
    from_root = text.startswith("$")
    body = text[1:] if from_root else text
    path = tuple(part for part in body.split(".") if part)
    return Field(path, from_root)


def walk_exprs(nodes: tuple[Node, ...]) -> list[tuple[Expr, int]]:
    """Every expression with its range depth (0 = outside any range), for reference checks."""
    found: list[tuple[Expr, int]] = []

    def visit_expr(expr: Expr, depth: int) -> None:
        found.append((expr, depth))
        if isinstance(expr, Call):
            for arg in expr.args:
                visit_expr(arg, depth)

    def visit(block: tuple[Node, ...], depth: int) -> None:
        for node in block:
            if isinstance(node, Output):
                visit_expr(node.expr, depth)
            elif isinstance(node, If):
                visit_expr(node.cond, depth)
                visit(node.then, depth)
                visit(node.otherwise, depth)
            elif isinstance(node, Range):
                visit_expr(node.over, depth)
                visit(node.body, depth + 1)
                visit(node.otherwise, depth)

    visit(nodes, 0)
    return found


# --- what a field means where it appears ---------------------------------------------------

REQUEST, RESPONSE = "request", "response"


@dataclass(frozen=True)
class Reference:
    """What a field reads: `source` is args, config, resp, item, header or status."""

    source: str
    path: tuple[str, ...] = ()


def classify(field: Field, kind: str, in_range: bool) -> Reference:
    """Resolve a field in a request or response template; raises `TemplateError` when meaningless.

    Inside `range`, `.x` is the current element (`$.x` still reaches the root). At the root, a
    request template sees `.args` and `.config`; a response template sees the upstream JSON as
    `.`, plus `.args`, `._headers.NAME` and `._status`.
    """
    if in_range and not field.from_root:
        return Reference("item", field.path)
    path = field.path
    head = path[0] if path else ""
    if head == "args":
        return Reference("args", path[1:])
    if kind == REQUEST:
        if head == "config":
            if len(path) != 2:
                raise TemplateError("'.config' needs one key, e.g. '.config.apiKey'")
            return Reference("config", path[1:])
        if not path:
            raise TemplateError("'{{.}}' in a request template: use '.args.NAME' or '.config.KEY'")
        raise TemplateError(f"unknown reference '.{'.'.join(path)}' (allowed here: .args, .config)")
    if head == "_headers":
        if len(path) != 2:
            raise TemplateError("'._headers' needs one header name, e.g. '._headers.x-request-id'")
        return Reference("header", (path[1].lower(),))
    if head == "_status":
        if len(path) != 1:
            raise TemplateError("'._status' is a number and has no fields")
        return Reference("status")
    return Reference("resp", path)
