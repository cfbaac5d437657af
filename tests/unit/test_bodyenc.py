"""Context-dependent encoding of request body templates (registry/bodyenc.py)."""

from __future__ import annotations

from typing import Any

import pytest

from mcpgw.registry import bodyenc, templates
from mcpgw.registry.validate import Invalid, parse_server
from mcpgw.translate.filterconfig import compile_template
from tests.unit.test_registry import minimal
from tests.unit.test_translate import config_of


def encoded(source: str, media_type: str = "application/json", raw_body: bool = False) -> list[str]:
    """The enc of every output, in document order (then/else and range bodies inline)."""
    nodes = templates.parse(source)
    compiled = compile_template(
        nodes,
        templates.REQUEST,
        {"limit": "10", "x": "a", "n": "1"},
        "raw",
        bodyenc.encodings(nodes, media_type, raw_body),
    )
    found: list[str] = []

    def visit(items: list[dict[str, Any]]) -> None:
        for item in items:
            if "out" in item:
                found.append(item["enc"])
            for key in ("then", "else", "do"):
                visit(item.get(key, []))

    visit(compiled)
    return found


@pytest.mark.parametrize(
    ("source", "encs"),
    [
        # Inside quotes: the characters of a JSON string.
        ('{"q": "{{.args.q}}"}', ["json_string"]),
        ('{"q": "a {{.args.q}} b {{.args.r | upper}}"}', ["json_string", "json_string"]),
        ('{"k-{{.args.k}}": 1}', ["json_string"]),
        ('{"q": "\\"{{.args.q}}\\""}', ["json_string"]),
        # Value position: a JSON value; toJson and quote already produce one.
        ('{"n": {{.args.n}}, "s": {{.args.s | quote}}, "o": {{toJson .args.o}}}', ["json", "raw", "raw"]),
        ("[{{.args.a}}, {{.args.b}}]", ["json", "json"]),
        # What the operator wrote is inserted as Higress does; a client value mixed in is not.
        (
            '{"l": {{.config.limit}}, "m": {{default 5 .args.m}}, "c": {{upper .config.x}}, "k": {{3}}}',
            ["raw", "json", "raw", "raw"],
        ),
        ("[{{range .args.l}}{{.config}},{{$.config.n}},{{end}}0]", ["json", "raw"]),
        # Branches and loops that keep the JSON shape.
        (
            '{"a": 1{{if .args.f}}, "f": "{{.args.f}}"{{else}}, "g": {{.args.g}}{{end}}}',
            ["json_string", "json"],
        ),
        ('{"l": [{{range .args.items}}{{.id}},{{end}}0]}', ["json"]),
        ('{"l": [{{range .args.items}}"{{.}}",{{end}}"x"]}', ["json_string"]),
        # docs/registry.md's example.
        (
            '{"q": "{{.args.q | default "*" | upper}}", "ids": "{{join "," .args.ids}}",'
            ' "auth": "{{b64enc .args.user}}"}',
            ["json_string", "json_string", "json_string"],
        ),
        # The whole document from one value: the client's by design.
        ("{{.args.body}}", ["raw"]),
        ("  {{toJson .args}}\n", ["raw"]),
    ],
)
def test_json_context_of_each_output(source: str, encs: list[str]) -> None:
    assert encoded(source) == encs
    assert encoded(source, "application/vnd.api+json; charset=utf-8") == encs


def test_form_bodies_percent_encode_and_other_types_stay_raw() -> None:
    form = "application/x-www-form-urlencoded"
    assert encoded("a={{.args.a}}&b={{.args.b | urlquery}}", form) == ["query", "raw"]
    assert encoded("<q>{{.args.q}}</q>", "text/plain") == ["raw"]
    assert encoded("q={{.args.q}}; {{.args.r}}", "text/csv") == ["raw", "raw"]
    assert encoded('{"q": "{{.args.q}}"}', raw_body=True) == ["raw"]
    assert encoded("<q>{{.args.q}}</q>", "application/xml", raw_body=True) == ["raw"]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{ {{.args.k}}: 1}", "expects a key; put it inside quotes"),
        ('{"a": 1 {{.args.x}} }', "expects ',' or the end of an object or array"),
        ('{"a": 1{{.args.x}}}', "expects ',' or the end of an object or array"),
        ('{"a" {{.args.x}}}', "expects ':'"),
        ('{"a": 1, }x', "'x' after"),
        ('{"a": {{.args.x}}', "the document is incomplete"),
        ('{"a": "{{.args.x}}}', "the document is incomplete"),
        ('{"a": 1{{if .args.f}}, "f": {{.args.f}}{{else}}, "g": [{{end}}}', "the branches of an 'if'"),
        ('[{{range .args.l}}{"a": {{.}}{{end}}]', "the body of a 'range'"),
        ("not json {{.args.x}}", "is not valid JSON"),
    ],
)
def test_outputs_where_no_encoding_is_safe_are_refused(source: str, reason: str) -> None:
    with pytest.raises(templates.TemplateError, match="rawBody: true") as error:
        bodyenc.encodings(templates.parse(source), "application/json", raw_body=False)
    assert reason in str(error.value)


def test_validation_names_the_body_and_raw_body_opts_out() -> None:
    document = minimal()
    document["tools"][0]["args"] = [{"name": "f"}]
    document["tools"][0]["requestTemplate"] = {"url": "/x", "method": "POST", "body": "{ {{.args.f}} }"}
    with pytest.raises(Invalid) as error:
        parse_server(document)
    assert any(
        p.path == "tools[0].requestTemplate.body" and "rawBody: true" in p.reason
        for p in error.value.problems
    ), error.value.problems
    document["tools"][0]["requestTemplate"]["rawBody"] = True
    parse_server(document)
    # rawBody without a body template is a mistake worth naming.
    document["tools"][0]["requestTemplate"] = {"url": "/x", "method": "POST", "rawBody": True}
    with pytest.raises(Invalid) as error:
        parse_server(document)
    assert [p.path for p in error.value.problems] == ["tools[0].requestTemplate.rawBody"]


def test_filter_config_carries_each_outputs_encoding() -> None:
    document = minimal()
    document["tools"][0]["args"] = [{"name": "q"}, {"name": "n", "type": "integer"}]
    document["tools"][0]["requestTemplate"] = {
        "url": "/x",
        "method": "POST",
        "headers": [{"key": "Content-Type", "value": "application/json; charset=utf-8"}],
        "body": '{"q": "{{.args.q}}", "n": {{.args.n}}}',
    }
    body = config_of(document)["tools"][0]["request"]["body"]
    assert body == {
        "kind": "template",
        "content_type": "application/json; charset=utf-8",
        "template": [
            {"lit": '{"q": "'},
            {"out": {"args": ["q"]}, "enc": "json_string"},
            {"lit": '", "n": '},
            {"out": {"args": ["n"]}, "enc": "json"},
            {"lit": "}"},
        ],
    }
    document["tools"][0]["requestTemplate"]["rawBody"] = True
    template = config_of(document)["tools"][0]["request"]["body"]["template"]
    assert [node.get("enc") for node in template] == [None, "raw", None, "raw", None]


SOAP = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    "<!-- a SOAP call -->\n"
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soap:Body><GetQuote a='{{.args.a}}' b=\"x {{.config.x}}\"><q>{{.args.q}}</q>"
    "<n>{{.config.n}}</n><c><![CDATA[{{.args.c}}]]></c></GetQuote></soap:Body></soap:Envelope>\n"
)


@pytest.mark.parametrize(
    ("source", "encs"),
    [
        # Element text and quoted attribute values: escaped; CDATA: split around ']]>'.
        (SOAP, ["xml", "xml", "xml", "raw", "xml_cdata"]),
        ("<r><q>a {{.args.q}} b {{.args.r | upper}}</q></r>", ["xml", "xml"]),
        ("<r x = \"{{.args.x}}\" y='&amp;{{.args.y}}'/>", ["xml", "xml"]),
        (
            "<r>&amp;{{.args.q}}&#60;<![CDATA[ ]] {{.args.c}}]]> <e/>{{.args.t}}</r>",
            ["xml", "xml_cdata", "xml"],
        ),
        # The operator's own values stay raw in element text, even outside the root element.
        ("{{.config.x}}<r>{{.config.x}}{{.args.q}}</r>", ["raw", "raw", "xml"]),
        # Branches and loops that keep the markup's shape.
        ("<r>{{if .args.f}}<f v='{{.args.f}}'/>{{else}}<g>{{.args.g}}</g>{{end}}</r>", ["xml", "xml"]),
        ("<r>{{range .args.l}}<i>{{.}}</i>{{end}}</r>", ["xml"]),
        ('<r a="{{range .args.l}}{{.}} {{end}}"/>', ["xml"]),
        # The whole body as one value is the client's own document.
        ("  {{.args.body}}\n", ["raw"]),
    ],
)
def test_xml_context_of_each_output(source: str, encs: list[str]) -> None:
    for media_type in (
        "application/xml",
        "text/xml; charset=utf-8",
        "application/soap+xml",
        "Application/Atom+XML",
    ):
        assert encoded(source, media_type) == encs, media_type


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("<{{.args.tag}}/>", "sits in a tag name"),
        ("<a{{.args.tag}}/>", "sits in a tag name"),
        ("<r></{{.args.tag}}>", "sits in a closing tag"),
        ("<r {{.args.attr}}/>", "where an attribute name is expected"),
        ('<r a="1" {{.args.attr}}="2"/>', "where an attribute name is expected"),
        ("<r a{{.args.attr}}='2'/>", "sits in an attribute name"),
        ("<r a={{.args.v}}/>", "in an unquoted attribute value"),
        ("<r>&{{.args.e}};</r>", "sits in a reference in element text"),
        ("<r a='&{{.args.e}};'/>", "sits in a reference in '…'"),
        ("<r><!-- {{.args.c}} --></r>", "sits in a comment"),
        ("<?pi {{.args.c}}?><r/>", "sits in a processing instruction"),
        ("<!DOCTYPE {{.args.c}}><r/>", "sits in a DOCTYPE declaration"),
        ("<!{{.args.c}}><r/>", "sits in a declaration"),
        ("{{.args.q}}<r/>", "outside the root element"),
        ("<r/>{{.args.q}}", "outside the root element"),
        ("<r>{{.args.q}}", "with 1 element(s) still open"),
        ("<r><![CDATA[{{.args.q}}</r>", "ends inside a CDATA section"),
        # With an empty value, the ']]' before it and the '>' after it would end the section.
        ("<r><![CDATA[]]{{.args.a}}>{{.args.b}}]]></r>", "right after ']' in a CDATA section"),
        ("<r><![CDATA[]{{.args.a}}]>]]></r>", "right after ']' in a CDATA section"),
        ("<r a='{{.args.q}}/>", "ends inside an attribute value in '…'"),
        ("<r>{{.args.q}}</r></s>", "expected an element to close"),
        ("<r a=1>{{.args.q}}</r>", "not well-formed XML (expected a quoted attribute value)"),
        ("<r>{{.args.q}}</r><!x>", "expected '--', '[CDATA[' or 'DOCTYPE' after '<!'"),
        ("<r>{{if .args.f}}<f>{{.args.f}}{{end}}</r>", "the branches of an 'if'"),
        ("<r>{{range .args.l}}<i>{{.}}{{end}}</r>", "the body of a 'range'"),
        ("<r><![CDATA[ {{.config.x}} ]]{{if .args.f}}>{{end}}</r>", "the branches of an 'if'"),
    ],
)
def test_xml_outputs_where_no_escaping_is_safe_are_refused(source: str, reason: str) -> None:
    with pytest.raises(templates.TemplateError, match="rawBody: true") as error:
        bodyenc.encodings(templates.parse(source), "application/xml", raw_body=False)
    assert reason in str(error.value)


def test_xml_templates_without_values_are_not_checked() -> None:
    # A body without values is the operator's markup as written, as in Higress.
    assert bodyenc.encodings(templates.parse("<r a=1>no values"), "application/xml", raw_body=False) == {}


def test_xml_body_in_the_filter_config_and_validation() -> None:
    document = minimal()
    document["tools"][0]["args"] = [{"name": "q"}]
    document["tools"][0]["requestTemplate"] = {
        "url": "/x",
        "method": "POST",
        "headers": [{"key": "Content-Type", "value": "text/xml; charset=utf-8"}],
        "body": "<q>{{.args.q}}</q>",
    }
    body = config_of(document)["tools"][0]["request"]["body"]
    assert body["template"] == [{"lit": "<q>"}, {"out": {"args": ["q"]}, "enc": "xml"}, {"lit": "</q>"}]
    document["tools"][0]["requestTemplate"]["body"] = "<q {{.args.q}}/>"
    with pytest.raises(Invalid) as error:
        parse_server(document)
    assert [(p.path, "rawBody: true" in p.reason) for p in error.value.problems] == [
        ("tools[0].requestTemplate.body", True)
    ]
    document["tools"][0]["requestTemplate"]["rawBody"] = True
    template = config_of(document)["tools"][0]["request"]["body"]["template"]
    assert [node.get("enc") for node in template] == [None, "raw", None]
