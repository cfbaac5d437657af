"""JWT verification and the OAuth 2.1 resource server, as Envoy configuration.

Envoy's own `jwt_authn` filter verifies tokens (signature with the issuer's JWKS, `iss`, `aud`,
`exp`/`nbf`), before the `mcp-server` filter in the listener's HTTP filters. It never answers:
every server's requirement ends in `allow_missing_or_failed`, and each provider writes what it
found into dynamic metadata (`envoy.filters.http.jwt_authn`: the payload under the provider's
name, a failure under `<provider>#failed`), so the Wasm filter makes the decision for every MCP
path and every denial has one shape (CONFIG.md "auth", src/jwtidentity.zig).

- One provider per issuer of each server (`mcpgw/<ns>/<name>/jwt<i>`): audiences are per server
  (by default its canonical resource URL, RFC 8707), so two servers trusting one issuer still
  accept only the tokens minted for them.
- A remote JWKS is fetched by Envoy through a cluster of the server (`…/jwks<i>`), verified like
  an https backend (registry/tls.py: the system CAs, the URL's host name); `async_fetch` fetches
  it when the listener is built and refreshes it every `cacheSeconds` in the background, so no
  request waits for the IdP.
- `forward: false`: a verified token is removed from the request (it is never a backend's).
- Protected Resource Metadata (RFC 9728) at `/.well-known/oauth-protected-resource<path>`: a
  route with a `direct_response`, so no filter runs for it.
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

from mcpgw.registry.jwtauth import JwtIssuer
from mcpgw.registry.model import McpServer
from mcpgw.registry.validate import is_ip as _is_ip

if TYPE_CHECKING:
    from mcpgw.translate.envoy import GatewaySettings

JWT_AUTHN = "envoy.filters.http.jwt_authn"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
WELL_KNOWN = "/.well-known/oauth-protected-resource"
# How long a JWKS fetch may take; the listener waits for the first fetch (see `_provider`).
JWKS_TIMEOUT = "5s"
# A failed fetch is retried this often (Envoy's default is 1 s: an IdP that is down would be
# asked once a second by every Envoy worker's provider).
JWKS_REFETCH = "10s"
FAILED_SUFFIX = "#failed"
# Verified tokens kept per worker thread and provider.
JWT_CACHE_SIZE = 1000


def has_jwt(server: McpServer) -> bool:
    return server.auth is not None and bool(server.auth.jwt)


def provider_name(server: McpServer, index: int) -> str:
    return f"mcpgw/{server.key}/jwt{index}"


def jwks_cluster_name(server: McpServer, index: int) -> str:
    return f"mcpgw/{server.key}/jwks{index}"


def resource_url(server: McpServer, settings: GatewaySettings) -> str:
    """The server's canonical resource URL (RFC 8707): `oauth.resource`, else the listener's."""
    oauth = server.auth.oauth if server.auth is not None else None
    if oauth is not None and oauth.resource:
        return str(oauth.resource)
    scheme = "https" if settings.listener_tls is not None else "http"
    host = settings.listen_host
    # A wildcard address names no host a client could use: loopback stands in (set
    # `oauth.resource` for a gateway reached by name).
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{settings.listen_port}{server.path}"


def metadata_url(server: McpServer, settings: GatewaySettings) -> str:
    """Where the server's Protected Resource Metadata is (RFC 9728 3.1: the well-known path
    inserted between the resource URL's host and path)."""
    parts = urlsplit(resource_url(server, settings))
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path.rstrip('/')}"


def filter_auth(server: McpServer, settings: GatewaySettings) -> dict[str, Any] | None:
    """The filter configuration's JWT part of `auth` (CONFIG.md): the providers to read, the
    metadata URL for `WWW-Authenticate`, and the scopes every token must carry."""
    auth = server.auth
    if auth is None:
        return None
    oauth = auth.oauth
    return {
        "required": auth.required,
        "jwt": [
            {
                "provider": provider_name(server, i),
                "consumerClaim": j.consumer_claim,
                "groupsClaim": j.groups_claim,
            }
            for i, j in enumerate(auth.jwt)
        ],
        "resourceMetadata": metadata_url(server, settings) if oauth is not None else None,
        "requiredScopes": list(oauth.required_scopes) if oauth is not None else [],
    }


def jwt_authn_filter(servers: tuple[McpServer, ...], settings: GatewaySettings) -> dict[str, Any] | None:
    """The listener's `jwt_authn` filter for every server with `auth.jwt` (None: none has)."""
    providers: dict[str, Any] = {}
    rules: list[dict[str, Any]] = []
    for server in servers:
        if not has_jwt(server):
            continue
        names = []
        for index, issuer in enumerate(server.auth.jwt):
            name = provider_name(server, index)
            providers[name] = _provider(server, index, issuer, settings)
            names.append(name)
        rules.append(
            {
                "match": {"path_separated_prefix": server.path},
                "requires": {
                    "requires_any": {
                        "requirements": [{"provider_name": n} for n in names]
                        + [{"allow_missing_or_failed": {}}]
                    }
                },
            }
        )
    if not providers:
        return None
    return {
        "name": JWT_AUTHN,
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": providers,
            "rules": rules,
            # A CORS preflight carries no token; the Wasm filter answers it.
            "bypass_cors_preflight": True,
        },
    }


def _provider(server: McpServer, index: int, issuer: JwtIssuer, settings: GatewaySettings) -> dict[str, Any]:
    name = provider_name(server, index)
    provider: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audiences": list(issuer.audiences) or [resource_url(server, settings)],
        "forward": False,
        "require_expiration": True,
        "payload_in_metadata": name,
        "failed_status_in_metadata": name + FAILED_SUFFIX,
        # Verified tokens are remembered (per worker, until their `exp`), so an agent's
        # repeated calls pay the signature check once (bench/results/dataplane-jwt.md).
        "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE},
    }
    if issuer.jwks_inline is not None:
        provider["local_jwks"] = {"inline_string": issuer.jwks_inline}
    else:
        provider["remote_jwks"] = {
            "http_uri": {
                "uri": issuer.jwks_uri,
                "cluster": jwks_cluster_name(server, index),
                "timeout": JWKS_TIMEOUT,
            },
            "cache_duration": f"{issuer.cache_seconds}s",
            # Fetched when the listener is built, then refreshed in the background: no request
            # waits for the IdP. Not `fast_listener`: every listener update builds a new JWKS
            # cache, and a new listener should not serve before its first fetch; warming keeps
            # the old listener serving until the keys are in (an IdP that does not answer
            # delays an update by at most two JWKS_TIMEOUTs, then the listener serves and
            # refetches every JWKS_REFETCH).
            "async_fetch": {"fast_listener": False, "failed_refetch_duration": JWKS_REFETCH},
            "retry_policy": {"num_retries": 1},
        }
    return provider


def jwks_clusters(server: McpServer, settings: GatewaySettings) -> list[Message]:
    """One cluster per remote JWKS of `server`: the IdP, reached by Envoy (TLS verified for https)."""
    if not has_jwt(server):
        return []
    found = []
    for index, issuer in enumerate(server.auth.jwt):
        if issuer.jwks_uri is None:
            continue
        parts = urlsplit(issuer.jwks_uri)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        name = jwks_cluster_name(server, index)
        data: dict[str, Any] = {
            "name": name,
            "connect_timeout": "2s",
            "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {"socket_address": {"address": host, "port_value": port}}
                                }
                            }
                        ]
                    }
                ],
            },
        }
        if parts.scheme == "https":
            data["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": _tls(host, settings),
            }
        found.append(json_format.ParseDict(data, cluster_pb2.Cluster()))
    return found


def _tls(host: str, settings: GatewaySettings) -> dict[str, Any]:
    """Verified like an https backend without `tls:` (registry/tls.py): the system CAs, the name."""
    san = (
        {"san_type": "IP_ADDRESS", "matcher": {"exact": str(ipaddress.ip_address(host))}}
        if _is_ip(host)
        else {"san_type": "DNS", "matcher": {"exact": host}}
    )
    context: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "validation_context": {
                "trusted_ca": {"filename": settings.backend_ca_file},
                "match_typed_subject_alt_names": [san],
            }
        },
    }
    if not _is_ip(host):
        context["sni"] = host
    return context


def metadata_routes(server: McpServer, settings: GatewaySettings | None) -> list[dict[str, Any]]:
    """The server's Protected Resource Metadata route (none without `auth.oauth`)."""
    auth = server.auth
    if auth is None or auth.oauth is None or settings is None:
        return []
    oauth = auth.oauth
    document: dict[str, Any] = {
        "resource": resource_url(server, settings),
        "authorization_servers": list(oauth.authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if oauth.scopes:
        document["scopes_supported"] = list(oauth.scopes)
    return [
        {
            "name": f"{server.key}/oauth-protected-resource",
            "match": {"path": f"{WELL_KNOWN}{server.path}"},
            "direct_response": {
                "status": 200,
                "body": {"inline_string": json.dumps(document, separators=(",", ":"))},
            },
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                },
                # Browser-based MCP clients fetch it from another origin (it is public).
                {"header": {"key": "access-control-allow-origin", "value": "*"}},
            ],
        }
    ]
