"""Importers: OpenAPI 3.0/3.1, Higress mcp-server config and Nacos 3 exports → registry documents."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcpgw.cli import main
from mcpgw.importers import ImportFailed, ImportOptions
from mcpgw.importers.higress import import_higress
from mcpgw.importers.io import dump_documents, load_input
from mcpgw.importers.nacos import import_nacos
from mcpgw.importers.openapi import import_openapi
from mcpgw.registry.filesource import load_directory
from mcpgw.registry.validate import parse_server

FIXTURES = Path(__file__).parent.parent / "fixtures" / "importers"
LIBRARY_30 = FIXTURES / "library-openapi-3.0.yaml"
LIBRARY_31 = FIXTURES / "library-openapi-3.1.json"
HIGRESS = FIXTURES / "higress-amap.yaml"
NACOS = FIXTURES / "nacos-weather-server.json"
LIBRARY_TOOLS = [
    "listBooks",
    "createBook",
    "getBook",
    "replaceBook",
    "updateBook",
    "deleteBook",
    "setBookTags",
    "listCopies",
    "addCopy",
    "listAuthors",
    "createAuthor",
    "getAuthor",
    "listAuthorBooks",
    "listMembers",
    "registerMember",
    "getMember",
    "listMemberLoans",
    "checkoutBook",
    "post_loans_loanId_return",
    "renewLoan",
    "getCategory",
    "searchCatalog",
    "getStats",
    "get_health",
]


def tools_of(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool for tool in document["tools"]}


def openapi(spec: dict[str, Any], **options: Any) -> tuple[dict[str, Any], list[str]]:
    result = import_openapi(spec, ImportOptions(**options))
    assert len(result.documents) == 1
    return result.documents[0], result.warnings


def minimal(paths: dict[str, Any], version: str = "3.0.3", **extra: Any) -> dict[str, Any]:
    return {
        "openapi": version,
        "info": {"title": "T", "version": "1"},
        "servers": [{"url": "http://api.test:9000"}],
        "paths": paths,
        **extra,
    }


# --- OpenAPI: the realistic library API ---------------------------------------------------------


def test_library_30_imports_every_supported_operation_and_validates() -> None:
    document, warnings = openapi(load_input(LIBRARY_30), name="library")
    assert list(tools_of(document)) == LIBRARY_TOOLS
    assert document["backend"] == {"scheme": "http", "endpoints": ["library.internal:8080"]}
    assert (document["title"], document["version"]) == ("Library API", "2.4.0")
    assert warnings == [
        "skipped POST /books/{bookId}/cover: request body multipart/form-data is not supported",
        "schema #/components/schemas/Category is recursive: cut to a plain object where it recurs",
        "GET /search: query parameter 'fields' is an array: the gateway sends it as JSON text,"
        " not as repeated or exploded parameters",
    ]
    server = parse_server(document)
    assert len(server.tools) == 24


def test_library_operations_map_parameters_bodies_and_outputs() -> None:
    tools = tools_of(openapi(load_input(LIBRARY_30), name="library")[0])
    assert tools["listBooks"]["description"] == "List books\n\nSearch the catalogue, newest first."
    # components/parameters/Limit → schemas/PageSize → schemas/BoundedInt: the default survives the chain.
    assert tools["listBooks"]["args"][2] == {
        "name": "limit",
        "type": "integer",
        "description": "At most this many results.",
        "default": 20,
        "position": "query",
    }
    assert tools["getBook"]["args"] == [
        {
            "name": "bookId",
            "type": "integer",
            "description": "The book's id.",
            "required": True,
            "position": "path",
        },
        {
            "name": "X-Tenant",
            "type": "string",
            "description": "Library system the request is for.",
            "required": True,
            "position": "header",
        },
    ]
    assert tools["getBook"]["requestTemplate"] == {"url": "/api/v1/books/{{.args.bookId}}", "method": "GET"}
    # Book is allOf [BookInput, {id, copies}]: merged into one object schema.
    output = tools["getBook"]["outputSchema"]
    assert output["type"] == "object" and set(output["properties"]) == {
        "title",
        "authorId",
        "genre",
        "year",
        "isbn",
        "id",
        "copies",
    }
    # Answers are validated against outputSchema by clients: `nullable` must survive (as 3.1 spells it),
    # while the argument built from the same property is simply optional.
    assert output["properties"]["year"] == {"type": ["integer", "null"]}
    assert tools["createBook"]["args"][3] == {"name": "year", "type": "integer", "position": "body"}
    assert tools["createBook"]["requestTemplate"] == {
        "url": "/api/v1/books",
        "method": "POST",
        "argsToJsonBody": True,
    }
    assert [(a["name"], a.get("required", False), a["position"]) for a in tools["createBook"]["args"]] == [
        ("title", True, "body"),
        ("authorId", True, "body"),
        ("genre", False, "body"),
        ("year", False, "body"),
        ("isbn", False, "body"),
    ]
    assert tools["updateBook"]["args"][-1] == {
        "name": "reason",
        "type": "string",
        "description": "Why the record changed.",
        "required": True,
        "position": "body",
    }
    assert tools["addCopy"]["requestTemplate"]["argsToFormBody"] is True
    assert tools["addCopy"]["args"][3] == {
        "name": "condition",
        "type": "string",
        "enum": ["new", "good", "worn"],
        "default": "good",
        "position": "body",
    }
    assert "outputSchema" not in tools["listCopies"]  # an array answer cannot be structuredContent


def test_library_non_object_body_invalid_names_and_recursion() -> None:
    tools = tools_of(openapi(load_input(LIBRARY_30), name="library")[0])
    tags = tools["setBookTags"]
    assert tags["args"][1] == {
        "name": "body",
        "type": "array",
        "required": True,
        "items": {"type": "string"},
        "position": "body",
    }
    assert tags["requestTemplate"]["body"] == "{{.args.body | toJson}}"
    assert tags["requestTemplate"]["headers"] == [{"key": "Content-Type", "value": "application/json"}]
    search = tools["searchCatalog"]
    assert search["requestTemplate"]["url"] == "/api/v1/search?page%5Bsize%5D={{.args.page_size}}"
    assert search["args"][1] == {"name": "page_size", "type": "integer", "required": True}
    children = tools["getCategory"]["outputSchema"]["properties"]["children"]
    assert children == {"type": "array", "items": {"type": "object"}}


def test_library_31_json_imports_the_same_tools_as_30() -> None:
    document_30, _ = openapi(load_input(LIBRARY_30), name="library")
    document_31, warnings = openapi(load_input(LIBRARY_31), name="library")
    tools_30, tools_31 = tools_of(document_30), tools_of(document_31)
    # The one intended difference: 3.1 honours a description beside a $ref.
    assert tools_31["listBooks"]["args"][1].pop("description") == "Only this genre."
    assert tools_31 == tools_30
    assert len(warnings) == 3
    parse_server(document_31)


# --- OpenAPI: edge cases ------------------------------------------------------------------------


def test_31_type_lists_const_and_examples() -> None:
    spec = minimal(
        {
            "/things/{id}": {
                "put": {
                    "operationId": "putThing",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": ["integer", "null"]},
                        },
                        {"name": "mode", "in": "query", "schema": {"const": "fast"}},
                        {
                            "name": "note",
                            "in": "query",
                            "schema": {"type": ["null", "string"], "examples": ["hi"]},
                        },
                    ],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "tags": {
                                            "type": ["array", "null"],
                                            "items": {"type": ["string", "null"]},
                                        }
                                    },
                                }
                            }
                        }
                    },
                }
            }
        },
        version="3.1.0",
    )
    document, warnings = openapi(spec)
    args = document["tools"][0]["args"]
    assert args == [
        {"name": "id", "type": "integer", "required": True, "position": "path"},
        {"name": "mode", "type": "string", "enum": ["fast"], "position": "query"},
        {"name": "note", "type": "string", "description": "Example: hi", "position": "query"},
        {"name": "tags", "type": "array", "items": {"type": "string"}, "position": "body"},
    ]
    assert warnings == []
    assert document["name"] == "t"
    parse_server(document)


def test_ref_chains_resolve_and_parameter_cycles_skip_the_operation() -> None:
    spec = minimal(
        {
            "/a": {"get": {"operationId": "a", "parameters": [{"$ref": "#/components/parameters/P1"}]}},
            "/b": {"get": {"operationId": "b", "parameters": [{"$ref": "#/components/parameters/Loop1"}]}},
            "/c": {"get": {"operationId": "c", "parameters": [{"$ref": "other.yaml#/P"}]}},
        },
        components={
            "parameters": {
                "P1": {"$ref": "#/components/parameters/P2"},
                "P2": {"name": "size", "in": "query", "schema": {"$ref": "#/components/schemas/Size"}},
                "Loop1": {"$ref": "#/components/parameters/Loop2"},
                "Loop2": {"$ref": "#/components/parameters/Loop1"},
            },
            "schemas": {"Size": {"type": "string", "enum": ["s", "m", "l"]}},
        },
    )
    document, warnings = openapi(spec)
    assert [t["name"] for t in document["tools"]] == ["a"]
    assert document["tools"][0]["args"] == [
        {"name": "size", "type": "string", "enum": ["s", "m", "l"], "position": "query"}
    ]
    assert warnings == [
        "skipped GET /b: $ref cycle #/components/parameters/Loop1 -> #/components/parameters/Loop2"
        " -> #/components/parameters/Loop1",
        "skipped GET /c: $ref 'other.yaml#/P' is not a local reference ('#/...')",
    ]


def test_recursive_request_body_schema_is_cut() -> None:
    spec = minimal(
        {
            "/nodes": {
                "post": {
                    "operationId": "addNode",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}
                    },
                }
            }
        },
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "parent": {"$ref": "#/components/schemas/Node"},
                    },
                }
            }
        },
    )
    document, warnings = openapi(spec)
    assert document["tools"][0]["args"][1] == {
        "name": "parent",
        "type": "object",
        "position": "body",
    }
    assert warnings == [
        "schema #/components/schemas/Node is recursive: cut to a plain object where it recurs"
    ]
    parse_server(document)


def test_form_body_unsupported_media_and_naming() -> None:
    spec = minimal(
        {
            "/login": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "required": ["user"],
                                    "properties": {
                                        "user": {"type": "string"},
                                        "remember": {"type": "boolean"},
                                    },
                                }
                            }
                        }
                    }
                },
                "trace": {},
            },
            "/upload": {
                "put": {
                    "operationId": "upload file!",
                    "requestBody": {"content": {"application/octet-stream": {}, "text/plain": {}}},
                }
            },
        }
    )
    document, warnings = openapi(spec)
    (login,) = document["tools"]
    assert login["name"] == "post_login"
    assert login["requestTemplate"] == {"url": "/login", "method": "POST", "argsToFormBody": True}
    assert login["args"] == [
        {"name": "user", "type": "string", "required": True, "position": "body"},
        {"name": "remember", "type": "boolean", "position": "body"},
    ]
    assert warnings == [
        "skipped TRACE /login: TRACE is not a method tools can call",
        "skipped PUT /upload: request body application/octet-stream, text/plain is not supported",
    ]


def test_json_body_clashing_with_a_parameter_becomes_one_body_argument() -> None:
    spec = minimal(
        {
            "/items/{id}": {
                "put": {
                    "operationId": "putItem",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/merge-patch+json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"id": {"type": "string"}, "label": {"type": "string"}},
                                }
                            }
                        },
                    },
                }
            }
        }
    )
    tool = openapi(spec)[0]["tools"][0]
    assert tool["args"][1] == {
        "name": "body",
        "type": "object",
        "required": True,
        "properties": {"id": {"type": "string"}, "label": {"type": "string"}},
        "position": "body",
    }
    assert tool["requestTemplate"]["body"] == "{{.args.body | toJson}}"


def test_servers_base_path_backend_override_and_scheme() -> None:
    spec = minimal({"/ping": {"get": {"operationId": "ping"}}})
    spec["servers"] = [{"url": "/internal/"}]
    with pytest.raises(ImportFailed, match="--backend"):
        openapi(spec)
    document, _ = openapi(spec, backend="10.1.2.3:7000", scheme="https", namespace="team-a", name="pinger")
    assert (document["namespace"], document["name"]) == ("team-a", "pinger")
    assert document["backend"] == {"scheme": "https", "endpoints": ["10.1.2.3:7000"]}
    assert document["tools"][0]["requestTemplate"]["url"] == "/internal/ping"
    spec["servers"] = [{"url": "https://api.example.com/v2"}, {"url": "http://staging"}]
    document, warnings = openapi(spec)
    assert document["backend"] == {"scheme": "https", "endpoints": ["api.example.com:443"]}
    assert document["tools"][0]["requestTemplate"]["url"] == "/v2/ping"
    assert warnings == ["servers: 2 listed, using the first (https://api.example.com/v2)"]
    with pytest.raises(ImportFailed, match="host:port"):
        openapi(spec, backend="nope")


def test_not_openapi_3_is_refused() -> None:
    with pytest.raises(ImportFailed, match=r"swagger 2\.0"):
        openapi({"swagger": "2.0", "paths": {}})
    with pytest.raises(ImportFailed, match="no 'paths'"):
        openapi({"openapi": "3.0.0"})


def test_cookie_parameters_and_security_schemes_are_emitted() -> None:
    """Cookie positions and credentials: the client's credential is passed through to the backend."""
    spec = minimal(
        {
            "/me": {
                "get": {
                    "operationId": "me",
                    "parameters": [{"name": "session", "in": "cookie", "schema": {"type": "string"}}],
                },
            },
            "/open": {"get": {"operationId": "open", "security": []}},
            "/legacy": {"get": {"operationId": "legacy", "security": [{"oauth": ["read"]}]}},
        },
        components={
            "securitySchemes": {
                "token": {"type": "http", "scheme": "Bearer"},
                "key": {"type": "apiKey", "in": "query", "name": "api_key"},
                "oauth": {"type": "oauth2", "flows": {}},
            }
        },
        security=[{"token": []}, {"key": []}],
    )
    document, warnings = openapi(spec)
    tools = tools_of(document)
    assert tools["me"]["args"] == [{"name": "session", "type": "string", "position": "cookie"}]
    assert tools["me"]["requestTemplate"]["security"] == {"id": "token"}
    assert tools["me"]["security"] == {"id": "token", "passthrough": True}
    assert "security" not in tools["open"]["requestTemplate"]
    assert "security" not in tools["legacy"]["requestTemplate"]
    assert document["securitySchemes"] == [{"id": "token", "type": "http", "scheme": "bearer"}]
    assert warnings == [
        "securitySchemes.oauth: type 'oauth2' is not supported (http basic/bearer or apiKey);"
        " its operations get no credentials",
        "GET /legacy: no supported security scheme among oauth; called without credentials",
        "security: tools forward the client's credential (passthrough); give a scheme a"
        " defaultCredential and drop the tool's `security` to use a gateway-held one instead",
    ]
    parse_server(document)


# --- Higress ------------------------------------------------------------------------------------


def test_higress_config_imports_with_backend_from_the_shared_origin() -> None:
    result = import_higress(load_input(HIGRESS), ImportOptions(namespace="maps"))
    (document,) = result.documents
    assert (document["namespace"], document["name"]) == ("maps", "amap-maps")
    assert document["backend"] == {"scheme": "https", "endpoints": ["restapi.amap.com:443"]}
    assert document["config"] == {
        "apiKey": "demo-key-123",
        "source": "ts_mcp",
        "credentials_amap_region": "cn",
        "verbose": "false",
    }
    assert document["allowTools"] == ["maps-geo", "maps-weather", "maps-poi-detail"]
    tools = tools_of(document)
    assert tools["maps-geo"]["requestTemplate"] == {
        "url": "/v3/geocode/geo?key={{.config.apiKey}}&address={{.args.address}}&city={{.args.city}}"
        "&source={{.config.source}}",
        "method": "GET",
        "headers": [{"key": "x-region", "value": "{{.config.credentials_amap_region}}"}],
    }
    assert tools["maps-poi-detail"]["requestTemplate"]["url"] == "/v5/place/detail/{{.args.id}}"
    original = load_input(HIGRESS)["tools"][1]
    assert tools["maps-weather"]["args"] == original["args"]
    assert tools["maps-weather"]["errorResponseTemplate"] == original["errorResponseTemplate"]
    assert result.warnings == [
        "server.config.credentials.amap.region: nested, imported as config key 'credentials_amap_region'"
    ]
    server = parse_server(document)
    assert [t.name for t in server.tools] == ["maps-geo", "maps-weather", "maps-poi-detail"]


def test_higress_backend_rules() -> None:
    config = load_input(HIGRESS)
    config["tools"][2]["requestTemplate"]["url"] = "http://other.example:8080/v4/direction"
    with pytest.raises(ImportFailed, match=r"several backends \(http://other.example:8080, https://restapi"):
        import_higress(copy.deepcopy(config), ImportOptions())
    result = import_higress(copy.deepcopy(config), ImportOptions(backend="gw.internal:8443", scheme="https"))
    assert result.documents[0]["backend"] == {"scheme": "https", "endpoints": ["gw.internal:8443"]}
    assert any("every call goes to --backend" in w for w in result.warnings)
    for tool in config["tools"]:
        tool["requestTemplate"]["url"] = "/relative"
    with pytest.raises(ImportFailed, match="pass --backend"):
        import_higress(copy.deepcopy(config), ImportOptions())
    document = import_higress(config, ImportOptions(backend="10.0.0.1:80")).documents[0]
    assert document["backend"] == {"scheme": "http", "endpoints": ["10.0.0.1:80"]}


def test_higress_config_prefix_url_wasmplugin_and_refusals() -> None:
    plugin = {
        "apiVersion": "extensions.higress.io/v1alpha1",
        "kind": "WasmPlugin",
        "spec": {
            "defaultConfig": {
                "server": {
                    "name": "items",
                    "config": {"domain": "http://items.internal:8080"},
                    "timeout": 3000,
                },
                "tools": [
                    {
                        "name": "get_item",
                        "description": "Get an item.",
                        "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                        "requestTemplate": {"url": "{{.config.domain}}/api/items/{id}", "method": "GET"},
                    }
                ],
            }
        },
    }
    result = import_higress(plugin, ImportOptions())
    document = result.documents[0]
    assert document["backend"] == {"scheme": "http", "endpoints": ["items.internal:8080"]}
    assert document["tools"][0]["requestTemplate"]["url"] == "/api/items/{{.args.id}}"
    assert result.warnings == ["server.timeout: no equivalent in the registry, not imported"]
    parse_server(document)
    with pytest.raises(ImportFailed, match="mcp-proxy"):
        import_higress({"server": {"name": "x", "type": "mcp-proxy"}}, ImportOptions())
    with pytest.raises(ImportFailed, match="no tools"):
        import_higress({"server": {"name": "quark-search"}}, ImportOptions())


def test_higress_security_is_carried_over() -> None:
    """Schemes, passthrough and Higress's server-wide defaults reach the registry document."""
    config = {
        "server": {
            "name": "secure",
            "securitySchemes": [
                {
                    "id": "KeyAuth",
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-API-Key",
                    "defaultCredential": "k",
                },
                {"id": "Bearer", "type": "http", "scheme": "bearer"},
            ],
            "defaultUpstreamSecurity": {"id": "KeyAuth"},
        },
        "tools": [
            {
                "name": "a",
                "args": [],
                "security": {"id": "Bearer", "passthrough": True},
                "requestTemplate": {"url": "http://s.test/a", "method": "GET", "security": {"id": "Bearer"}},
            },
            {"name": "b", "args": [], "requestTemplate": {"url": "http://s.test/b", "method": "GET"}},
        ],
    }
    result = import_higress(config, ImportOptions())
    document = result.documents[0]
    assert document["securitySchemes"] == config["server"]["securitySchemes"]
    a, b = document["tools"]
    assert a["security"] == {"id": "Bearer", "passthrough": True}
    assert a["requestTemplate"]["security"] == {"id": "Bearer"}
    assert b["requestTemplate"]["security"] == {"id": "KeyAuth"}
    assert result.warnings == [
        "server.defaultUpstreamSecurity: copied into every tool that has no security of its own"
    ]
    parse_server(document)


# --- Nacos --------------------------------------------------------------------------------------


def test_nacos_export_imports_enabled_tools_with_positions() -> None:
    result = import_nacos(load_input(NACOS), ImportOptions(namespace="weather"))
    (document,) = result.documents
    assert (document["name"], document["version"]) == ("weather-service", "1.2.0")
    assert document["backend"] == {"scheme": "http", "endpoints": ["10.0.0.12:8080", "10.0.0.13:8080"]}
    tools = tools_of(document)
    assert list(tools) == ["get_forecast", "report_observation", "air_quality"]
    assert result.warnings == ["tool 'delete_station' is disabled in Nacos, left out"]
    forecast = tools["get_forecast"]
    assert forecast["args"] == [
        {
            "name": "city",
            "type": "string",
            "description": "City code, e.g. HZ.",
            "required": True,
            "position": "path",
        },
        {
            "name": "days",
            "type": "integer",
            "description": "How many days.",
            "enum": [1, 3, 7],
            "default": 3,
            "position": "query",
        },
        {"name": "units", "type": "string", "enum": ["metric", "imperial"], "position": "query"},
        {"name": "X-Trace-Id", "type": "string", "position": "header"},
    ]
    assert forecast["requestTemplate"] == {"url": "/v2/forecast/{{.args.city}}", "method": "GET"}
    assert forecast["responseTemplate"] == {"prependBody": "Forecast (JSON):\n"}
    assert forecast["errorResponseTemplate"] == "forecast unavailable: {{.message}}"
    assert forecast["outputSchema"]["type"] == "object"
    # The console stored this template as JSON text.
    assert tools["air_quality"]["requestTemplate"] == {
        "url": "/v2/aqi",
        "method": "GET",
        "argsToUrlParam": True,
    }
    assert tools["report_observation"]["args"][2] == {
        "name": "tags",
        "type": "array",
        "items": {"type": "string"},
        "position": "body",
    }
    server = parse_server(document)
    assert [t.name for t in server.tools] == ["get_forecast", "report_observation", "air_quality"]


def test_nacos_backend_wrapper_and_refusals() -> None:
    export = load_input(NACOS)
    wrapped = {"code": 0, "message": "success", "data": copy.deepcopy(export)}
    document = import_nacos(wrapped, ImportOptions(backend="weather.internal:80", name="wx")).documents[0]
    assert (document["name"], document["backend"]) == (
        "wx",
        {"scheme": "http", "endpoints": ["weather.internal:80"]},
    )
    del export["backendEndpoints"]
    with pytest.raises(ImportFailed, match="public/DEFAULT_GROUP/weather-svc"):
        import_nacos(copy.deepcopy(export), ImportOptions())
    export["protocol"] = "mcp-sse"
    with pytest.raises(ImportFailed, match="'mcp-sse'"):
        import_nacos(export, ImportOptions(backend="a:1"))


def test_nacos_unresolvable_references_and_missing_templates_are_reported() -> None:
    export = load_input(NACOS)
    meta = export["toolSpec"]["toolsMeta"]
    meta["get_forecast"]["templates"]["json-go-template"]["requestTemplate"]["url"] = (
        "/v2/forecast?key={{ ${nacos.appKey/amap}.data }}"
    )
    del meta["air_quality"]
    meta["report_observation"] = {"Enabled": False, "Templates": {}}
    result = import_nacos(export, ImportOptions())
    assert result.documents[0]["tools"] == []
    assert result.warnings == [
        "tool 'get_forecast' references Nacos configuration (${nacos.…}), which only Nacos can resolve:"
        " put the value in the server's config and re-import; left out",
        "tool 'report_observation' is disabled in Nacos, left out",
        "tool 'delete_station' is disabled in Nacos, left out",
        "tool 'air_quality' has no json-go-template template (no HTTP request to make), left out",
    ]


# --- writing and the command line ---------------------------------------------------------------


def test_dump_documents_round_trips_through_yaml() -> None:
    document, _ = openapi(load_input(LIBRARY_30), name="library")
    text = dump_documents([document], "Generated\nby a test")
    assert text.startswith("# Generated\n# by a test\napiVersion: mcpgw/v1\n")
    assert yaml.safe_load(text) == document


def test_cli_import_writes_a_registry_the_gateway_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    output = registry / "library.yaml"
    code = main(["import", "openapi", "-f", str(LIBRARY_31), "-o", str(output), "--name", "library"])
    assert code == 0
    err = capsys.readouterr().err
    assert (
        "warning: skipped POST /books/{bookId}/cover: request body multipart/form-data is not supported"
        in err
    )
    assert f"wrote {output}: 1 server(s), 24 tools" in err
    snapshot = load_directory(registry)
    assert [(s.key, len(s.tools)) for s in snapshot.servers] == [("default/library", 24)]

    assert main(["import", "nacos", "-f", str(NACOS), "--namespace", "wx"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["namespace"] == "wx"


def test_cli_import_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "openapi", "-f", str(tmp_path / "missing.yaml")]) == 2
    assert "error: " in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("server: [unclosed\n")
    assert main(["import", "higress", "-f", str(broken)]) == 2
    config = load_input(HIGRESS)
    config["tools"][0]["args"][0]["type"] = "int"
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(config))
    output = tmp_path / "out.yaml"
    assert main(["import", "higress", "-f", str(invalid), "-o", str(output)]) == 3
    err = capsys.readouterr().err
    assert "tools[0].args[0].type: must be one of" in err
    assert not output.exists()
    assert main(["import", "openapi", "-f", str(LIBRARY_30), "--backend", "no-port"]) == 2
