"""Who may call: `Consumer` documents and the `auth:` block of an `McpServer`, as validated values.

Kept apart from `model.py` so the parsing module (`consumers.py`) and the server model can both
import it without a cycle. API keys are held only as SHA-256 hashes: nothing in the registry, and
so nothing the control plane logs, serves or sends to Envoy, is a key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # jwtauth reads documents through reader.py, which needs this module's types
    from mcpgw.registry.jwtauth import JwtIssuer, OAuthResource

# Every header name the API-key check may read is compared lower-case; `authorization` means
# `Authorization: Bearer <key>`, another name carries the raw key.
DEFAULT_API_KEY_HEADER = "authorization"


@dataclass(frozen=True)
class ApiKey:
    """One key of a consumer: its id (shown in logs instead of the key) and the key's SHA-256."""

    id: str
    sha256: str


@dataclass(frozen=True)
class Consumer:
    """A caller of MCP servers, scoped to a namespace (None: a global consumer)."""

    name: str
    namespace: str | None
    groups: tuple[str, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()
    source: str = ""
    fingerprint: str = ""

    @functools.cached_property
    def key(self) -> str:
        """The registry key; never the form of a server key (`namespace/name`), so both kinds
        share one key space in every store."""
        return consumer_key(self.namespace, self.name)

    @property
    def scope(self) -> str:
        return self.namespace or "*"


def consumer_key(namespace: str | None, name: str) -> str:
    return f"consumers/{namespace or '*'}/{name}"


@dataclass(frozen=True)
class ApiKeyAuth:
    """`auth.apiKeys`: consumers' API keys are accepted, from this header."""

    header: str = DEFAULT_API_KEY_HEADER


@dataclass(frozen=True)
class ServerAuth:
    """An `McpServer`'s `auth:` block: how callers authenticate and whether they must."""

    # False: identify callers that present a credential, admit anonymous ones.
    required: bool = True
    api_keys: ApiKeyAuth | None = None
    # JWT issuers and the OAuth resource metadata, as registry/jwtauth.py parses them.
    jwt: tuple[JwtIssuer, ...] = ()
    oauth: OAuthResource | None = None
