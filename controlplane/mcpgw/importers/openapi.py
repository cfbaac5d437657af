"""OpenAPI 3.0 / 3.1 → one `kind: McpServer` document, one tool per operation.

What an operation cannot be expressed as (a multipart body, an external `$ref`, a cookie
parameter whose name is not a valid argument name…) is skipped with a warning naming
`METHOD /path` and the reason; nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mcpgw.importers.common import (
    ARG_NAME,
    TOOL_NAME,
    ImportFailed,
    ImportOptions,
    ImportResult,
    Origin,
    arg_from_schema,
    arg_name,
    backend_block,
    clean_schema,
    origin_of,
    schema_type,
    server_document,
    tool_name,
    unique,
)

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_JSON_MEDIA = re.compile(r"^application/([a-z0-9.+-]*\+)?json(;.*)?$", re.IGNORECASE)
_FORM_MEDIA = "application/x-www-form-urlencoded"
# OpenAPI: header parameters with these names "SHALL be ignored" (the transport sets them).
_IGNORED_HEADERS = {"accept", "content-type", "authorization"}
_PATH_PARAM = re.compile(r"\{([^{}/]+)\}")


class Unsupported(Exception):
    """This operation cannot become a tool; the message is the reason shown to the operator."""


class Resolver:
    """Local `$ref` resolution (`#/components/...`) with cycle guards."""

    def __init__(self, spec: dict[str, Any], warnings: list[str]) -> None:
        self.spec = spec
        self.warnings = warnings
        self._cut: set[str] = set()

    def target(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise Unsupported(f"$ref {ref!r} is not a local reference ('#/...')")
        node: Any = self.spec
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise Unsupported(f"$ref {ref!r} points nowhere")
        return node

    def shallow(self, node: Any) -> Any:
        """Follow a chain of `$ref`s to the object it names; siblings of `$ref` win (3.1)."""
        seen: list[str] = []
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if ref in seen:
                raise Unsupported(f"$ref cycle {' -> '.join([*seen, ref])}")
            seen.append(ref)
            target = self.target(ref)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings} if isinstance(target, dict) else target
        return node

    def deep(self, schema: Any, stack: tuple[str, ...] = ()) -> Any:
        """A schema with every `$ref` inlined, `allOf` merged and nullable unions narrowed.

        A schema that refers to itself (a tree of categories) is cut where it recurs and
        replaced by a plain object: JSON schema for MCP clients must be self-contained.
        """
        if isinstance(schema, list):
            return [self.deep(item, stack) for item in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema:
            ref = schema["$ref"]
            if ref in stack:
                if ref not in self._cut:
                    self._cut.add(ref)
                    self.warnings.append(f"schema {ref} is recursive: cut to a plain object where it recurs")
                cut: dict[str, Any] = {"type": "object"}
                if "description" in schema:
                    cut["description"] = schema["description"]
                return cut
            target = self.target(ref)
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            merged = {**target, **siblings} if isinstance(target, dict) else target
            return self.deep(merged, (*stack, ref))
        resolved = {key: self.deep(value, stack) for key, value in schema.items()}
        if isinstance(resolved.get("allOf"), list):
            resolved = _merge_all_of(resolved)
        for key in ("anyOf", "oneOf"):
            if isinstance(resolved.get(key), list):
                resolved = _narrow_union(resolved, key)
        return resolved


def _merge_all_of(schema: dict[str, Any]) -> dict[str, Any]:
    """`allOf: [A, B]` → one schema: properties and `required` united, other keys first wins."""
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    properties: dict[str, Any] = dict(merged.get("properties") or {})
    required: list[str] = list(merged.get("required") or [])
    for branch in schema["allOf"]:
        if not isinstance(branch, dict):
            continue
        properties.update(branch.get("properties") or {})
        required += [r for r in branch.get("required") or [] if r not in required]
        for key, value in branch.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if properties:
        merged["properties"] = properties
        merged.setdefault("type", "object")
    if required:
        merged["required"] = required
    return merged


def _narrow_union(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """`anyOf: [X, {type: null}]` is X that may be null; several types of one kind keep that kind."""
    branches = [b for b in schema[key] if isinstance(b, dict) and b.get("type") != "null"]
    if len(branches) == 1:
        rest = {k: v for k, v in schema.items() if k != key}
        return {**branches[0], **rest}
    kinds = {schema_type(b) for b in branches}
    if len(kinds) == 1 and "type" not in schema:
        return {**schema, "type": kinds.pop()}
    return schema


@dataclass
class _Context:
    resolver: Resolver
    warnings: list[str]
    base_path: str
    schemes: dict[str, dict[str, Any]]
    global_security: Any
    tool_names: set[str] = field(default_factory=set)
    used_schemes: dict[str, dict[str, Any]] = field(default_factory=dict)


def import_openapi(spec: Any, options: ImportOptions) -> ImportResult:
    """One document from an OpenAPI 3.x description; `options.backend` overrides `servers`."""
    if not isinstance(spec, dict) or not isinstance(spec.get("paths"), dict):
        raise ImportFailed("not an OpenAPI document: no 'paths' mapping")
    version = str(spec.get("openapi", ""))
    if not version.startswith("3."):
        found = f"swagger {spec['swagger']}" if "swagger" in spec else repr(version or None)
        raise ImportFailed(f"only OpenAPI 3.0 and 3.1 are supported, got {found}")
    result = ImportResult()
    origin = _server_origin(spec, result.warnings)
    info = spec.get("info") if isinstance(spec.get("info"), dict) else {}
    title = str(info.get("title") or "")
    backend = backend_block(origin, options, "the document has no absolute servers[0].url")
    resolver = Resolver(spec, result.warnings)
    components = spec.get("components") if isinstance(spec.get("components"), dict) else {}
    context = _Context(
        resolver=resolver,
        warnings=result.warnings,
        base_path=origin.base_path if origin else _relative_base(spec),
        schemes=_security_schemes(components, resolver, result.warnings),
        global_security=spec.get("security"),
    )
    tools = list(_tools(spec["paths"], context))
    if context.used_schemes:
        result.warnings.append(
            "security: tools forward the client's credential (passthrough); give a scheme a"
            " defaultCredential and drop the tool's `security` to use a gateway-held one instead"
        )
    extra: dict[str, Any] = {"securitySchemes": list(context.used_schemes.values())}
    document = server_document(
        options,
        default_name=title or "openapi",
        title=title or None,
        description=str(info.get("description") or title or "Imported from an OpenAPI document."),
        version=str(info["version"]) if info.get("version") is not None else None,
        backend=backend,
        tools=tools,
        extra=extra,
    )
    result.documents.append(document)
    return result


def _server_origin(spec: dict[str, Any], warnings: list[str]) -> Origin | None:
    servers = spec.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return None
    url = _expand_server_variables(servers[0])
    if len(servers) > 1:
        warnings.append(f"servers: {len(servers)} listed, using the first ({url})")
    return origin_of(url)


def _expand_server_variables(server: dict[str, Any]) -> str:
    url = str(server.get("url", ""))
    variables = server.get("variables") if isinstance(server.get("variables"), dict) else {}
    for name, variable in variables.items():
        if isinstance(variable, dict) and "default" in variable:
            url = url.replace("{" + name + "}", str(variable["default"]))
    return url


def _relative_base(spec: dict[str, Any]) -> str:
    """`servers: [{url: /api/v1}]` gives no host but still a base path."""
    servers = spec.get("servers")
    if isinstance(servers, list) and servers and isinstance(servers[0], dict):
        url = _expand_server_variables(servers[0])
        if url.startswith("/"):
            return url.rstrip("/")
    return ""


def _tools(paths: dict[str, Any], context: _Context) -> Any:
    for path, raw_item in paths.items():
        try:
            item = context.resolver.shallow(raw_item)
        except Unsupported as error:
            context.warnings.append(f"skipped {path}: {error}")
            continue
        if not isinstance(item, dict):
            continue
        for method in [m for m in item if isinstance(m, str) and m.lower() == "trace"]:
            context.warnings.append(f"skipped {method.upper()} {path}: TRACE is not a method tools can call")
        # In the document's order: the tool list reads like the API description.
        for key, operation in item.items():
            method = str(key).lower()
            if method not in METHODS or not isinstance(operation, dict):
                continue
            try:
                yield _operation(context, str(path), method, item, operation)
            except Unsupported as error:
                context.warnings.append(f"skipped {method.upper()} {path}: {error}")


def _operation(
    context: _Context, path: str, method: str, item: dict[str, Any], operation: dict[str, Any]
) -> dict[str, Any]:
    args: list[dict[str, Any]] = []
    taken: set[str] = set()
    query_templates: list[str] = []
    headers: list[dict[str, str]] = []
    path_names: dict[str, str] = {}
    for param in _parameters(context, item, operation):
        _parameter(context, method, path, param, args, taken, path_names, query_templates, headers)
    url_path = _path_template(context, method, path, path_names, args, taken)
    request: dict[str, Any] = {"url": context.base_path + url_path, "method": method.upper()}
    if query_templates:
        request["url"] += ("&" if "?" in request["url"] else "?") + "&".join(query_templates)
    if headers:
        request["headers"] = headers
    _request_body(context, operation, args, taken, request)
    security = _operation_security(context, method, path, operation)
    if security is not None:
        request["security"] = security
    tool: dict[str, Any] = {"name": _tool_name(context, method, path, operation)}
    description = _description(operation)
    if description:
        tool["description"] = description
    if security is not None:
        # OpenAPI carries no credential: the client presents its own and the gateway forwards it.
        tool["security"] = {**security, "passthrough": True}
    tool["args"] = args
    tool["requestTemplate"] = request
    output = _output_schema(context, operation)
    if output is not None:
        tool["outputSchema"] = output
    return tool


def _tool_name(context: _Context, method: str, path: str, operation: dict[str, Any]) -> str:
    operation_id = operation.get("operationId")
    if isinstance(operation_id, str) and operation_id:
        name = operation_id if TOOL_NAME.match(operation_id) else tool_name(operation_id)
    else:
        # GET /books/{bookId}/copies → get_books_bookId_copies
        name = tool_name(method + "_" + path.replace("{", "").replace("}", "").replace("/", "_"))
    return unique(name, context.tool_names)


def _description(operation: dict[str, Any]) -> str:
    summary = str(operation.get("summary") or "").strip()
    details = str(operation.get("description") or "").strip()
    if summary and details and details != summary:
        return f"{summary}\n\n{details}"
    return summary or details


def _parameters(context: _Context, item: dict[str, Any], operation: dict[str, Any]) -> list[dict[str, Any]]:
    """Path-item parameters overridden by operation parameters with the same name and `in`."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for raw in [*(item.get("parameters") or []), *(operation.get("parameters") or [])]:
        param = context.resolver.shallow(raw)
        if not isinstance(param, dict) or "name" not in param or "in" not in param:
            raise Unsupported("a parameter without 'name' and 'in'")
        merged[(str(param["name"]), str(param["in"]))] = param
    return list(merged.values())


def _parameter(
    context: _Context,
    method: str,
    path: str,
    param: dict[str, Any],
    args: list[dict[str, Any]],
    taken: set[str],
    path_names: dict[str, str],
    query_templates: list[str],
    headers: list[dict[str, str]],
) -> None:
    name, where = str(param["name"]), str(param["in"])
    if where not in ("path", "query", "header", "cookie"):
        raise Unsupported(f"parameter {name!r} in {where!r}")
    if where == "header" and name.lower() in _IGNORED_HEADERS:
        context.warnings.append(
            f"{method.upper()} {path}: header parameter {name!r} ignored, as OpenAPI says"
        )
        return
    schema = _parameter_schema(context, param)
    valid = bool(ARG_NAME.match(name)) and name not in taken
    arg_id = unique(name if valid else arg_name(name), taken, 64)
    required = where == "path" or bool(param.get("required"))
    arg = arg_from_schema(arg_id, schema, description=str(param.get("description") or ""), required=required)
    if where == "query" and arg["type"] in ("array", "object"):
        context.warnings.append(
            f"{method.upper()} {path}: query parameter {name!r} is an {arg['type']}:"
            " the gateway sends it as JSON text, not as repeated or exploded parameters"
        )
    if where == "path":
        path_names[name] = arg_id
        arg["position"] = "path"
    elif valid:
        arg["position"] = where
    elif where == "query":
        # Not a valid argument name (`page[size]`): place it with a URL template instead.
        query_templates.append(f"{quote(name, safe='')}={{{{.args.{arg_id}}}}}")
    elif where == "header":
        headers.append({"key": name, "value": f"{{{{.args.{arg_id}}}}}"})
    else:
        raise Unsupported(f"cookie parameter {name!r} is not a valid argument name")
    args.append(arg)


def _parameter_schema(context: _Context, param: dict[str, Any]) -> dict[str, Any]:
    schema: Any = param.get("schema")
    if schema is None and isinstance(param.get("content"), dict) and param["content"]:
        media = next(iter(param["content"].values()))
        schema = media.get("schema") if isinstance(media, dict) else None
    resolved = context.resolver.deep(schema) if schema is not None else {"type": "string"}
    if not isinstance(resolved, dict):
        resolved = {"type": "string"}
    for key in ("example", "examples"):
        if key in param and key not in resolved and not isinstance(param[key], dict):
            resolved = {**resolved, key: param[key]}
    return resolved


def _path_template(
    context: _Context,
    method: str,
    path: str,
    path_names: dict[str, str],
    args: list[dict[str, Any]],
    taken: set[str],
) -> str:
    """`/books/{bookId}` → `/books/{{.args.bookId}}`; an undeclared `{x}` gets a string argument."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in path_names:
            context.warnings.append(
                f"{method.upper()} {path}: path parameter {name!r} is not declared; added as a string"
            )
            arg_id = unique(name if ARG_NAME.match(name) else arg_name(name), taken, 64)
            path_names[name] = arg_id
            args.append({"name": arg_id, "type": "string", "required": True, "position": "path"})
        return "{{.args." + path_names[name] + "}}"

    rendered = _PATH_PARAM.sub(replace, path)
    for name, arg_id in path_names.items():
        if "{" + name + "}" not in path:
            # Declared in the path but absent from it: keep it callable as a query parameter.
            context.warnings.append(
                f"{method.upper()} {path}: path parameter {name!r} does not appear in the path; sent as query"
            )
            for arg in args:
                if arg["name"] == arg_id:
                    arg["position"] = "query"
    return rendered


def _request_body(
    context: _Context,
    operation: dict[str, Any],
    args: list[dict[str, Any]],
    taken: set[str],
    request: dict[str, Any],
) -> None:
    if "requestBody" not in operation:
        return
    body = context.resolver.shallow(operation["requestBody"])
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, dict) or not content:
        return
    body_required = bool(body.get("required"))
    json_media = next((m for m in content if _JSON_MEDIA.match(str(m))), None)
    if json_media is not None:
        schema = _media_schema(context, content[json_media])
        _json_body(schema, body_required, args, taken, request)
        return
    if _FORM_MEDIA in content:
        schema = _media_schema(context, content[_FORM_MEDIA])
        _form_body(schema, body_required, args, taken, request)
        return
    raise Unsupported(f"request body {', '.join(sorted(map(str, content)))} is not supported")


def _media_schema(context: _Context, media: Any) -> dict[str, Any]:
    schema = media.get("schema") if isinstance(media, dict) else None
    resolved = context.resolver.deep(schema) if schema is not None else {}
    return resolved if isinstance(resolved, dict) else {}


def _json_body(
    schema: dict[str, Any],
    body_required: bool,
    args: list[dict[str, Any]],
    taken: set[str],
    request: dict[str, Any],
) -> None:
    """Object properties become `position: body` args; anything else is one `body` argument."""
    properties = schema.get("properties") if schema_type(schema) == "object" else None
    if isinstance(properties, dict) and properties and _names_fit(properties, taken):
        required = set(schema.get("required") or [])
        for name, sub in properties.items():
            sub = sub if isinstance(sub, dict) else {}
            arg = arg_from_schema(name, sub, required=name in required)
            arg["position"] = "body"
            args.append(arg)
            taken.add(name)
        request["argsToJsonBody"] = True
        return
    # A non-object body (an array, a string), a free-form object, or properties whose names
    # clash with parameters: the whole body is one argument, serialised as it is given.
    name = next(n for n in ("body", "requestBody", "payload", "_body") if n not in taken)
    taken.add(name)
    arg = arg_from_schema(name, schema, required=body_required)
    arg["position"] = "body"
    args.append(arg)
    request["body"] = f"{{{{.args.{name} | toJson}}}}"
    request["headers"] = [*request.get("headers", []), {"key": "Content-Type", "value": "application/json"}]


def _form_body(
    schema: dict[str, Any],
    body_required: bool,
    args: list[dict[str, Any]],
    taken: set[str],
    request: dict[str, Any],
) -> None:
    properties = schema.get("properties")
    if schema_type(schema) != "object" or not isinstance(properties, dict) or not properties:
        raise Unsupported("form body without object properties")
    if not _names_fit(properties, taken):
        raise Unsupported("form fields whose names are not valid argument names or clash with parameters")
    required = set(schema.get("required") or [])
    for name, sub in properties.items():
        arg = arg_from_schema(name, sub if isinstance(sub, dict) else {}, required=name in required)
        arg["position"] = "body"
        args.append(arg)
        taken.add(name)
    request["argsToFormBody"] = True


def _names_fit(properties: dict[str, Any], taken: set[str]) -> bool:
    return all(isinstance(n, str) and ARG_NAME.match(n) and n not in taken for n in properties)


def _output_schema(context: _Context, operation: dict[str, Any]) -> dict[str, Any] | None:
    responses = operation.get("responses")
    if not isinstance(responses, dict):
        return None
    for code in sorted(responses, key=str):
        if not str(code).startswith("2"):
            continue
        response = context.resolver.shallow(responses[code])
        content = response.get("content") if isinstance(response, dict) else None
        if not isinstance(content, dict):
            return None
        media = next((m for m in content if _JSON_MEDIA.match(str(m))), None)
        if media is None:
            return None
        schema = _media_schema(context, content[media])
        if schema_type(schema) == "object" and schema.get("type") in ("object", ["object", "null"]):
            return dict(clean_schema(schema, keep_null=True), type="object")
        return None
    return None


# --- security ---------------------------------------------------------------------------------


def _security_schemes(
    components: dict[str, Any], resolver: Resolver, warnings: list[str]
) -> dict[str, dict[str, Any]]:
    """OpenAPI schemes our registry can express (http basic/bearer, apiKey in header/query)."""
    schemes: dict[str, dict[str, Any]] = {}
    raw = components.get("securitySchemes")
    if not isinstance(raw, dict):
        return schemes
    for scheme_id, value in raw.items():
        try:
            scheme = resolver.shallow(value)
        except Unsupported as error:
            warnings.append(f"securitySchemes.{scheme_id}: {error}")
            continue
        converted = _security_scheme(str(scheme_id), scheme)
        if isinstance(converted, str):
            warnings.append(f"securitySchemes.{scheme_id}: {converted}; its operations get no credentials")
        else:
            schemes[str(scheme_id)] = converted
    return schemes


def _security_scheme(scheme_id: str, scheme: Any) -> dict[str, Any] | str:
    if not isinstance(scheme, dict):
        return "not a mapping"
    kind = scheme.get("type")
    if kind == "http" and str(scheme.get("scheme", "")).lower() in ("basic", "bearer"):
        return {"id": scheme_id, "type": "http", "scheme": str(scheme["scheme"]).lower()}
    if kind == "apiKey" and scheme.get("in") in ("header", "query") and scheme.get("name"):
        return {"id": scheme_id, "type": "apiKey", "in": scheme["in"], "name": str(scheme["name"])}
    if kind == "apiKey":
        return f"apiKey in {scheme.get('in')!r} is not supported (header or query)"
    if kind == "http":
        return f"http scheme {scheme.get('scheme')!r} is not supported (basic or bearer)"
    return f"type {kind!r} is not supported (http basic/bearer or apiKey)"


def _operation_security(
    context: _Context, method: str, path: str, operation: dict[str, Any]
) -> dict[str, Any] | None:
    """`requestTemplate.security` for the first requirement whose scheme we imported."""
    requirements = operation.get("security", context.global_security)
    if not isinstance(requirements, list) or not requirements:
        return None
    for requirement in requirements:
        if not isinstance(requirement, dict):
            continue
        if not requirement:
            return None  # `{}` in the list: anonymous access is allowed
        names = [n for n in requirement if n in context.schemes]
        if len(requirement) > 1:
            context.warnings.append(
                f"{method.upper()} {path}: requires {' and '.join(requirement)} together;"
                " only one credential per tool is supported"
            )
        if names:
            context.used_schemes[names[0]] = context.schemes[names[0]]
            return {"id": names[0]}
    names = sorted({n for r in requirements if isinstance(r, dict) for n in r})
    context.warnings.append(
        f"{method.upper()} {path}: no supported security scheme among {', '.join(names)};"
        " called without credentials"
    )
    return None
