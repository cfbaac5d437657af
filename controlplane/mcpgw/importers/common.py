"""Pieces every importer shares: options, results, naming, backends and JSON-schema → argument.

Importers are pure: a parsed input (dict) and `ImportOptions` in, `ImportResult` (our
`kind: McpServer` documents as plain dicts, plus warnings for stderr) out. Reading files and
writing YAML live in `mcpgw.importers.io`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
ARG_TYPES = ("string", "number", "integer", "boolean", "array", "object")
# `{name}` in a URL path: the OpenAPI path-template syntax, also found in Higress/Nacos definitions.
_BRACE_PARAM = re.compile(r"(?<!\{)\{([^{}/]+)\}(?!\})")
_CONFIG_REF = re.compile(r"\{\{-?\s*\.config\.([A-Za-z0-9_.\-]+)\s*-?\}\}")


class ImportFailed(Exception):
    """The input cannot become a registry document at all (as opposed to a skipped tool)."""


@dataclass(frozen=True)
class ImportOptions:
    namespace: str = "default"
    name: str | None = None
    backend: str | None = None  # "host:port", overrides what the input says
    scheme: str | None = None  # "http" | "https", overrides what the input says


@dataclass
class ImportResult:
    documents: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Origin:
    """Where a backend lives, from a URL: scheme, `host:port`, and a base path to prefix."""

    scheme: str
    endpoint: str
    base_path: str = ""


def dns_label(text: str, fallback: str = "imported") -> str:
    """A server name the registry accepts, derived from a free-form title."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    label = re.sub(r"-{2,}", "-", label)[:63].strip("-")
    return label or fallback


def tool_name(text: str) -> str:
    """A tool name matching `^[A-Za-z0-9_.-]{1,128}$`; invalid characters become '_'."""
    name = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.\-]+", "_", text)).strip("_")
    return (name or "tool")[:128]


def arg_name(text: str) -> str:
    """An argument name matching `^[A-Za-z_][A-Za-z0-9_-]{0,63}$`."""
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", text).strip("_") or "arg"
    if not re.match(r"[A-Za-z_]", name):
        name = "_" + name
    return name[:64]


def unique(name: str, taken: set[str], limit: int = 128) -> str:
    """`name`, or `name_2`, `name_3`… when already taken; records the result in `taken`."""
    candidate, index = name, 2
    while candidate in taken:
        suffix = f"_{index}"
        candidate = name[: limit - len(suffix)] + suffix
        index += 1
    taken.add(candidate)
    return candidate


def parse_endpoint(text: str) -> str:
    """Check a `--backend host:port` value; returns it unchanged or raises ImportFailed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ImportFailed(f"--backend must be host:port (e.g. api.internal:8080), got {text!r}")
    return text


def origin_of(url: str) -> Origin | None:
    """Scheme, `host:port` and path of an absolute http(s) URL; None for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    host = parts.hostname
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return Origin(parts.scheme, f"{host}:{port}", parts.path.rstrip("/"))


def backend_block(origin: Origin | None, options: ImportOptions, source_hint: str) -> dict[str, Any]:
    """The document's `backend`: command-line overrides first, then what the input said."""
    endpoint = parse_endpoint(options.backend) if options.backend else None
    if endpoint is None and origin is not None:
        endpoint = origin.endpoint
    if endpoint is None:
        raise ImportFailed(f"no backend address: {source_hint}; pass --backend host:port")
    scheme = options.scheme or (origin.scheme if origin else "http")
    return {"scheme": scheme, "endpoints": [endpoint]}


def resolve_config_prefix(url: str, config: dict[str, Any]) -> str:
    """Substitute `{{.config.x}}` in a URL that does not start with '/' or a scheme.

    Higress examples write `url: '{{.config.domain}}/api/items'`: the host only becomes
    visible once the config value is in, and our URLs must start with '/' or http(s)://.
    """
    if url.startswith("/") or re.match(r"^https?://", url):
        return url

    def value(match: re.Match[str]) -> str:
        found = lookup(config, match.group(1))
        return str(found) if isinstance(found, str | int | float) else match.group(0)

    return _CONFIG_REF.sub(value, url)


def lookup(data: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def split_url(url: str) -> tuple[str | None, str]:
    """(scheme://host:port or None, path+query) of a tool URL template."""
    match = re.match(r"^(https?://[^/{}?#]+)(.*)$", url)
    if not match:
        return None, url
    return match.group(1), match.group(2) or "/"


def brace_params_to_template(url: str, names: set[str]) -> str:
    """`/items/{id}` → `/items/{{.args.id}}` for the path arguments in `names`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        return "{{.args." + name + "}}" if name in names else match.group(0)

    path, sep, query = url.partition("?")
    return _BRACE_PARAM.sub(replace, path) + sep + query


def flatten_config(config: Any, warnings: list[str], where: str) -> dict[str, str | int | float]:
    """Nested config → flat keys joined with '_' (`credentials.amap.key` → `credentials_amap_key`).

    Our `config` holds strings and numbers under single-word keys (values are substituted at
    compile time, `{{.config.KEY}}`); `rewrite_config_refs` renames the references to match.
    A boolean becomes "true"/"false" (what a Go template prints); a list cannot be a value.
    """
    flat: dict[str, str | int | float] = {}
    if not isinstance(config, dict):
        if config is not None:
            warnings.append(f"{where}: not a mapping, ignored")
        return flat

    def walk(path: tuple[str, ...], value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk((*path, str(key)), item)
            return
        key = "_".join(path)
        if len(path) > 1:
            warnings.append(f"{where}.{'.'.join(path)}: nested, imported as config key {key!r}")
        if isinstance(value, bool):
            flat[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            flat[key] = value
        elif value is None:
            flat[key] = ""
        else:
            warnings.append(f"{where}.{'.'.join(path)}: a {type(value).__name__} cannot be a config value")

    walk((), config)
    return flat


_NESTED_CONFIG_REF = re.compile(r"(\{\{-?\s*\.config\.)([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)+)")


def rewrite_config_refs(value: Any) -> Any:
    """`{{.config.credentials.amap.key}}` → `{{.config.credentials_amap_key}}`, in every string."""
    if isinstance(value, str):
        return _NESTED_CONFIG_REF.sub(lambda m: m.group(1) + m.group(2).replace(".", "_"), value)
    if isinstance(value, list):
        return [rewrite_config_refs(item) for item in value]
    if isinstance(value, dict):
        return {key: rewrite_config_refs(item) for key, item in value.items()}
    return value


# --- JSON schema → tool argument -------------------------------------------------------------

_OPENAPI_ONLY = {"nullable", "xml", "discriminator", "externalDocs", "readOnly", "writeOnly"}


def schema_type(schema: dict[str, Any]) -> str:
    """One of our six argument types for a (resolved) JSON schema.

    OpenAPI 3.1 / JSON Schema allow a list (`["string", "null"]`): null only says the value
    may be absent, so the first other type wins. With no `type`, the shape decides.
    """
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), None)
    if declared in ARG_TYPES:
        return str(declared)
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    values = schema.get("enum") or ([schema["const"]] if "const" in schema else [])
    if values:
        return _json_type(values[0])
    return "string"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def clean_schema(schema: Any, *, keep_null: bool = False) -> Any:
    """A nested schema fit for MCP: `const` → enum, OpenAPI-only keys out, `example` → `examples`.

    Input schemas (`keep_null=False`) narrow `["string", "null"]` to "string": the filter checks
    argument types and an absent argument already means null. Output schemas keep null
    (3.0 `nullable: true` becomes a type list), because clients validate `structuredContent`
    against them and a backend answering `"isbn": null` is right.
    """
    if isinstance(schema, list):
        return [clean_schema(item, keep_null=keep_null) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _OPENAPI_ONLY:
            continue
        if key == "type" and isinstance(value, list) and not keep_null:
            cleaned[key] = schema_type(schema)
        elif key == "const":
            cleaned.setdefault("enum", [value])
        elif key == "example":
            # OpenAPI 3.0's `example` is JSON Schema's (and 3.1's) `examples: [...]`.
            cleaned.setdefault("examples", [clean_schema(value)])
        elif key == "properties" and isinstance(value, dict):
            cleaned[key] = {name: clean_schema(sub, keep_null=keep_null) for name, sub in value.items()}
        else:
            cleaned[key] = clean_schema(value, keep_null=keep_null)
    if keep_null and schema.get("nullable") is True and isinstance(cleaned.get("type"), str):
        cleaned["type"] = [cleaned["type"], "null"]
    return cleaned


def arg_from_schema(
    name: str, schema: dict[str, Any], *, description: str = "", required: bool = False
) -> dict[str, Any]:
    """One `args[]` entry from a resolved JSON schema, keeping only fields our format has."""
    arg: dict[str, Any] = {"name": name, "type": schema_type(schema)}
    text = description or schema.get("description") or schema.get("title") or ""
    example = _example(schema)
    if example is not None:
        text = f"{text} Example: {example}".strip()
    if text:
        arg["description"] = str(text)
    if required:
        arg["required"] = True
    enum = schema.get("enum")
    if "const" in schema:
        enum = [schema["const"]]
    if isinstance(enum, list) and enum:
        # A nullable enum lists null; null is "absent" for us, not a value to choose.
        values = [v for v in enum if v is not None]
        if values:
            arg["enum"] = values
    if "default" in schema and schema["default"] is not None:
        arg["default"] = schema["default"]
    if arg["type"] == "array" and isinstance(schema.get("items"), dict):
        arg["items"] = clean_schema(schema["items"])
    if arg["type"] == "object" and isinstance(schema.get("properties"), dict):
        arg["properties"] = clean_schema(schema["properties"])
    return arg


def _example(schema: dict[str, Any]) -> str | None:
    """3.0 `example` or 3.1 `examples[0]`, as compact text for the description."""
    if "example" in schema:
        value = schema["example"]
    elif isinstance(schema.get("examples"), list) and schema["examples"]:
        value = schema["examples"][0]
    else:
        return None
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def server_document(
    options: ImportOptions,
    *,
    default_name: str,
    description: str,
    backend: dict[str, Any],
    tools: list[dict[str, Any]],
    title: str | None = None,
    version: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A `kind: McpServer` document with fields in the order docs/registry.md shows them."""
    document: dict[str, Any] = {
        "apiVersion": "mcpgw/v1",
        "kind": "McpServer",
        "namespace": options.namespace,
        "name": options.name or dns_label(default_name),
    }
    if title:
        document["title"] = title
    document["description"] = description
    if version:
        document["version"] = str(version)
    document["backend"] = backend
    for key, value in (extra or {}).items():
        if value:
            document[key] = value
    document["tools"] = tools
    return document


# --- tools that carry their own URLs (Higress, Nacos) ----------------------------------------


def place_tools(
    tools: list[dict[str, Any]],
    raw_config: dict[str, Any],
    options: ImportOptions,
    warnings: list[str],
    *,
    fallback: dict[str, Any] | None = None,
    hint: str,
) -> dict[str, Any]:
    """Rewrite each tool URL to path+query and return the one `backend` they all call.

    Higress and Nacos tool URLs are usually absolute; the registry keeps a server's address
    in `backend` and only the path and query per tool. All absolute URLs must then agree on
    scheme://host:port, unless `--backend` says where to send them.
    """
    origins: dict[str, Origin] = {}
    for tool in tools:
        request = tool.get("requestTemplate")
        if not isinstance(request, dict) or not isinstance(request.get("url"), str):
            continue
        url = resolve_config_prefix(request["url"], raw_config)
        prefix, rest = split_url(url)
        if prefix is not None:
            origin = origin_of(prefix + "/")
            if origin is not None:
                origins.setdefault(f"{origin.scheme}://{origin.endpoint}", origin)
        path_args = {
            a["name"] for a in tool.get("args") or [] if isinstance(a, dict) and a.get("position") == "path"
        }
        request["url"] = brace_params_to_template(rest, path_args)
    if options.backend:
        if len(origins) > 1 or (origins and options.backend not in {o.endpoint for o in origins.values()}):
            warnings.append(f"tool URLs name {', '.join(sorted(origins))}; every call goes to --backend")
        single = next(iter(origins.values())) if len(origins) == 1 else None
        return backend_block(single, options, hint)
    if len(origins) > 1:
        raise ImportFailed(
            f"tool URLs name several backends ({', '.join(sorted(origins))}); pass --backend host:port"
            " or split the tools into one server per backend"
        )
    if origins:
        return backend_block(next(iter(origins.values())), options, hint)
    if fallback is not None:
        return {**fallback, "scheme": options.scheme or fallback.get("scheme", "http")}
    return backend_block(None, options, hint)
