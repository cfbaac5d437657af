"""The Go-template subset parser and what its fields mean in request and response templates."""

from __future__ import annotations

import re

import pytest

from mcpgw.registry.templates import (
    REQUEST,
    RESPONSE,
    Call,
    Const,
    Field,
    If,
    Output,
    Range,
    Reference,
    TemplateError,
    Text,
    classify,
    parse,
)


@pytest.mark.parametrize(
    ("source", "nodes"),
    [
        ("a{{.args.x}}b", (Text("a"), Output(Field(("args", "x"))), Text("b"))),
        ("{{ .args.x.y | toJson }}", (Output(Call("toJson", (Field(("args", "x", "y")),))),)),
        ("{{.}}", (Output(Field(())),)),
        ("{{$.args.x}}", (Output(Field(("args", "x"), from_root=True)),)),
        ("{{.data.0.name}}", (Output(Field(("data", "0", "name"))),)),
        ('{{.a | default "x"}}', (Output(Call("default", (Const("x"), Field(("a",))))),)),
        ('{{join "," .args.tags}}', (Output(Call("join", (Const(","), Field(("args", "tags"))))),)),
        ("{{eq .a 1.5}}", (Output(Call("eq", (Field(("a",)), Const(1.5)))),)),
        (
            "{{and .a (not .b) true}}",
            (Output(Call("and", (Field(("a",)), Call("not", (Field(("b",)),)), Const(True)))),),
        ),
        ("{{`raw \\n`}}", (Output(Const("raw \\n")),)),
        ("x {{- .a -}} y", (Text("x"), Output(Field(("a",))), Text("y"))),
        (
            "{{if .a}}A{{else if .b}}B{{else}}C{{end}}",
            (If(Field(("a",)), (Text("A"),), (If(Field(("b",)), (Text("B"),), (Text("C"),)),)),),
        ),
        (
            "{{range .items}}[{{.name}}]{{else}}none{{end}}",
            (Range(Field(("items",)), (Text("["), Output(Field(("name",))), Text("]")), (Text("none"),)),),
        ),
        ("{{/* a comment */}}x", (Text("x"),)),
    ],
)
def test_parse(source: str, nodes: tuple[object, ...]) -> None:
    assert parse(source) == nodes


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{.args.x", "unbalanced"),
        ('{{printf "%s" .args.x}}', "function 'printf' is not supported"),
        ("{{with .a}}{{end}}", "action 'with' is not supported"),
        ("{{if .a}}x", "missing '{{end}}'"),
        ("{{end}}", "without a matching if or range"),
        ("{{if .a}}x{{else}}y{{else}}z{{end}}", "a second '{{else}}'"),
        ("{{range $i, $v := .a}}{{end}}", "range variables"),
        ("{{$x := 1}}", "variables are not supported"),
        ("{{.a | .b}}", "only a function can follow '|'"),
        ("{{default .a}}", "'default' takes 2 argument(s), got 1"),
        ("{{.a .b}}", "only functions take arguments"),
        ("{{upper}}", "'upper' takes 1 argument(s), got 0"),
    ],
)
def test_parse_rejects_by_name(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse(source)


def test_fields_mean_different_things_per_template_kind() -> None:
    assert classify(Field(("args", "x")), REQUEST, False) == Reference("args", ("x",))
    assert classify(Field(("config", "k")), REQUEST, False) == Reference("config", ("k",))
    assert classify(Field(("name",)), REQUEST, True) == Reference("item", ("name",))
    assert classify(Field(("args", "x"), from_root=True), REQUEST, True) == Reference("args", ("x",))
    assert classify(Field(()), RESPONSE, False) == Reference("resp", ())
    assert classify(Field(("_headers", "X-Trace")), RESPONSE, False) == Reference("header", ("x-trace",))
    assert classify(Field(("_status",)), RESPONSE, False) == Reference("status")
    assert classify(Field(("args", "q")), RESPONSE, False) == Reference("args", ("q",))
    with pytest.raises(TemplateError, match=re.escape("use '.args.NAME'")):
        classify(Field(()), REQUEST, False)
    with pytest.raises(TemplateError, match=re.escape("allowed here: .args, .config")):
        classify(Field(("data",)), REQUEST, False)
