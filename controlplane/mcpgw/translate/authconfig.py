"""Compile an `McpServer`'s `auth:` block and the registry's consumers into the filter's `auth`.

The `mcp-server` filter decides every request of a server with `auth` (`src/auth.zig`): it hashes
the presented API key and looks the SHA-256 up in `apiKeys`, which holds every consumer's keys
(hashes only, so `config_dump` shows no key). Consumers of other namespaces are listed too: the
filter answers them `403` (a known caller, the wrong tenant) instead of `401`.

`jwt`, `resourceMetadata` and `requiredScopes` come from the JWT/OAuth module
(translate/jwtauthn.py `filter_auth`), merged over this by the translator.
"""

from __future__ import annotations

from typing import Any

from mcpgw.registry.model import McpServer, RegistrySnapshot

__all__ = ["auth_config", "auth_inputs"]


def auth_config(server: McpServer, snapshot: RegistrySnapshot) -> dict[str, Any] | None:
    """The filter configuration's `auth` object (CONFIG.md), None for a server without `auth:`."""
    auth = server.auth
    if auth is None:
        return None
    config: dict[str, Any] = {"required": auth.required, "namespace": server.namespace}
    if auth.api_keys is not None:
        config["apiKeyHeader"] = auth.api_keys.header
        config["apiKeys"] = {
            key.sha256: {
                "consumer": consumer.name,
                # Empty: a global consumer, admitted by every server whose auth admits it.
                "namespace": consumer.namespace or "",
                "keyId": key.id,
                "groups": list(consumer.groups),
            }
            for consumer in snapshot.consumers
            for key in consumer.api_keys
        }
    return config


def auth_inputs(server: McpServer, snapshot: RegistrySnapshot) -> tuple[Any, ...]:
    """What a server's `auth` configuration depends on besides the server: the consumers (for the
    translator's memo, so a new or revoked key re-translates exactly the servers with `auth`)."""
    if server.auth is None or server.auth.api_keys is None:
        return ()
    return (snapshot.consumers_revision,)
