"""Higress `mcp-server` plugin configuration (REST-to-MCP) → one `kind: McpServer` document.

The input is the plugin's config as an operator writes it:

    server: {name, config, securitySchemes, allowTools, defaultUpstreamSecurity, …}
    tools: [{name, description, args, requestTemplate, responseTemplate, …}]
    allowTools: [...]

or a `WasmPlugin` resource carrying it in `spec.defaultConfig`. Tools are already in our
format and are copied field for field, so the validator judges exactly what the operator
wrote; only the URLs change (absolute → `backend` + path, `{arg}` → `{{.args.arg}}`).
"""

from __future__ import annotations

import copy
from typing import Any

from mcpgw.importers.common import (
    ImportFailed,
    ImportOptions,
    ImportResult,
    flatten_config,
    place_tools,
    rewrite_config_refs,
    server_document,
)

# Server fields this importer maps; any other one has no equivalent and is reported.
_HANDLED_SERVER_FIELDS = {"name", "type", "config", "securitySchemes", "allowTools", "version", "description"}


def import_higress(config: Any, options: ImportOptions) -> ImportResult:
    data = _unwrap(config)
    server = data.get("server")
    if not isinstance(server, dict):
        raise ImportFailed("not a Higress mcp-server config: no 'server' mapping")
    server_type = server.get("type", "rest")
    if server_type != "rest":
        raise ImportFailed(f"server.type {server_type!r}: only REST-to-MCP ('rest') servers can be imported")
    tools = data.get("tools")
    if not isinstance(tools, list) or not tools:
        name = server.get("name")
        raise ImportFailed(
            f"no tools: server {name!r} is a built-in Higress server or has no REST tools to import"
        )
    result = ImportResult()
    tools = [rewrite_config_refs(copy.deepcopy(tool)) for tool in tools]
    _apply_default_security(server, tools, result.warnings)
    for key in sorted(set(server) - _HANDLED_SERVER_FIELDS - _DEFAULT_SECURITY.keys()):
        result.warnings.append(f"server.{key}: no equivalent in the registry, not imported")
    raw_config = server.get("config") if isinstance(server.get("config"), dict) else {}
    backend = place_tools(tools, raw_config, options, result.warnings, hint="Higress tool URLs are relative")
    name = str(server.get("name") or "higress")
    document = server_document(
        options,
        default_name=name,
        description=str(server.get("description") or f"Imported from the Higress mcp-server {name!r}."),
        version=str(server["version"]) if server.get("version") is not None else None,
        backend=backend,
        tools=tools,
        extra={
            "config": flatten_config(server.get("config"), result.warnings, "server.config"),
            "securitySchemes": server.get("securitySchemes"),
            "allowTools": data.get("allowTools") or server.get("allowTools"),
        },
    )
    result.documents.append(document)
    return result


def _unwrap(config: Any) -> dict[str, Any]:
    """The plugin config itself, also when given as a `WasmPlugin` resource."""
    if not isinstance(config, dict):
        raise ImportFailed("not a Higress mcp-server config: expected a mapping")
    if config.get("kind") == "WasmPlugin":
        spec = config.get("spec") if isinstance(config.get("spec"), dict) else {}
        inner = spec.get("defaultConfig")
        if not isinstance(inner, dict):
            raise ImportFailed("WasmPlugin has no spec.defaultConfig with the mcp-server config")
        return inner
    return config


# Higress server-wide defaults, applied to tools that do not set their own (their meaning there).
_DEFAULT_SECURITY = {"defaultDownstreamSecurity": "tool", "defaultUpstreamSecurity": "request"}


def _apply_default_security(server: dict[str, Any], tools: list[Any], warnings: list[str]) -> None:
    for key, level in _DEFAULT_SECURITY.items():
        default = server.get(key)
        if not isinstance(default, dict):
            continue
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            holder = tool if level == "tool" else tool.get("requestTemplate")
            if isinstance(holder, dict) and "security" not in holder:
                holder["security"] = copy.deepcopy(default)
        warnings.append(f"server.{key}: copied into every tool that has no security of its own")
