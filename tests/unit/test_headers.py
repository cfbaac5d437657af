"""The header rules (`registry/headers.py`) in validation, and the filter's own parser as the backstop.

One rule set: the control plane's validation and the filter's configuration parser
(`config.zig`, run natively through `translate/filtercheck.py`) refuse the same header names and
values; these tests hold them equal and check that a document the validation accepts is always
one the filter accepts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from mcpgw.registry import tools as registry_tools
from mcpgw.registry.headers import header_name_problem, value_problem
from mcpgw.registry.model import RegistrySnapshot
from mcpgw.registry.secrets import UNAVAILABLE, resolve
from mcpgw.registry.validate import Invalid, parse_server
from mcpgw.translate.envoy import FilterInvalid, GatewaySettings, PluginRef, Translator
from mcpgw.translate.filtercheck import FilterCheck, FilterRefused
from mcpgw.translate.filterconfig import filter_config
from tests.registrydocs import OWNED_NAMES, PLAIN_NAMES, server_documents
from tests.unit.test_registry import minimal, problems_of

OWNED = [
    *(n for n in OWNED_NAMES if n != "cookie"),
    "PROXY-CONNECTION",
    "x-envoy-upstream-rq-timeout-ms",
    "X-Mcpgw-Sse-Channel",
    "x-mcpgw-upstream-url",
]


def with_header_arg(name: str) -> dict[str, Any]:
    document = minimal()
    document["tools"][0]["args"].append({"name": name, "position": "header"})
    return document


def with_template_header(key: str, value: str = "v", **config: str) -> dict[str, Any]:
    document = minimal(config=config) if config else minimal()
    document["tools"][0]["requestTemplate"]["headers"] = [{"key": key, "value": value}]
    return document


def with_scheme(name: str = "X-Api-Key", credential: Any = "secret") -> dict[str, Any]:
    document = minimal(
        securitySchemes=[
            {"id": "k", "type": "apiKey", "in": "header", "name": name, "defaultCredential": credential}
        ]
    )
    document["tools"][0]["requestTemplate"]["security"] = {"id": "k"}
    return document


@pytest.mark.parametrize("name", [n for n in OWNED if not n.startswith(":")])
def test_a_gateway_owned_header_is_no_argument_name(name: str) -> None:
    found = problems_of(with_header_arg(name))
    assert [(p, r.split(":")[0]) for p, r in found] == [
        ("tools[0].args[1].name", f"{name!r} cannot be a header argument")
    ], found


def test_an_argument_that_is_not_a_header_may_have_any_valid_name() -> None:
    document = minimal()
    document["tools"][0]["args"].append({"name": "Host", "position": "query"})
    parse_server(document)


@pytest.mark.parametrize("name", [*OWNED, "cookie", "a b", "x-foo\n", "é"])
def test_a_gateway_owned_header_is_never_templated(name: str) -> None:
    found = problems_of(with_template_header(name))
    assert [p for p, _ in found] == ["tools[0].requestTemplate.headers[0].key"], found
    assert f"{name!r} cannot be templated" in found[0][1]


@pytest.mark.parametrize("name", [*OWNED, "a b", "x-key\n"])
def test_a_gateway_owned_header_carries_no_credential(name: str) -> None:
    # The tool's reference to the refused scheme is reported too.
    found = problems_of(with_scheme(name))
    assert found[0][0] == "securitySchemes[0].name", found
    assert f"{name!r} cannot carry a credential" in found[0][1]


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_header_names_pass_everywhere(name: str) -> None:
    for document in (with_template_header(name), with_scheme(name)):
        parse_server(document)
    if name.replace("-", "_").replace("_", "a").isalnum() and name[0].isalpha():
        parse_server(with_header_arg(name))


@pytest.mark.parametrize("bad", ["a\r\nb", "a\nb", "a\x00b", "a\x0bb", "a\x7fb", "\x1b[0m"])
def test_values_with_a_control_character_but_tab_are_refused(bad: str) -> None:
    found = problems_of(with_template_header("x-note", bad))
    assert [p for p, _ in found] == ["tools[0].requestTemplate.headers[0].value"]
    found = problems_of(with_template_header("x-note", "{{.config.v}}", v=bad))
    assert found == [("tools[0].requestTemplate.headers[0].value", f"'.config.v' {value_problem(bad)}")]
    found = problems_of(with_scheme(credential=bad))
    assert found[0] == ("securitySchemes[0].defaultCredential", f"the credential {value_problem(bad)}")
    # The credential is never quoted, not even in part.
    assert bad not in found[0][1] and "\\x" not in found[0][1]


def test_tab_and_non_ascii_pass() -> None:
    parse_server(with_template_header("x-note", "a\tb é €"))
    parse_server(with_scheme(credential="tok\twith tab é"))


def test_file_and_env_credentials_are_header_values_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "token"
    secret.write_text("line-one\nline-two\n")
    monkeypatch.setenv("MCPGW_CRED_TEST", "a\x7fb")
    servers = []
    for name, credential in (("f", {"file": str(secret)}), ("e", {"env": "MCPGW_CRED_TEST"})):
        document = with_scheme(credential=credential)
        document["name"] = name
        servers.append(parse_server(document, f"{name}.yaml"))
    with pytest.raises(Invalid) as error:
        resolve(RegistrySnapshot(servers=tuple(servers)))
    assert [(p.file, p.path) for p in error.value.problems] == [
        ("f.yaml", "securitySchemes[0].defaultCredential"),
        ("e.yaml", "securitySchemes[0].defaultCredential"),
    ]
    # Clients read one generic reason (whether a file exists is not theirs to learn); the log
    # says why.
    assert all(p.reason == UNAVAILABLE for p in error.value.problems)
    reasons = [r.fields["reason"] for r in caplog.records if r.getMessage() == "credential_unavailable"]
    assert len(reasons) == 2 and all("control character" in reason for reason in reasons), reasons
    # One trailing newline is the file's, not the secret's.
    secret.write_text("only-line\n")
    assert list(resolve(RegistrySnapshot(servers=(servers[0],))).values()) == ["only-line"]


# --- one rule set: the Python rules equal the filter's -------------------------------------------


def _config(tool: dict[str, Any]) -> str:
    return json.dumps(
        {
            "server": {"name": "s", "version": "1"},
            "base_path": "/m",
            "upstream": {"cluster": "c"},
            "tools": [{"name": "t", "request": {"path": [{"lit": "/"}], **tool}}],
        }
    )


def _accepts(check: FilterCheck, configuration: str) -> bool:
    try:
        check.check(configuration)
    except FilterRefused:
        return False
    return True


NAMES = [*OWNED, "cookie", *PLAIN_NAMES, "", "a b", "x:y", "x-foo\n", "é", "x-envoyish", "proxy_x", "TE2"]


@pytest.mark.parametrize("name", NAMES)
def test_header_names_the_filter_refuses_are_the_ones_validation_refuses(
    filter_check: FilterCheck, name: str
) -> None:
    expected = header_name_problem(name) is None
    header = {"headers": [{"name": name, "value": [{"lit": "v"}]}]}
    static = {"auth": {"static": [{"in": "header", "name": name, "value": "v"}]}}
    for tool in (header, static):
        assert _accepts(filter_check, _config(tool)) == expected, (name, tool)


def test_header_values_the_filter_refuses_are_the_ones_validation_refuses(filter_check: FilterCheck) -> None:
    for code in [*range(0x80), 0xE9, 0x20AC, 0x1F600]:
        value = f"a{chr(code)}b"
        static = {"auth": {"static": [{"in": "header", "name": "x", "value": value}]}}
        assert _accepts(filter_check, _config(static)) == (value_problem(value) is None), hex(code)


# --- the filter's parser as the backstop ---------------------------------------------------------


SETTINGS = GatewaySettings(
    PluginRef("http://127.0.0.1:18002/plugins/mcp-server/0.1.0/plugin.wasm", "ab" * 32)
)


def test_a_configuration_the_filter_refuses_is_refused_with_its_reason(
    filter_check: FilterCheck, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were validation to drift from the filter (here: it forgets the header-name rule), the
    # filter's own parser still refuses, naming the configuration's field and the tool.
    monkeypatch.setattr(registry_tools, "header_name_problem", lambda name: None)
    server = parse_server(with_header_arg("Transfer-Encoding"), "svc.yaml")
    snapshot = RegistrySnapshot(servers=(server,))
    translator = Translator(GatewaySettings(SETTINGS.plugin, filter_check=filter_check))
    with pytest.raises(FilterInvalid) as error:
        translator.check_server(server, snapshot, {})
    assert error.value.path == "filter:tools[0].request.headers[0].name"
    assert str(error.value).startswith(
        "default/svc: the mcp-server filter would refuse the generated configuration (tool 'get'): "
        'tools[0].request.headers[0].name: must be a regular header name: "transfer-encoding"'
    )
    # Without the check (no native build) the same configuration would go to Envoy.
    Translator(SETTINGS).check_server(server, snapshot, {})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(document=server_documents())
def test_every_document_validation_accepts_the_filter_accepts(
    filter_check: FilterCheck, document: dict[str, Any]
) -> None:
    try:
        server = parse_server(document, "prop.yaml")
    except Invalid:
        assume(False)
        return
    snapshot = RegistrySnapshot(servers=(server,))
    configuration = json.dumps(filter_config(server, snapshot, resolve(snapshot)))
    filter_check.check(configuration)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        # Sent as `:authority`: a header value.
        (lambda d: d["backend"].update(host="api.example.com\n"), "backend.host"),
        (lambda d: d["backend"].update(endpoints=["api.example.com\n:80"]), "backend.endpoints[0]"),
        (lambda d: d["tools"][0].update(name="get\n"), "tools[0].name"),
        (lambda d: d.update(name="svc\n"), "name"),
        (lambda d: d.update(allowedOrigins=["https://app.example.com\n"]), "allowedOrigins[0]"),
    ],
)
def test_a_trailing_newline_never_passes_a_pattern(change: Any, path: str) -> None:
    # `^...$` patterns also match before a final newline: every pattern must match the whole value.
    document = minimal()
    change(document)
    assert path in [p for p, _ in problems_of(document)]
