"""The registry's immutable model: what an operator declared, already validated.

Sources (the YAML directory today; Redis and the admin API later) produce a
`RegistrySnapshot`; the translator reads it and nothing writes to it afterwards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mcpgw.registry.templates import Node

ArgType = Literal["string", "number", "integer", "boolean", "array", "object"]
ArgPosition = Literal["query", "path", "header", "body"]
BodyMode = Literal["none", "template", "json_args", "form_args", "url_args"]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Backend:
    scheme: Literal["http", "https"]
    endpoints: tuple[Endpoint, ...]
    host_header: str | None = None
    timeout_ms: int = 10_000


@dataclass(frozen=True)
class ToolArg:
    name: str
    type: ArgType = "string"
    description: str = ""
    required: bool = False
    position: ArgPosition | None = None
    # JSON-schema fragments kept as declared, for inputSchema and for later validation.
    default: Any = None
    has_default: bool = False
    enum: tuple[Any, ...] | None = None
    items: dict[str, Any] | None = field(default=None, hash=False)
    properties: dict[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class RequestTemplate:
    method: str
    url: tuple[Node, ...]
    # How many leading nodes of `url` belong to the path (before '?'): they are path-encoded.
    url_path_nodes: int
    headers: tuple[tuple[str, tuple[Node, ...]], ...] = ()
    body: tuple[Node, ...] | None = None
    body_mode: BodyMode = "none"


@dataclass(frozen=True)
class ResponseTemplate:
    body: tuple[Node, ...] | None = None
    prepend: str | None = None
    append: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: tuple[ToolArg, ...]
    request: RequestTemplate
    response: ResponseTemplate = ResponseTemplate()
    error_response: tuple[Node, ...] | None = None
    output_schema: dict[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class McpServer:
    namespace: str
    name: str
    description: str
    backend: Backend
    tools: tuple[Tool, ...]
    version: str = "1.0.0"
    title: str | None = None
    instructions: str | None = None
    config: dict[str, str] = field(default_factory=dict, hash=False)
    # Where the definition came from, for error messages and the status API.
    source: str = ""
    # The raw document, canonicalised: its hash tells whether a server changed.
    fingerprint: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def path(self) -> str:
        return f"/mcp/{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RegistrySnapshot:
    servers: tuple[McpServer, ...]

    @property
    def revision(self) -> str:
        digest = hashlib.sha256()
        for server in self.servers:
            digest.update(f"{server.key}={server.fingerprint};".encode())
        return digest.hexdigest()[:16]

    def server(self, key: str) -> McpServer | None:
        return next((s for s in self.servers if s.key == key), None)


def fingerprint(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
