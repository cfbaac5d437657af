"""Nacos 3 MCP server (REST-to-MCP, "existing service") → one `kind: McpServer` document.

The input is the server detail Nacos returns and exports (`McpServerDetailInfo`):

    {name, description, protocol: http|https, versionDetail: {version},
     remoteServerConfig: {serviceRef: {namespaceId, groupName, serviceName}, exportPath},
     backendEndpoints: [{address, port}],
     toolSpec: {tools: [{name, description, inputSchema, outputSchema?}],
                toolsMeta: {<tool>: {enabled, templates: {"json-go-template": {
                    requestTemplate, responseTemplate, errorResponseTemplate?, argsPosition, security?}}}},
                securitySchemes: [...]}}

possibly wrapped in the console API's `{"code": 0, "data": {...}}`. Tool arguments come from
`inputSchema`, their positions from `argsPosition`; the templates are Higress's and are copied.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from mcpgw import nesting
from mcpgw.importers.common import (
    ImportFailed,
    ImportOptions,
    ImportResult,
    arg_from_schema,
    place_tools,
    server_document,
)

TEMPLATE_KEY = "json-go-template"
# `${nacos.dataId/group}`: a Nacos configuration reference that only Nacos/Higress can resolve.
_NACOS_REF = re.compile(r"\$\{nacos\.[^}]*\}")


def import_nacos(export: Any, options: ImportOptions) -> ImportResult:
    server = _unwrap(export)
    protocol = str(server.get("protocol") or "http")
    if protocol not in ("http", "https"):
        raise ImportFailed(
            f"protocol {protocol!r}: only REST services (http, https) with tool templates can be imported"
        )
    spec = server.get("toolSpec") or server.get("toolSpecification")
    if not isinstance(spec, dict) or not isinstance(spec.get("tools"), list):
        raise ImportFailed("no toolSpec.tools in the Nacos export")
    result = ImportResult()
    if server.get("enabled") is False:
        result.warnings.append(f"server {server.get('name')!r} is disabled in Nacos; imported anyway")
    meta = spec.get("toolsMeta") if isinstance(spec.get("toolsMeta"), dict) else {}
    tools = [t for t in (_tool(item, meta, result.warnings) for item in spec["tools"]) if t is not None]
    remote = server.get("remoteServerConfig") if isinstance(server.get("remoteServerConfig"), dict) else {}
    backend = place_tools(
        tools,
        {},
        options,
        result.warnings,
        fallback=_endpoints_backend(server, remote, protocol),
        hint=_backend_hint(remote),
    )
    name = str(server.get("name") or "nacos")
    version = (
        server.get("versionDetail", {}).get("version")
        if isinstance(server.get("versionDetail"), dict)
        else None
    )
    document = server_document(
        options,
        default_name=name,
        description=str(server.get("description") or f"Imported from the Nacos MCP server {name!r}."),
        version=version or server.get("version"),
        backend=backend,
        tools=tools,
        extra={"securitySchemes": spec.get("securitySchemes")},
    )
    result.documents.append(document)
    return result


def _unwrap(export: Any) -> dict[str, Any]:
    if isinstance(export, list):
        if len(export) != 1:
            raise ImportFailed(f"the export holds {len(export)} servers; import them one at a time")
        export = export[0]
    if isinstance(export, dict) and isinstance(export.get("data"), dict) and "code" in export:
        export = export["data"]
    if not isinstance(export, dict):
        raise ImportFailed("not a Nacos MCP server export: expected a JSON object")
    return export


def _tool(item: Any, meta: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    if not isinstance(item, dict) or not item.get("name"):
        warnings.append("toolSpec.tools: an entry without a name, left out")
        return None
    name = str(item["name"])
    tool_meta = _field(meta.get(name), "enabled", "templates") if isinstance(meta.get(name), dict) else {}
    if tool_meta.get("enabled") is False:
        warnings.append(f"tool {name!r} is disabled in Nacos, left out")
        return None
    template = _template(tool_meta.get("templates"))
    if template is None:
        warnings.append(f"tool {name!r} has no {TEMPLATE_KEY} template (no HTTP request to make), left out")
        return None
    if _NACOS_REF.search(json.dumps(template)):
        warnings.append(
            f"tool {name!r} references Nacos configuration (${{nacos.…}}), which only Nacos can resolve:"
            " put the value in the server's config and re-import; left out"
        )
        return None
    tool: dict[str, Any] = {"name": name}
    if item.get("description"):
        tool["description"] = str(item["description"])
    tool["args"] = _args(name, item.get("inputSchema"), template.get("argsPosition"), warnings)
    for key in ("requestTemplate", "responseTemplate", "errorResponseTemplate"):
        if template.get(key) not in (None, {}, ""):
            tool[key] = copy.deepcopy(template[key])
    if isinstance(template.get("security"), dict):
        tool["security"] = copy.deepcopy(template["security"])
    output = item.get("outputSchema")
    if isinstance(output, dict) and output.get("type") == "object":
        tool["outputSchema"] = output
    return tool


def _field(meta: dict[str, Any], *names: str) -> dict[str, Any]:
    """Nacos writes `enabled`; Higress's Go structs marshal `Enabled`: accept either spelling."""
    found = dict(meta)
    for key, value in meta.items():
        if key.lower() in names:
            found[key.lower()] = value
    return found


def _template(templates: Any) -> dict[str, Any] | None:
    if not isinstance(templates, dict):
        return None
    template = templates.get(TEMPLATE_KEY)
    if isinstance(template, str):
        # The console stores the template as the JSON text the operator typed.
        try:
            template = nesting.loads(template)
        except ValueError:
            return None
    return template if isinstance(template, dict) and "requestTemplate" in template else None


def _args(tool: str, schema: Any, positions: Any, warnings: list[str]) -> list[dict[str, Any]]:
    schema = schema if isinstance(schema, dict) else {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = set(schema.get("required") or [])
    positions = positions if isinstance(positions, dict) else {}
    args: list[dict[str, Any]] = []
    for name, sub in properties.items():
        arg = arg_from_schema(str(name), sub if isinstance(sub, dict) else {}, required=name in required)
        if name in positions:
            arg["position"] = positions[name]
        args.append(arg)
    for name in positions:
        if name not in properties:
            warnings.append(f"tool {tool!r}: argsPosition names {name!r}, which inputSchema does not declare")
    return args


def _endpoints_backend(
    server: dict[str, Any], remote: dict[str, Any], protocol: str
) -> dict[str, Any] | None:
    endpoints = [
        f"{e['address']}:{e['port']}"
        for e in server.get("backendEndpoints") or []
        if isinstance(e, dict) and e.get("address") and e.get("port")
    ]
    if not endpoints:
        return None
    scheme = remote.get("backendProtocol") if remote.get("backendProtocol") in ("http", "https") else protocol
    return {"scheme": scheme, "endpoints": list(dict.fromkeys(endpoints))}


def _backend_hint(remote: dict[str, Any]) -> str:
    ref = remote.get("serviceRef")
    if isinstance(ref, dict) and ref.get("serviceName"):
        where = "/".join(str(ref.get(k, "")) for k in ("namespaceId", "groupName", "serviceName"))
        return f"the export names the Nacos service {where}, whose instances are not in the export"
    return "the export has no backendEndpoints"
