"""The registry's immutable model: what an operator declared, already validated.

Sources (the YAML directory today; Redis and the admin API later) produce a
`RegistrySnapshot`; the translator reads it and nothing writes to it afterwards.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from mcpgw.registry.authmodel import Consumer, ServerAuth
from mcpgw.registry.templates import Node

ArgType = Literal["string", "number", "integer", "boolean", "array", "object"]
ArgPosition = Literal["query", "path", "header", "cookie", "body"]
BodyMode = Literal["none", "template", "json_args", "form_args", "url_args"]
SecretFormat = Literal["header", "certificates", "private-key"]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BackendTls:
    """`backend.tls`: how the gateway verifies (and authenticates to) a `scheme: https` backend.

    Without it an https backend is still verified: against the system CAs, by its name.
    """

    # PEM certificates trusted instead of the system CAs (`ca`).
    ca: Secret | None = None
    # The name the certificate must carry and SNI sends; None: `backend.host`, else the endpoint's.
    server_name: str | None = None
    # A client certificate chain and its key (PEM), for backends that require mutual TLS.
    client_certificate: Secret | None = None
    client_key: Secret | None = None
    # No verification at all: validation warns about it.
    insecure_skip_verify: bool = False

    @property
    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for s in (self.ca, self.client_certificate, self.client_key) if s is not None)


@dataclass(frozen=True)
class Backend:
    scheme: Literal["http", "https"]
    endpoints: tuple[Endpoint, ...]
    host_header: str | None = None
    timeout_ms: int = 10_000
    # Only for `scheme: https`; None verifies by default (system CAs, the backend's name).
    tls: BackendTls | None = None


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
class Secret:
    """A credential: inline in the registry, or read from an environment variable or a file.

    The value never appears in `repr`, so a secret cannot leak into logs or the status API by
    accident; `where` (file and field path) is what error messages show instead.
    """

    kind: Literal["inline", "env", "file"]
    ref: str = field(repr=False)
    where: str = ""
    # What the value must be: a header value (a token, a key), PEM certificates, or a PEM
    # private key (`backend.tls`); checked when it is read.
    format: SecretFormat = "header"


@dataclass(frozen=True)
class SecurityScheme:
    """How a credential travels: HTTP basic/bearer in Authorization, or an API key header/query."""

    id: str
    type: Literal["http", "apiKey"]
    scheme: Literal["basic", "bearer"] | None
    location: Literal["header", "query"]
    name: str
    default_credential: Secret | None = None

    @property
    def prefix(self) -> str:
        return {"basic": "Basic ", "bearer": "Bearer "}.get(self.scheme or "", "")


@dataclass(frozen=True)
class UpstreamSecurity:
    """`requestTemplate.security`: the scheme the backend expects, and an optional credential override."""

    scheme_id: str
    credential: Secret | None = None


@dataclass(frozen=True)
class ClientSecurity:
    """Tool-level `security`: the scheme the client presents; with passthrough, forwarded to the backend."""

    scheme_id: str
    passthrough: bool


@dataclass(frozen=True)
class RequestTemplate:
    method: str
    url: tuple[Node, ...]
    # How many leading nodes of `url` belong to the path (before '?'): they are path-encoded.
    url_path_nodes: int
    headers: tuple[tuple[str, tuple[Node, ...]], ...] = ()
    body: tuple[Node, ...] | None = None
    body_mode: BodyMode = "none"
    # `rawBody: true`: the body template's values are inserted as they are, not escaped for
    # their JSON, XML or form context (see registry/bodyenc.py).
    raw_body: bool = False
    security: UpstreamSecurity | None = None


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
    client_security: ClientSecurity | None = None


@dataclass(frozen=True)
class Include:
    """Tools of another server offered by this one (a composed tool set); `tools=None` means all."""

    server: str
    tools: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ToolOverride:
    """A `type: mcp` server's `tools:` entry: what the gateway says about an upstream tool."""

    name: str
    description: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class McpUpstream:
    """What a `type: mcp` server proxies to: an MCP server of its own, on `backend`'s hosts."""

    path: str = "/mcp"
    # `sse`: the 2024-11-05 HTTP+SSE transport, reached through the session broker's bridge.
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    # None: every upstream tool is served.
    allow_tools: tuple[str, ...] | None = None
    overrides: tuple[ToolOverride, ...] = ()
    # The scheme (and credential) the upstream expects; with `client_security` the client's own
    # credential is put into this scheme, else the registry's credential is injected.
    security: UpstreamSecurity | None = None
    client_security: ClientSecurity | None = None


@dataclass(frozen=True)
class Limits:
    """Bounds the filter enforces: larger requests get 413, larger answers an error result; JSON
    nested deeper than `max_json_depth` (client messages and upstream answers) is never parsed."""

    max_request_bytes: int = 1 << 20
    max_response_bytes: int = 4 << 20
    # Tool arguments and schemas rarely nest 10 levels; 64 leaves room for any real document
    # while keeping what the filter parses and re-serialises recursively small.
    max_json_depth: int = 64


@dataclass(frozen=True)
class Observability:
    """A server's `observability:` block (docs/registry.md, docs/observability.md)."""

    # tools/call arguments go into the access log (`mcpgw.arguments`): for debugging only, they
    # may hold personal data or secrets a client passed.
    log_arguments: bool = False


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
    security_schemes: tuple[SecurityScheme, ...] = ()
    includes: tuple[Include, ...] = ()
    limits: Limits = Limits()
    # Browser origins allowed besides localhost ones (`scheme://host[:port]`, lower-case).
    allowed_origins: tuple[str, ...] = ()
    # tools/list page size; 0 = every tool in one page.
    page_size: int = 0
    # What the gateway reports about this server's traffic (`observability:`).
    observability: Observability = Observability()
    # Gateway groups (Envoys' `node.cluster`) that serve this server and receive its
    # configuration and credentials; None: every group.
    gateways: tuple[str, ...] | None = None
    # Set for `type: mcp` servers (then `tools` is empty: the upstream defines them).
    mcp: McpUpstream | None = None
    # `auth:`: callers must (or may) authenticate (API keys, JWT, OAuth metadata); None:
    # anyone who reaches the listener.
    auth: ServerAuth | None = None
    # Where the definition came from, for error messages and the status API.
    source: str = ""
    # The raw document, canonicalised: its hash tells whether a server changed.
    fingerprint: str = ""
    # What validation accepted but warns about (`field.path: reason`), e.g. insecureSkipVerify.
    warnings: tuple[str, ...] = ()

    # Cached: the control plane asks for these for every server on every change.
    @functools.cached_property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @functools.cached_property
    def path(self) -> str:
        return f"/mcp/{self.namespace}/{self.name}"

    def served_by(self, group: str | None) -> bool:
        """True if gateways of `group` serve this server (None: a group no server names)."""
        return self.gateways is None or (group is not None and group in self.gateways)

    @functools.cached_property
    def secrets(self) -> tuple[Secret, ...]:
        """Every credential this server's schemes and tools reference."""
        found = [s.default_credential for s in self.security_schemes if s.default_credential]
        found += [
            t.request.security.credential
            for t in self.tools
            if t.request.security and t.request.security.credential
        ]
        if self.mcp is not None and self.mcp.security is not None and self.mcp.security.credential:
            found.append(self.mcp.security.credential)
        if self.backend.tls is not None:
            found += self.backend.tls.secrets
        return tuple(found)


@dataclass(frozen=True)
class RegistrySnapshot:
    servers: tuple[McpServer, ...]
    # `kind: Consumer` documents, sorted by key: the callers servers with `auth:` admit.
    consumers: tuple[Consumer, ...] = ()

    @functools.cached_property
    def revision(self) -> str:
        digest = hashlib.sha256()
        for server in self.servers:
            digest.update(f"{server.key}={server.fingerprint};".encode())
        for consumer in self.consumers:
            digest.update(f"{consumer.key}={consumer.fingerprint};".encode())
        return digest.hexdigest()[:16]

    @functools.cached_property
    def consumers_revision(self) -> str:
        """Changes with any consumer: what the `auth` of every server depends on."""
        digest = hashlib.sha256()
        for consumer in self.consumers:
            digest.update(f"{consumer.key}={consumer.fingerprint};".encode())
        return digest.hexdigest()[:16]

    @functools.cached_property
    def _by_key(self) -> dict[str, McpServer]:
        return {server.key: server for server in self.servers}

    def server(self, key: str) -> McpServer | None:
        return self._by_key.get(key)

    def served_tools(self, server: McpServer) -> list[tuple[McpServer, Tool]]:
        """Every tool `server` offers, each with the server that owns its backend and schemes."""
        tools = [(server, tool) for tool in server.tools]
        for include in server.includes:
            owner = self.server(include.server)
            assert owner is not None, f"validated include {include.server} is missing"
            tools += [(owner, t) for t in owner.tools if include.tools is None or t.name in include.tools]
        return tools

    def secrets(self) -> list[Secret]:
        return [secret for server in self.servers for secret in server.secrets]


def fingerprint(document: Any) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
