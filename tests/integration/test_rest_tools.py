"""REST-to-MCP, table-driven, through a real Envoy: each row is a tool definition, call arguments,
the exact request the backend must receive, and the exact MCP result (or JSON-RPC error)."""

from __future__ import annotations

import base64
import json
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from mcpgw.demo.petstore import RECORDED, RecordedRequest, record_requests
from mcpgw.httpserve import ServedApp, serve
from tests.integration.conftest import Gateway, envoy_client_headers, running_gateway
from tests.integration.mcphttp import call, post

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(20)
ENV_TOKEN = "tok-from-env-7Q"
FILE_KEY = "key-from-file-9Z"
INLINE_BASIC = "svc:p@ss-inline"
ENVOY_HEADERS = envoy_client_headers(5000)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _answer(request: web.Request) -> web.Response:
    """Fixed answers by path, so each row knows the exact bytes the filter turns into a result."""
    path = request.path
    if path.startswith("/status/"):
        body = json.dumps({"error": request.query.get("msg", "boom")}, separators=(",", ":"))
        return web.Response(
            status=int(path.split("/")[2]),
            body=body.encode(),
            content_type="application/json",
            headers={"x-request-id": "req-7"},
        )
    fixed = {
        "/json/pets": (
            b'{"data":{"items":[{"name":"Rex","tag":"dog"},{"name":"Tom","tag":"cat"}],"total":2}}',
            "application/json",
        ),
        "/json/small": (b'{"a":1}', "application/json"),
        "/image": (PNG, "image/png"),
        "/audio": (WAV, "audio/wav"),
        "/big": (b'"' + b"x" * 4094 + b'"', "application/json"),
        "/text": (b"plain answer", "text/plain"),
        "/json/envelope": (b'{"v":"\\"}]},\\"id\\":9,\\"result\\":{\\"x\\":\\"\\u0000"}', "application/json"),
    }
    body, content_type = fixed.get(path, (b'{"ok":true}', "application/json"))
    return web.Response(body=body, content_type=content_type)


def backend_app() -> web.Application:
    app = web.Application(middlewares=[record_requests])
    app[RECORDED] = []
    app.router.add_route("*", "/{tail:.*}", _answer)
    return app


@dataclass
class Case:
    id: str
    tool: dict[str, Any]
    arguments: dict[str, Any] = field(default_factory=dict)
    # (method, target, headers beyond host and Envoy's own, body) the backend must see; None: no call
    request: tuple[str, str, dict[str, str], bytes] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    client_headers: dict[str, str] = field(default_factory=dict)


def text(value: str, is_error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}], "isError": is_error}


OK = text('{"ok":true}')


def invalid_arguments(message: str) -> dict[str, Any]:
    """An argument failure as 2025-11-25 answers it (SEP-1303): a tool execution error the model reads."""
    return text(message, is_error=True)


SOAP_TEMPLATE = (
    '<?xml version="1.0" encoding="utf-8"?>\n<!-- search -->'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    "<Search lang='{{.args.lang}}' tenant=\"{{.config.tenant}}\"><q>{{.args.q}}</q><n>{{.args.n}}</n>"
    "<note><![CDATA[{{.args.note}}]]></note><role>user</role></Search></soap:Body></soap:Envelope>"
)
SOAP_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<!-- search -->'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
)
SOAP_TAIL = b"</soap:Body></soap:Envelope>"
GET = {"method": "GET"}


def arg(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, **schema}


CASES = [
    Case(
        "path-args-are-percent-encoded",
        {
            "args": [arg("id", required=True, position="path")],
            "requestTemplate": {"url": "/items/{{.args.id}}", **GET},
        },
        {"id": "a b/c.d@evil.example:80"},
        ("GET", "/items/a%20b%2Fc.d%40evil.example%3A80", {}, b""),
        OK,
    ),
    *[
        Case(
            f"dot-segment-refused-{label}",
            {"args": [arg("id", position="path")], "requestTemplate": {"url": url, **GET}},
            {"id": value},
            result=invalid_arguments(
                'invalid params: argument id: "." and ".." are not allowed as a path segment'
            ),
        )
        for label, url, value in [
            ("dotdot", "/api/users/{{.args.id}}/profile", ".."),
            ("dot", "/api/users/{{.args.id}}/profile", "."),
            ("urlquery", "/api/users/{{.args.id | urlquery}}/profile", ".."),
            ("upper", "/api/users/{{.args.id | upper}}", ".."),
            ("inside-value", "/api/users/{{.args.id}}/profile", "x/../../admin"),
            ("path-param", "/api/users/{{.args.id}}/profile", "..;x"),
            ("backslash", "/api/users/{{.args.id}}/profile", "..\\admin"),
        ]
    ],
    Case(
        "empty-segment-refused",
        {
            "args": [arg("id", position="path")],
            "requestTemplate": {"url": "/users/{{.args.id}}/delete", **GET},
        },
        {"id": ""},
        result=invalid_arguments(
            "invalid params: argument id: an empty value is not allowed as a path segment"
        ),
    ),
    Case(
        "dots-inside-a-segment-and-in-the-query-pass",
        {
            "args": [arg("id", position="path"), arg("q", position="query")],
            "requestTemplate": {"url": "/files/{{.args.id}}/x", **GET},
        },
        {"id": "...", "q": ".."},
        ("GET", "/files/.../x?q=..", {}, b""),
        OK,
    ),
    Case(
        "numbers-are-canonical-everywhere",
        {
            "args": [
                arg("id", type="integer", position="path"),
                arg("n", type="integer", position="query"),
                arg("h", type="integer", position="header"),
                arg("x", type="number", position="query"),
                arg("ids", type="array", items={"type": "integer"}),
                arg("z", type="number"),
                arg("big", type="number"),
            ],
            "requestTemplate": {"url": "/v1/pets/{{.args.id}}", "method": "POST", "argsToJsonBody": True},
        },
        {"id": 1e2, "n": 1.0, "h": -0.0, "x": 1.5e-3, "ids": [1.0, 2e1], "z": 12.50, "big": 1e300},
        (
            "POST",
            "/v1/pets/100?n=1&x=0.0015",
            {"content-type": "application/json", "h": "0"},
            b'{"ids":[1,20],"z":12.5,"big":1e+300}',
        ),
        OK,
    ),
    Case(
        "numbers-are-canonical-in-forms-and-templates",
        {
            "args": [arg("a", type="integer"), arg("b", type="number")],
            "requestTemplate": {
                "url": "/n?a={{.args.a}}",
                "method": "POST",
                "headers": [{"key": "Content-Type", "value": "application/x-www-form-urlencoded"}],
                "body": "a={{.args.a}}&b={{.args.b}}",
            },
        },
        {"a": 3.0e2, "b": -0.0},
        ("POST", "/n?a=300", {"content-type": "application/x-www-form-urlencoded"}, b"a=300&b=0"),
        OK,
    ),
    Case(
        "integer-with-a-fraction-refused",
        {"args": [arg("n", type="integer", position="query")], "requestTemplate": {"url": "/n", **GET}},
        {"n": 1.5},
        result=invalid_arguments("argument n: expected integer"),
    ),
    Case(
        "json-body-values-cannot-add-keys",
        {
            "args": [arg("q"), arg("n"), arg("o", type="object")],
            "requestTemplate": {
                "url": "/search",
                "method": "POST",
                "body": '{"q": "{{.args.q}}", "n": {{.args.n}}, "o": {{.args.o}}, "role": "user"}',
            },
        },
        {"q": 'x", "role": "admin', "n": '1, "role": "admin"', "o": {"k": 'v"}'}},
        (
            "POST",
            "/search",
            {"content-type": "application/json"},
            b'{"q": "x\\", \\"role\\": \\"admin", "n": "1, \\"role\\": \\"admin\\"", "o": {"k":"v\\"}"},'
            b' "role": "user"}',
        ),
        OK,
    ),
    Case(
        "readme-body-example-is-not-injectable",
        {
            "args": [arg("q"), arg("ids", type="array"), arg("user")],
            "requestTemplate": {
                "url": "/search",
                "method": "POST",
                "body": (
                    '{"q": "{{.args.q | default "*" | upper}}", "ids": "{{join "," .args.ids}}",'
                    ' "auth": "{{b64enc .args.user}}"}'
                ),
            },
        },
        {"q": 'x", "role": "admin', "ids": ['a"', "b"], "user": "u"},
        (
            "POST",
            "/search",
            {"content-type": "application/json"},
            b'{"q": "X\\", \\"ROLE\\": \\"ADMIN", "ids": "a\\",b", "auth": "dQ=="}',
        ),
        OK,
    ),
    Case(
        "form-body-values-cannot-add-fields",
        {
            "args": [arg("a")],
            "requestTemplate": {
                "url": "/form",
                "method": "POST",
                "headers": [{"key": "Content-Type", "value": "application/x-www-form-urlencoded"}],
                "body": "a={{.args.a}}&role=user",
            },
        },
        {"a": "x&role=admin"},
        (
            "POST",
            "/form",
            {"content-type": "application/x-www-form-urlencoded"},
            b"a=x%26role%3Dadmin&role=user",
        ),
        OK,
    ),
    Case(
        "xml-body-values-cannot-add-elements",
        {
            "args": [arg("q"), arg("lang"), arg("note"), arg("n", type="integer")],
            "requestTemplate": {
                "url": "/soap",
                "method": "POST",
                "headers": [{"key": "Content-Type", "value": "text/xml; charset=utf-8"}],
                "body": SOAP_TEMPLATE,
            },
        },
        {
            "q": "</q><role>admin</role><q>",
            "lang": "en' role='admin",
            "note": "]]><role>admin</role>",
            "n": 1,
        },
        (
            "POST",
            "/soap",
            {"content-type": "text/xml; charset=utf-8"},
            SOAP_HEAD + b"<Search lang='en&#39; role=&#39;admin' tenant=\"acme\">"
            b"<q>&lt;/q&gt;&lt;role&gt;admin&lt;/role&gt;&lt;q&gt;</q>"
            b"<n>1</n><note><![CDATA[]]]><![CDATA[]]]><![CDATA[]]><![CDATA[><role]]><![CDATA[>admin</role]]><![CDATA[>]]>"
            b"</note><role>user</role></Search>" + SOAP_TAIL,
        ),
        OK,
    ),
    Case(
        # A Higress SOAP definition with ordinary values sends what Higress sends.
        "xml-body-benign-values-unchanged",
        {
            "args": [arg("q"), arg("lang"), arg("note"), arg("n", type="integer")],
            "requestTemplate": {
                "url": "/soap",
                "method": "POST",
                "headers": [{"key": "Content-Type", "value": "application/soap+xml"}],
                "body": SOAP_TEMPLATE,
            },
        },
        {"q": "blue cat", "lang": "en-GB", "note": "if a < b & c", "n": 7},
        (
            "POST",
            "/soap",
            {"content-type": "application/soap+xml"},
            SOAP_HEAD + b"<Search lang='en-GB' tenant=\"acme\"><q>blue cat</q><n>7</n>"
            b"<note><![CDATA[if a < b & c]]></note>"
            b"<role>user</role></Search>" + SOAP_TAIL,
        ),
        OK,
    ),
    Case(
        "xml-raw-body-opts-out",
        {
            "args": [arg("filter")],
            "requestTemplate": {
                "url": "/xml",
                "method": "POST",
                "rawBody": True,
                "headers": [{"key": "Content-Type", "value": "application/xml"}],
                "body": "<search>{{.args.filter}}<limit>10</limit></search>",
            },
        },
        {"filter": "<and><tag>dog</tag></and>"},
        (
            "POST",
            "/xml",
            {"content-type": "application/xml"},
            b"<search><and><tag>dog</tag></and><limit>10</limit></search>",
        ),
        OK,
    ),
    Case(
        # text/plain has no structure to escape: values are inserted as they are.
        "text-body-is-raw",
        {
            "args": [arg("v")],
            "requestTemplate": {
                "url": "/text-in",
                "method": "POST",
                "headers": [{"key": "Content-Type", "value": "text/plain"}],
                "body": "note: {{.args.v}}\n",
            },
        },
        {"v": '<a href="x">&amp;</a> {"k": 1}'},
        ("POST", "/text-in", {"content-type": "text/plain"}, b'note: <a href="x">&amp;</a> {"k": 1}\n'),
        OK,
    ),
    Case(
        "query-template-values-cannot-add-parameters",
        {"args": [arg("q")], "requestTemplate": {"url": "/s?q={{.args.q}}&role=user", **GET}},
        {"q": "x&role=admin#"},
        ("GET", "/s?q=x%26role%3Dadmin%23&role=user", {}, b""),
        OK,
    ),
    Case(
        "response-template-cannot-break-the-json-rpc-envelope",
        {"requestTemplate": {"url": "/json/envelope", **GET}, "responseTemplate": {"body": "v={{.v}}"}},
        {},
        ("GET", "/json/envelope", {}, b""),
        text('v="}]},"id":9,"result":{"x":"\x00'),
    ),
    Case(
        "raw-body-opts-out",
        {
            "args": [arg("filter")],
            "requestTemplate": {
                "url": "/search",
                "method": "POST",
                "rawBody": True,
                "body": '{"filter": {{.args.filter}}, "limit": 10}',
            },
        },
        {"filter": '{"a": [1, 2]}'},
        ("POST", "/search", {"content-type": "application/json"}, b'{"filter": {"a": [1, 2]}, "limit": 10}'),
        OK,
    ),
    Case(
        "query-position-and-defaults",
        {
            "args": [
                arg("q", position="query"),
                arg("limit", type="integer", default=10, position="query"),
                arg("flag", type="boolean", position="query"),
            ],
            "requestTemplate": {"url": "/search", **GET},
        },
        {"q": "a&b c"},
        ("GET", "/search?q=a%26b%20c&limit=10", {}, b""),
        OK,
    ),
    Case(
        "args-to-url-param",
        {
            "args": [arg("x"), arg("n", type="integer")],
            "requestTemplate": {"url": "/p?fixed=1", "argsToUrlParam": True, **GET},
        },
        {"x": "1", "n": 2},
        ("GET", "/p?fixed=1&x=1&n=2", {}, b""),
        OK,
    ),
    Case(
        "header-and-cookie-positions",
        {
            "args": [
                arg("X-Trace", position="header"),
                arg("sid", position="cookie"),
                arg("lang", position="cookie"),
            ],
            "requestTemplate": {
                "url": "/h",
                "headers": [{"key": "X-Static", "value": "s-{{.config.tenant}}"}],
                **GET,
            },
        },
        {"X-Trace": "t1", "sid": "s 1", "lang": "en"},
        ("GET", "/h", {"x-static": "s-acme", "x-trace": "t1", "cookie": "sid=s%201; lang=en"}, b""),
        OK,
    ),
    Case(
        # Header values have no grammar the gateway can know: ',' and ';' go out as they are
        # (documented); cookies come only from `position: cookie` arguments, percent-encoded.
        "header-values-are-inserted-as-they-are",
        {
            "args": [arg("v"), arg("X-Raw", position="header"), arg("sid", position="cookie")],
            "requestTemplate": {
                "url": "/h",
                "headers": [{"key": "X-List", "value": "a, {{.args.v}}"}],
                **GET,
            },
        },
        {"v": "b, c; q=1", "X-Raw": "x; y=1, z", "sid": "1; admin=true"},
        (
            "GET",
            "/h",
            {"x-list": "a, b, c; q=1", "x-raw": "x; y=1, z", "cookie": "sid=1%3B%20admin%3Dtrue"},
            b"",
        ),
        OK,
    ),
    Case(
        "args-to-json-body",
        {
            "args": [
                arg("name", required=True),
                arg("tags", type="array"),
                arg("n", type="integer"),
                arg("id", position="path"),
            ],
            "requestTemplate": {"url": "/pets/{{.args.id}}", "method": "PUT", "argsToJsonBody": True},
        },
        {"id": "7", "name": "Kit", "tags": ["a", "b"], "n": 3},
        ("PUT", "/pets/7", {"content-type": "application/json"}, b'{"name":"Kit","tags":["a","b"],"n":3}'),
        OK,
    ),
    Case(
        "args-to-form-body",
        {
            "args": [arg("name"), arg("note")],
            "requestTemplate": {"url": "/form", "method": "POST", "argsToFormBody": True},
        },
        {"name": "Kit", "note": "a b&c"},
        ("POST", "/form", {"content-type": "application/x-www-form-urlencoded"}, b"name=Kit&note=a%20b%26c"),
        OK,
    ),
    Case(
        "body-template-functions-conditionals-and-range",
        {
            "args": [
                arg("name"),
                arg("pad"),
                arg("tags", type="array"),
                arg("flag", type="boolean"),
                arg("items", type="array"),
                arg("missing"),
            ],
            "requestTemplate": {
                "url": "/t",
                "method": "POST",
                "body": (
                    '{"who":{{.args.name | quote}},"up":"{{.args.name | upper}}",'
                    '"low":"{{lower .args.name}}","t":"{{trim .args.pad}}","tags":"{{join "," .args.tags}}",'
                    '"b64":"{{b64enc .args.name}}",'
                    '"d":"{{.args.missing | default "dflt"}}","j":{{toJson .args.tags}}'
                    '{{if .args.flag}},"flag":true{{else}},"flag":false{{end}},'
                    '"list":[{{range .args.items}}{{.id}},{{end}}0],"cfg":"{{.config.tenant}}",'
                    '"q":"{{urlquery .args.pad}}","n":{{len .args.tags}}'
                    '{{if and .args.flag (eq .args.name "Kit")}},"kit":1{{end}}}'
                ),
            },
        },
        {"name": "Kit", "pad": "  x y  ", "tags": ["a", "b"], "flag": True, "items": [{"id": 1}, {"id": 2}]},
        (
            "POST",
            "/t",
            {"content-type": "application/json"},
            b'{"who":"Kit","up":"KIT","low":"kit","t":"x y","tags":"a,b","b64":"S2l0","d":"dflt",'
            b'"j":["a","b"],"flag":true,"list":[1,2,0],"cfg":"acme","q":"++x+y++","n":2,"kit":1}',
        ),
        OK,
    ),
    Case(
        "response-template-with-range-len-and-args",
        {
            "args": [arg("who")],
            "requestTemplate": {"url": "/json/pets", **GET},
            "responseTemplate": {
                "body": "{{range .data.items}}- {{.name}} ({{.tag}})\n{{end}}"
                "total={{.data.total}} of {{len .data.items}} for {{.args.who}}"
            },
        },
        {"who": "me"},
        ("GET", "/json/pets", {}, b""),
        text("- Rex (dog)\n- Tom (cat)\ntotal=2 of 2 for me"),
    ),
    Case(
        "prepend-and-append-body",
        {
            "requestTemplate": {"url": "/json/small", **GET},
            "responseTemplate": {"prependBody": "Result: ", "appendBody": " (end)"},
        },
        {},
        ("GET", "/json/small", {}, b""),
        text('Result: {"a":1} (end)'),
    ),
    Case(
        "error-template-sees-status-headers-and-body",
        {
            "requestTemplate": {"url": "/status/409?msg=conflict", **GET},
            "errorResponseTemplate": "failed {{._status}}: {{.error}} [{{._headers.x-request-id}}]",
        },
        {},
        ("GET", "/status/409?msg=conflict", {}, b""),
        text("failed 409: conflict [req-7]", is_error=True),
    ),
    Case(
        "non-2xx-without-template-is-raw-error",
        {"requestTemplate": {"url": "/status/500?msg=boom", **GET}},
        {},
        ("GET", "/status/500?msg=boom", {}, b""),
        text('{"error":"boom"}', is_error=True),
    ),
    Case(
        "output-schema-gives-structured-content",
        {
            "requestTemplate": {"url": "/json/small", **GET},
            "outputSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
        },
        {},
        ("GET", "/json/small", {}, b""),
        {**text('{"a":1}'), "structuredContent": {"a": 1}},
    ),
    Case(
        "image-answer-becomes-image-content",
        {"requestTemplate": {"url": "/image", **GET}},
        {},
        ("GET", "/image", {}, b""),
        {
            "content": [{"type": "image", "data": base64.b64encode(PNG).decode(), "mimeType": "image/png"}],
            "isError": False,
        },
    ),
    Case(
        "audio-answer-becomes-audio-content",
        {"requestTemplate": {"url": "/audio", **GET}},
        {},
        ("GET", "/audio", {}, b""),
        {
            "content": [{"type": "audio", "data": base64.b64encode(WAV).decode(), "mimeType": "audio/wav"}],
            "isError": False,
        },
    ),
    Case(
        "answer-over-the-size-limit-is-an-error-result",
        {"requestTemplate": {"url": "/big", **GET}},
        {},
        ("GET", "/big", {}, b""),
        text("upstream response of 4096 bytes exceeds the limit of 2048 bytes", is_error=True),
    ),
    Case(
        "enum-violation",
        {"args": [arg("mode", enum=["fast", "slow"])], "requestTemplate": {"url": "/e", **GET}},
        {"mode": "medium"},
        result=invalid_arguments('argument mode: must be one of ["fast","slow"]'),
    ),
    Case(
        "array-items-type-violation",
        {
            "args": [arg("ids", type="array", items={"type": "integer"})],
            "requestTemplate": {"url": "/e", **GET},
        },
        {"ids": [1, "x"]},
        result=invalid_arguments("argument ids[1]: expected integer"),
    ),
    Case(
        "type-violation",
        {"args": [arg("n", type="integer")], "requestTemplate": {"url": "/e", **GET}},
        {"n": "3"},
        result=invalid_arguments("argument n: expected integer"),
    ),
    Case(
        "missing-required",
        {"args": [arg("id", required=True)], "requestTemplate": {"url": "/e", **GET}},
        {},
        result=invalid_arguments("missing required argument: id"),
    ),
    Case(
        "crlf-in-header-value-is-refused",
        {"args": [arg("X-Note", position="header")], "requestTemplate": {"url": "/e", **GET}},
        {"X-Note": "a\r\nX-Evil: 1"},
        result=invalid_arguments(
            "argument X-Note: contains a control character, which header x-note cannot carry "
            "(only tab is allowed)"
        ),
    ),
    Case(
        "registry-bearer-from-env",
        {"requestTemplate": {"url": "/auth", "security": {"id": "bearer"}, **GET}},
        {},
        ("GET", "/auth", {"authorization": f"Bearer {ENV_TOKEN}"}, b""),
        OK,
    ),
    Case(
        "registry-basic-inline",
        {"requestTemplate": {"url": "/auth", "security": {"id": "basic"}, **GET}},
        {},
        ("GET", "/auth", {"authorization": "Basic " + base64.b64encode(INLINE_BASIC.encode()).decode()}, b""),
        OK,
    ),
    Case(
        "registry-api-key-in-query-from-file",
        {"requestTemplate": {"url": "/auth?x=1", "security": {"id": "querykey"}, **GET}},
        {},
        ("GET", f"/auth?x=1&api_key={FILE_KEY}", {}, b""),
        OK,
    ),
    Case(
        "per-tool-credential-override",
        {"requestTemplate": {"url": "/auth", "security": {"id": "basic", "credential": "alt:pw"}, **GET}},
        {},
        ("GET", "/auth", {"authorization": "Basic YWx0OnB3"}, b""),
        OK,
    ),
    Case(
        "passthrough-in-the-backends-scheme",
        {
            "security": {"id": "client", "passthrough": True},
            "requestTemplate": {"url": "/auth", "security": {"id": "headerkey"}, **GET},
        },
        {},
        ("GET", "/auth", {"x-api-key": "user-token-1"}, b""),
        OK,
        client_headers={"authorization": "Bearer user-token-1"},
    ),
    Case(
        "passthrough-without-client-credential",
        {
            "security": {"id": "client", "passthrough": True},
            "requestTemplate": {"url": "/auth", "security": {"id": "headerkey"}, **GET},
        },
        {},
        None,
        text("this tool needs the client's credential in authorization", is_error=True),
    ),
    Case(
        "client-authorization-is-not-forwarded-without-a-scheme",
        {"requestTemplate": {"url": "/plain", **GET}},
        {},
        ("GET", "/plain", {}, b""),
        OK,
        client_headers={"authorization": "Bearer must-not-leak"},
    ),
]


def registry_document(backend: ServedApp, secret_file: Path) -> dict[str, Any]:
    tools = []
    for case in CASES:
        tools.append({"name": case.id, "description": case.id.replace("-", " "), **case.tool})
    return {
        "kind": "McpServer",
        "name": "rest",
        "backend": {"endpoints": [f"127.0.0.1:{backend.port}"], "host": "rest.internal", "timeoutMs": 5000},
        "config": {"tenant": "acme"},
        "limits": {"maxRequestBytes": 4096, "maxResponseBytes": 2048},
        "securitySchemes": [
            {
                "id": "bearer",
                "type": "http",
                "scheme": "bearer",
                "defaultCredential": {"env": "MCPGW_CRED_TEST_TOKEN"},
            },
            {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": INLINE_BASIC},
            {
                "id": "querykey",
                "type": "apiKey",
                "in": "query",
                "name": "api_key",
                "defaultCredential": {"file": str(secret_file)},
            },
            {"id": "headerkey", "type": "apiKey", "in": "header", "name": "X-Api-Key"},
            {"id": "client", "type": "http", "scheme": "bearer"},
        ],
        "tools": tools,
    }


def extra_servers(other: ServedApp) -> list[dict[str, Any]]:
    echo = {"requestTemplate": {"url": "/json/small", "method": "GET"}}
    return [
        {
            "kind": "McpServer",
            "name": "other",
            "backend": {
                "endpoints": [f"127.0.0.1:{other.port}"],
                "host": "other.internal",
                "timeoutMs": 5000,
            },
            "tools": [{"name": "fromOther", **echo}, {"name": "hidden", **echo}],
            "allowTools": ["fromOther"],
        },
        {
            "kind": "McpServer",
            "name": "composed",
            "description": "Tools of two servers behind one endpoint.",
            "include": [
                {"server": "default/other", "tools": ["fromOther"]},
                {"server": "default/rest", "tools": ["prepend-and-append-body"]},
            ],
        },
    ]


@dataclass
class Setup:
    gateway: Gateway
    backend: ServedApp
    other: ServedApp

    @property
    def seen(self) -> list[RecordedRequest]:
        return self.backend.runner.app[RECORDED]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    workdir = tmp_path_factory.mktemp("rest")
    secret_file = workdir / "api-key"
    secret_file.write_text(FILE_KEY + "\n")
    backend = await serve(backend_app(), "127.0.0.1", 0)
    other = await serve(backend_app(), "127.0.0.1", 0)
    registry = workdir / "registry"
    registry.mkdir()
    documents = [registry_document(backend, secret_file), *extra_servers(other)]
    (registry / "rest.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    previous = os.environ.get("MCPGW_CRED_TEST_TOKEN")
    os.environ["MCPGW_CRED_TEST_TOKEN"] = ENV_TOKEN
    try:
        async with running_gateway(workdir, registry) as gateway:
            yield Setup(gateway, backend, other)
    finally:
        if previous is None:
            os.environ.pop("MCPGW_CRED_TEST_TOKEN", None)
        await backend.close()
        await other.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rest_tool(setup: Setup, case: Case) -> None:
    before = len(setup.seen)
    url = f"{setup.gateway.stack.mcp_base_url}/mcp/default/rest"
    answer = await call(
        url, "tools/call", {"name": case.id, "arguments": case.arguments}, **case.client_headers
    )
    if case.error is not None:
        assert answer.get("error") == case.error, answer
    else:
        assert answer.get("result") == case.result, answer
    if case.request is None:
        assert len(setup.seen) == before, "the backend must not be called"
        return
    assert len(setup.seen) == before + 1, "exactly one backend request"
    seen = setup.seen[-1]
    method, target, headers, body = case.request
    assert (seen.method, f"{seen.path}?{seen.query}" if seen.query else seen.path) == (method, target)
    expected_headers = {"host": "rest.internal", **headers, **ENVOY_HEADERS}
    if body or method in ("POST", "PUT", "PATCH"):
        expected_headers["content-length"] = str(len(body))
    assert seen.headers == expected_headers
    assert seen.body == body


# Values aimed at every way out of element text, a quoted attribute and a CDATA section, and at
# what XML 1.0 cannot hold at all.
HOSTILE_XML = [
    "</q><role>admin</role><q>",
    "' role='admin",
    '" role="admin',
    "]]><role>admin</role><![CDATA[",
    "]]]]>>]",
    ">",
    "&lt;&#60;&#x3C;&amp;",
    "<!-- x --><?pi x?><!DOCTYPE x>",
    "a\tb\nc\r\nd\re",
    "\x00\x01\x1f\ufffe\uffff \x7f é 😀",
    "",
]


def _xml_text(value: str) -> str:
    """What a parser reads back: XML 1.0 has no way to write these characters, the gateway sends
    U+FFFD."""
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", value)


async def test_xml_body_values_read_back_as_sent(setup: Setup) -> None:
    """Each hostile value, through Envoy, parses back as itself in element text, a quoted attribute
    and a CDATA section, and the document keeps exactly its elements."""
    url = f"{setup.gateway.stack.mcp_base_url}/mcp/default/rest"
    for value in HOSTILE_XML:
        arguments = {"q": value, "lang": value, "note": value, "n": 1}
        answer = await call(
            url, "tools/call", {"name": "xml-body-values-cannot-add-elements", "arguments": arguments}
        )
        assert answer.get("result") == OK, (value, answer)
        body = setup.seen[-1].body
        search = ElementTree.fromstring(body).find("./*/Search")
        assert search is not None, body
        assert [child.tag for child in search] == ["q", "n", "note", "role"], body
        assert search.attrib == {"lang": _xml_text(value), "tenant": "acme"}, body
        assert [search.findtext(tag) for tag in ("q", "n", "note", "role")] == [
            _xml_text(value),
            "1",
            _xml_text(value),
            "user",
        ], body


async def test_number_spellings_reach_the_backend_canonical(setup: Setup) -> None:
    """The probe's `/v1/pets/1E+2`: JSON spellings Python would not write, sent as raw bytes."""
    url = f"{setup.gateway.stack.mcp_base_url}/mcp/default/rest"
    spellings = [("1E+2", "100"), ("1.0", "1"), ("-0", "0"), ("2.50e1", "25"), ("100e-2", "1")]
    for spelling, canonical in spellings:
        before = len(setup.seen)
        raw = (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"numbers-are-canonical-everywhere",'
            f'"arguments":{{"id":{spelling},"n":{spelling},"h":{spelling},"x":{spelling}}}}}}}'
        )
        answer = (await post(url, raw=raw.encode())).json()
        assert answer.get("result") == OK, answer
        seen = setup.seen[before]
        assert (seen.path, seen.query, seen.headers["h"]) == (
            f"/v1/pets/{canonical}",
            f"n={canonical}&x={canonical}",
            canonical,
        )
    for spelling, message in [
        ("1E+999999999", "argument id: number out of range (an integer has at most 64 digits)"),
        ("1.0000000000000000001", "argument id: expected integer"),
    ]:
        before = len(setup.seen)
        raw = (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"numbers-are-canonical-everywhere",'
            f'"arguments":{{"id":{spelling}}}}}}}'
        )
        answer = (await post(url, raw=raw.encode())).json()
        assert answer.get("result") == invalid_arguments(message), answer
        assert len(setup.seen) == before
    # A `number` keeps an exponent the plain form could not hold in 64 digits, never expanding it.
    raw = (
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"numbers-are-canonical-everywhere",'
        '"arguments":{"id":1,"x":1E+999999999}}}'
    )
    answer = (await post(url, raw=raw.encode())).json()
    assert answer.get("result") == OK, answer
    assert setup.seen[-1].query == "x=1e%2B999999999"


async def test_allow_tools_and_composed_tool_sets(setup: Setup) -> None:
    base = setup.gateway.stack.mcp_base_url
    listed = await call(f"{base}/mcp/default/other", "tools/list", {})
    assert [t["name"] for t in listed["result"]["tools"]] == ["fromOther"]
    refused = await call(f"{base}/mcp/default/other", "tools/call", {"name": "hidden", "arguments": {}})
    assert refused["error"]["code"] == -32602 and "hidden" in refused["error"]["message"]

    composed = f"{base}/mcp/default/composed"
    listed = await call(composed, "tools/list", {})
    assert [t["name"] for t in listed["result"]["tools"]] == ["fromOther", "prepend-and-append-body"]
    other_before, rest_before = len(setup.other.runner.app[RECORDED]), len(setup.seen)
    assert (await call(composed, "tools/call", {"name": "fromOther", "arguments": {}}))["result"] == text(
        '{"a":1}'
    )
    assert (await call(composed, "tools/call", {"name": "prepend-and-append-body", "arguments": {}}))[
        "result"
    ] == text('Result: {"a":1} (end)')
    # Each composed tool calls the backend of the server that defines it, with that server's Host.
    assert setup.other.runner.app[RECORDED][-1].headers["host"] == "other.internal"
    assert len(setup.other.runner.app[RECORDED]) == other_before + 1 and len(setup.seen) == rest_before + 1


async def test_credentials_never_reach_logs_or_status(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    control_plane = setup.gateway.stack.control_plane
    assert control_plane is not None and control_plane.store.snapshot is not None
    with caplog.at_level("DEBUG"):
        await control_plane.apply(control_plane.store.snapshot)
    status = json.dumps(control_plane.status())
    for secret in (ENV_TOKEN, FILE_KEY, INLINE_BASIC, base64.b64encode(INLINE_BASIC.encode()).decode()):
        assert secret not in caplog.text and secret not in status
    assert setup.gateway.stack.envoy is not None
    # Envoy's own config dump shows the Wasm plugin configuration, registry credentials included:
    # that is Envoy's exposure (admin is bound to loopback), documented in docs/registry.md. A client's
    # passthrough credential is never part of any configuration.
    dump = setup.gateway.stack.envoy.admin("/config_dump")
    assert ENV_TOKEN in dump
    assert "user-token-1" not in dump


async def test_request_over_the_size_limit_is_refused_before_any_call(setup: Setup) -> None:
    url = f"{setup.gateway.stack.mcp_base_url}/mcp/default/rest"
    before = len(setup.seen)
    padding = "x" * 5000
    payload = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "args-to-json-body", "arguments": {"name": padding}},
    }
    response = await post(url, payload)
    assert response.status_code == 413
    assert len(setup.seen) == before
