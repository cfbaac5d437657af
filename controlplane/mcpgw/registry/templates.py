"""Parse the Higress/Go-template subset that tool definitions use into a small AST.

The filter never sees template syntax: the translator compiles this AST into the filter's
executable form. Anything outside the supported subset is rejected here, by name, so an
operator learns at validation time, not from a wrong request at run time.

Supported: literal text; `{{.args.NAME}}` and nested `{{.args.NAME.FIELD}}`; `{{.config.KEY}}`
(resolved at compile time from the server's `config`); in response templates `{{.}}` and
GJSON-style paths `{{.data.items.0.name}}`; the pipes `toJson` and `urlquery`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPPORTED_PIPES = frozenset({"toJson", "urlquery"})
_IDENT = re.compile(r"^[A-Za-z0-9_\-]+$")
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_KEYWORDS = ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")


class TemplateError(ValueError):
    """A template the gateway cannot execute; the message says why."""


@dataclass(frozen=True)
class Text:
    value: str


@dataclass(frozen=True)
class Ref:
    """A value reference: `root` is `args`, `config` or `.` (the document being templated)."""

    root: str
    path: tuple[str, ...]
    pipes: tuple[str, ...] = ()


Node = Text | Ref


def parse(source: str, *, roots: frozenset[str]) -> tuple[Node, ...]:
    """Parse `source`; `roots` says which references the context allows (`args`, `config`, `.`)."""
    nodes: list[Node] = []
    position = 0
    for match in _ACTION.finditer(source):
        if match.start() > position:
            nodes.append(Text(source[position : match.start()]))
        nodes.append(_parse_action(match.group(1), roots))
        position = match.end()
    rest = source[position:]
    if "{{" in rest or "}}" in rest:
        raise TemplateError("unbalanced '{{' or '}}'")
    if rest:
        nodes.append(Text(rest))
    return merge_text(nodes)


def merge_text(nodes: list[Node] | tuple[Node, ...]) -> tuple[Node, ...]:
    merged: list[Node] = []
    for node in nodes:
        if isinstance(node, Text) and merged and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].value + node.value)
        else:
            merged.append(node)
    return tuple(merged)


def _parse_action(action: str, roots: frozenset[str]) -> Ref:
    if not action:
        raise TemplateError("empty action '{{}}'")
    stages = [stage.strip() for stage in action.split("|")]
    head, pipes = stages[0], tuple(stages[1:])
    first_word = head.split()[0] if head.split() else head
    if first_word in _KEYWORDS:
        raise TemplateError(f"template action '{first_word}' is not supported")
    if len(pipes) > 1:
        raise TemplateError(f"chained functions '{' | '.join(pipes)}' are not supported; use one")
    for pipe in pipes:
        name = pipe.split()[0] if pipe else ""
        if name not in SUPPORTED_PIPES:
            raise TemplateError(
                f"template function '{name or pipe}' is not supported"
                f" (supported: {', '.join(sorted(SUPPORTED_PIPES))})"
            )
        if pipe != name:
            raise TemplateError(f"template function '{name}' takes no arguments")
    if not head.startswith("."):
        word = first_word.split("(")[0]
        raise TemplateError(f"template function or expression '{word}' is not supported")
    if " " in head:
        raise TemplateError(f"unsupported expression '{head}'")
    return _parse_reference(head, roots, pipes)


def _parse_reference(head: str, roots: frozenset[str], pipes: tuple[str, ...]) -> Ref:
    if head == ".":
        if "." not in roots:
            raise TemplateError("'{{.}}' is only available in response templates")
        return Ref(".", (), pipes)
    parts = head[1:].split(".")
    if any(not _IDENT.match(part) for part in parts):
        raise TemplateError(f"invalid reference '{head}'")
    root = parts[0]
    if root in ("args", "config") and root in roots:
        if len(parts) < 2:
            raise TemplateError(f"'{head}' needs a name, e.g. '.{root}.id'")
        return Ref(root, tuple(parts[1:]), pipes)
    if "." in roots:
        return Ref(".", tuple(parts), pipes)
    allowed = ", ".join(sorted(f".{r}" for r in roots if r != "."))
    raise TemplateError(f"unknown reference '{head}' (allowed here: {allowed})")


def references(nodes: tuple[Node, ...], root: str) -> list[Ref]:
    return [node for node in nodes if isinstance(node, Ref) and node.root == root]
