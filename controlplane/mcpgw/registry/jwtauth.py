"""`auth.jwt` and `auth.oauth` of an `McpServer`: JWT issuers and the OAuth 2.1 resource server.

Envoy's `jwt_authn` verifies the tokens (translate/jwtauthn.py); the `mcp-server` filter decides.
What is checked here is what Envoy would otherwise refuse or silently misread:

- `issuer`, `jwks.uri`, `oauth.authorizationServers` and `oauth.resource` are absolute http(s)
  URLs; plain http only toward loopback (a JWKS fetched in the clear off the machine lets anyone
  on the path mint tokens);
- a local JWKS (`jwks.file`) is JSON with a non-empty `keys` list of JWKs (`kty` each), read
  once here and inlined into Envoy's configuration (a JWKS is public: no credential policy);
- claim names and scopes have the syntax the filter and RFC 6749 (3.3) give them.

`parse_jwt` and `parse_oauth` are the hooks the `auth:` block's parser calls for its `jwt` and
`oauth` fields; `parse_auth` is the minimal block parser used until that one (the API-key
module's) is merged.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mcpgw.registry.reader import Reader, join, kind

__all__ = ["JwtAuth", "JwtIssuer", "OAuthResource", "parse_auth", "parse_jwt", "parse_oauth"]

# A JWKS holds a handful of public keys; one this large is a mistake (or not a JWKS).
MAX_JWKS_BYTES = 64 << 10
MAX_ISSUERS = 8
MAX_SCOPES = 64
MAX_AUDIENCES = 16
# How long Envoy keeps a fetched JWKS: a rotation is picked up at most this late.
DEFAULT_CACHE_SECONDS = 300
MAX_CACHE_SECONDS = 86_400
# A top-level claim of the token's payload, as the filter reads it from jwt_authn's metadata.
_CLAIM = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
# RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_LOOPBACK_NAMES = {"localhost"}


@dataclass(frozen=True)
class JwtIssuer:
    """One `auth.jwt` entry: tokens of `issuer`, verified with its JWKS."""

    issuer: str
    # Accepted `aud` values; empty: the server's canonical resource URL (RFC 8707).
    audiences: tuple[str, ...] = ()
    # Exactly one of these: a JWKS Envoy fetches (and caches), or one inlined from a file.
    jwks_uri: str | None = None
    cache_seconds: int = DEFAULT_CACHE_SECONDS
    jwks_inline: str | None = None
    consumer_claim: str = "sub"
    groups_claim: str = "groups"


@dataclass(frozen=True)
class OAuthResource:
    """`auth.oauth`: what the Protected Resource Metadata (RFC 9728) says about the server."""

    authorization_servers: tuple[str, ...]
    # `scopes_supported`, and the `scope` a 401 names.
    scopes: tuple[str, ...] = ()
    # Scopes every token must carry (a subset of `scopes`); lacking one: 403 insufficient_scope.
    required_scopes: tuple[str, ...] = ()
    # The canonical resource URL; None: derived from the listener (translate/jwtauthn.py).
    resource: str | None = None


@dataclass(frozen=True)
class JwtAuth:
    """The `auth:` block as far as JWT is concerned (the API-key module's `ServerAuth` has the
    same `required`, `jwt` and `oauth` fields)."""

    required: bool = True
    jwt: tuple[JwtIssuer, ...] = ()
    oauth: OAuthResource | None = None


_JWT_FIELDS = {"issuer", "audiences", "jwks", "consumerClaim", "groupsClaim"}
_JWKS_FIELDS = {"uri", "cacheSeconds", "file"}
_OAUTH_FIELDS = {"authorizationServers", "scopes", "requiredScopes", "resource"}


def parse_auth(r: Reader, value: Any) -> JwtAuth | None:
    """`auth:` with `required`, `jwt` and `oauth` (until the API-key module's parser is merged)."""
    data = r.mapping(value, "auth")
    if data is None:
        return None
    r.only(data, "auth", {"required", "jwt", "oauth"})
    required = r.boolean(data, "required", "auth") if "required" in data else True
    issuers = parse_jwt(r, data["jwt"]) if "jwt" in data else ()
    oauth = parse_oauth(r, data["oauth"]) if "oauth" in data else None
    if "jwt" not in data:
        r.fail("auth", "no way to authenticate: add jwt (a list of issuers)")
    check_oauth(r, issuers, oauth)
    return JwtAuth(required=required, jwt=issuers, oauth=oauth)


def check_oauth(r: Reader, issuers: tuple[JwtIssuer, ...], oauth: OAuthResource | None) -> None:
    """`oauth` describes how to get a token this server accepts: only with `jwt`."""
    if oauth is not None and not issuers:
        r.fail(
            "auth.oauth", "needs auth.jwt: the tokens the authorization servers issue are JWTs verified there"
        )


def parse_jwt(r: Reader, value: Any) -> tuple[JwtIssuer, ...]:
    """`auth.jwt`: a list of issuers."""
    path = "auth.jwt"
    if isinstance(value, list) and len(value) > MAX_ISSUERS:
        r.fail(path, f"at most {MAX_ISSUERS} issuers, got {len(value)}")
        return ()
    issuers: list[JwtIssuer] = []
    seen: set[str] = set()
    for item_path, data in r.mappings(value, path, "issuers ({issuer, jwks, ...})"):
        issuer = _issuer(r, data, item_path)
        if issuer is None:
            continue
        if issuer.issuer in seen:
            r.fail(join(item_path, "issuer"), f"duplicate issuer {issuer.issuer!r}")
            continue
        seen.add(issuer.issuer)
        issuers.append(issuer)
    if isinstance(value, list) and not value:
        r.fail(path, "must list at least one issuer")
    return tuple(issuers)


def _issuer(r: Reader, data: dict[str, Any], path: str) -> JwtIssuer | None:
    before = len(r.problems)
    r.only(data, path, _JWT_FIELDS)
    issuer = r.string(data, "issuer", path, required=True)
    if issuer is not None:
        _url(r, issuer, join(path, "issuer"))
    audiences = _strings(r, data.get("audiences"), join(path, "audiences"), MAX_AUDIENCES, "audiences")
    consumer = _claim(r, data, "consumerClaim", path, "sub")
    groups = _claim(r, data, "groupsClaim", path, "groups")
    jwks = _jwks(r, data.get("jwks"), join(path, "jwks"))
    if len(r.problems) != before or issuer is None or jwks is None:
        return None
    uri, cache, inline = jwks
    return JwtIssuer(issuer, audiences, uri, cache, inline, consumer, groups)


def _claim(r: Reader, data: dict[str, Any], key: str, path: str, default: str) -> str:
    hint = "a top-level claim name: letters, digits, '_', '.', ':', '-', at most 64"
    return r.string(data, key, path, default=default, pattern=_CLAIM, hint=hint) or default


def _jwks(r: Reader, value: Any, path: str) -> tuple[str | None, int, str | None] | None:
    if value is None:
        r.fail(path, "is required: {uri: https://…, cacheSeconds: 300} or {file: PATH}")
        return None
    data = r.mapping(value, path)
    if data is None:
        return None
    r.only(data, path, _JWKS_FIELDS)
    if ("uri" in data) == ("file" in data):
        r.fail(path, "needs exactly one of uri (fetched by Envoy) and file (a local JWKS)")
        return None
    if "file" in data:
        if "cacheSeconds" in data:
            r.fail(join(path, "cacheSeconds"), "only with uri: a local JWKS is not fetched")
        name = r.string(data, "file", path, required=True)
        text = _jwks_file(r, name, join(path, "file")) if name else None
        return (None, DEFAULT_CACHE_SECONDS, text) if text is not None else None
    uri = r.string(data, "uri", path, required=True)
    if uri is None or not _url(r, uri, join(path, "uri")):
        return None
    cache = data.get("cacheSeconds", DEFAULT_CACHE_SECONDS)
    if isinstance(cache, bool) or not isinstance(cache, int) or not 1 <= cache <= MAX_CACHE_SECONDS:
        r.fail(join(path, "cacheSeconds"), f"must be an integer from 1 to {MAX_CACHE_SECONDS}, got {cache!r}")
        return None
    return uri, cache, None


def _jwks_file(r: Reader, name: str, path: str) -> str | None:
    """The file's JWKS as compact JSON; never echoes its content (it may be any file)."""
    try:
        with open(name, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                r.fail(path, f"{name!r} is not a regular file")
                return None
            raw = handle.read(MAX_JWKS_BYTES + 1)
    except OSError as error:
        r.fail(path, f"cannot read {name!r}: {error.strerror}")
        return None
    if len(raw) > MAX_JWKS_BYTES:
        r.fail(path, f"{name!r} is larger than {MAX_JWKS_BYTES} bytes: not a JWKS")
        return None
    problem = jwks_problem(raw)
    if problem is not None:
        r.fail(path, f"{name!r} {problem}")
        return None
    return json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True)


def jwks_problem(raw: bytes) -> str | None:
    """Why `raw` is not a JWKS Envoy can use (None: it is one)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "is not JSON"
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        return 'is not a JWKS: no non-empty "keys" list'
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            return f'is not a JWKS: keys[{index}] is not a JWK (no "kty")'
        if any(private in key for private in ("d", "p", "q", "dp", "dq", "qi", "k")):
            return f"holds a private or symmetric key at keys[{index}]: a verification JWKS holds public keys"
    return None


def parse_oauth(r: Reader, value: Any) -> OAuthResource | None:
    """`auth.oauth`: the server's Protected Resource Metadata."""
    path = "auth.oauth"
    data = r.mapping(value, path)
    if data is None:
        return None
    before = len(r.problems)
    r.only(data, path, _OAUTH_FIELDS)
    servers_path = join(path, "authorizationServers")
    if "authorizationServers" not in data:
        r.fail(
            servers_path, "is required: the issuer URLs of the authorization servers clients get tokens from"
        )
    servers = _strings(r, data.get("authorizationServers"), servers_path, MAX_ISSUERS, "issuer URLs")
    for index, server in enumerate(servers):
        _url(r, server, join(servers_path, index))
    scopes = _scopes(r, data.get("scopes"), join(path, "scopes"))
    required = _scopes(r, data.get("requiredScopes"), join(path, "requiredScopes"))
    for index, scope in enumerate(required):
        if scope not in scopes:
            r.fail(join(join(path, "requiredScopes"), index), f"{scope!r} is not one of scopes")
    resource = r.string(data, "resource", path)
    if resource is not None and _url(r, resource, join(path, "resource")):
        if urlsplit(resource).fragment or "#" in resource:
            r.fail(join(path, "resource"), "must not have a fragment (RFC 8707 2)")
    if len(r.problems) != before:
        return None
    return OAuthResource(servers, scopes, required, resource)


def _scopes(r: Reader, value: Any, path: str) -> tuple[str, ...]:
    scopes = _strings(r, value, path, MAX_SCOPES, "scopes")
    for index, scope in enumerate(scopes):
        if not _SCOPE.fullmatch(scope):
            r.fail(
                join(path, index),
                f"{scope!r} is not a scope token (RFC 6749 3.3: printable ASCII without space, '\"' or '\\')",
            )
    return scopes


def _strings(r: Reader, value: Any, path: str, most: int, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        r.fail(path, f"must be a list of {what}, got {kind(value)}")
        return ()
    if len(value) > most:
        r.fail(path, f"at most {most} {what}, got {len(value)}")
        return ()
    found: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            r.fail(join(path, index), f"must be a non-empty string, got {kind(item)}")
        elif item in found:
            r.fail(join(path, index), f"duplicate {item!r}")
        else:
            found.append(item)
    return tuple(found)


def _url(r: Reader, url: str, path: str) -> bool:
    """An absolute https URL, or http toward loopback; False (a problem noted) otherwise."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as error:
        r.fail(path, f"{url!r} is not a URL: {error}")
        return False
    if parts.scheme not in ("http", "https") or not host:
        r.fail(path, f"{url!r} is not an absolute http(s) URL")
        return False
    if any(c.isspace() or c in '"\\' for c in url):
        r.fail(path, f"{url!r} has spaces, quotes or backslashes")
        return False
    if parts.scheme == "http" and not is_loopback(host):
        r.fail(path, f"{url!r} is plain http off this machine: use https (http only toward loopback)")
        return False
    return True


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
