"""`kind: Consumer` documents and the `auth:` block of `McpServer`: parsed, checked, or refused.

A consumer is a caller of MCP servers, scoped to a namespace or global, with API keys stored as
SHA-256 hashes only. Every problem carries file, field path and reason, as for servers; a value
that looks like a key where a hash belongs is refused without ever being quoted.

The `jwt` and `oauth` subkeys of `auth:` are parsed by the JWT/OAuth module (registry/jwtauth.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from mcpgw.registry.authmodel import (
    DEFAULT_API_KEY_HEADER,
    ApiKey,
    ApiKeyAuth,
    Consumer,
    ServerAuth,
)
from mcpgw.registry.headers import header_name_problem
from mcpgw.registry.jwtauth import check_oauth, parse_jwt, parse_oauth
from mcpgw.registry.model import McpServer, fingerprint
from mcpgw.registry.reader import Invalid, Problem, Reader, join, kind

__all__ = [
    "KIND",
    "MAX_API_KEYS",
    "MAX_CONSUMERS",
    "MAX_GROUPS",
    "check_consumers",
    "is_consumer",
    "parse_auth",
    "parse_consumer",
]

API_VERSION = "mcpgw/v1"
KIND = "Consumer"
_FIELDS = {"apiVersion", "kind", "name", "namespace", "groups", "apiKeys"}
_KEY_FIELDS = {"id", "sha256"}
# Fields people put a key under when they mean a hash: named in the error, never echoed.
_PLAINTEXT_FIELDS = ("key", "value", "apiKey", "secret", "token", "plaintext")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_HINT = "lowercase letters, digits and '-', at most 63, e.g. 'alice'"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-fA-F]*")
# Limits: every key of every consumer reaches each authenticated server's filter configuration.
MAX_API_KEYS = 16
MAX_GROUPS = 64
MAX_CONSUMERS = 10_000
# What `mcpgw consumers create` prints: a key, recognizable when pasted where a hash belongs.
KEY_PREFIX = "mcpgw_"
_AUTH_FIELDS = {"required", "apiKeys", "jwt", "oauth"}


def is_consumer(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == KIND


def parse_consumer(document: Any, file: str = "") -> Consumer:
    """Validate one `kind: Consumer` document; raises `Invalid` listing every problem found."""
    reader = Reader(file)
    consumer = _consumer(reader, document)
    if reader.problems or consumer is None:
        raise Invalid(reader.problems or [Problem(file, "", "invalid document")])
    return consumer


def _consumer(r: Reader, document: Any) -> Consumer | None:
    data = r.mapping(document, "")
    if data is None:
        return None
    r.only(data, "", _FIELDS)
    if data.get("apiVersion", API_VERSION) != API_VERSION:
        r.fail("apiVersion", f"must be {API_VERSION!r}, got {data.get('apiVersion')!r}")
    if data.get("kind") != KIND:
        r.fail("kind", f"must be {KIND!r}, got {data.get('kind')!r}")
    name = r.string(data, "name", "", required=True, pattern=_DNS_LABEL, hint=_DNS_HINT)
    namespace = r.string(data, "namespace", "", pattern=_DNS_LABEL, hint=_DNS_HINT)
    groups = _groups(r, data.get("groups", []))
    keys = _api_keys(r, data.get("apiKeys", []))
    if r.problems or name is None:
        return None
    return Consumer(
        name=name,
        namespace=namespace,
        groups=groups,
        api_keys=keys,
        source=r.file,
        fingerprint=fingerprint(document),
    )


def _groups(r: Reader, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        r.fail("groups", f"must be a list of group names, got {kind(value)}")
        return ()
    if len(value) > MAX_GROUPS:
        r.fail("groups", f"at most {MAX_GROUPS} groups, got {len(value)}")
        return ()
    groups: list[str] = []
    for index, group in enumerate(value):
        path = join("groups", index)
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            r.fail(
                path,
                "must be 1-128 characters of letters, digits and . _ : / - (starting with a letter or digit)",
            )
        elif group in groups:
            r.fail(path, f"duplicate group {group!r}")
        else:
            groups.append(group)
    return tuple(groups)


def _api_keys(r: Reader, value: Any) -> tuple[ApiKey, ...]:
    if not isinstance(value, list):
        r.fail("apiKeys", f"must be a list of {{id, sha256}}, got {kind(value)}")
        return ()
    if len(value) > MAX_API_KEYS:
        r.fail("apiKeys", f"at most {MAX_API_KEYS} keys per consumer (rotation needs two), got {len(value)}")
        return ()
    keys: list[ApiKey] = []
    ids: dict[str, int] = {}
    hashes: dict[str, int] = {}
    for path, item in r.mappings(value, "apiKeys", "{id, sha256}"):
        index = int(path[path.rindex("[") + 1 : -1])
        for field in _PLAINTEXT_FIELDS:
            if field in item:
                r.fail(
                    join(path, field),
                    "a plaintext key has no place in the registry: store only its SHA-256 as 'sha256' "
                    "('mcpgw consumers create' prints the key once and writes the hash)",
                )
        r.only({k: v for k, v in item.items() if k not in _PLAINTEXT_FIELDS}, path, _KEY_FIELDS)
        key_id = r.string(item, "id", path, required=True, pattern=_KEY_ID, hint="1-64 of A-Z a-z 0-9 . _ -")
        digest = _sha256(r, item, path)
        if key_id is not None:
            if key_id in ids:
                r.fail(join(path, "id"), f"duplicate key id {key_id!r} (also apiKeys[{ids[key_id]}])")
            ids.setdefault(key_id, index)
        if digest is not None:
            if digest in hashes:
                r.fail(join(path, "sha256"), f"the same key hash as apiKeys[{hashes[digest]}]")
            hashes.setdefault(digest, index)
        if key_id is not None and digest is not None:
            keys.append(ApiKey(key_id, digest))
    return tuple(keys)


def _sha256(r: Reader, item: dict[str, Any], path: str) -> str | None:
    """A key's hash: 64 lowercase hex digits. Whatever else is there is never quoted (it may be a key)."""
    field = join(path, "sha256")
    value = item.get("sha256")
    if value is None:
        if not any(f in item for f in _PLAINTEXT_FIELDS):
            r.fail(field, "is required (64 lowercase hex digits: the SHA-256 of the key)")
        return None
    if not isinstance(value, str):
        r.fail(field, f"must be a string of 64 lowercase hex digits, got {kind(value)}")
        return None
    if _SHA256.fullmatch(value):
        return value
    if value.startswith(KEY_PREFIX) or not _HEX.fullmatch(value):
        r.fail(
            field,
            "looks like a plaintext key, not a SHA-256: store only the hash (64 lowercase hex digits; "
            "'mcpgw consumers create' prints the key once and writes the hash)",
        )
    elif len(value) != 64:
        r.fail(field, f"a SHA-256 is 64 hex digits, got {len(value)}")
    else:
        r.fail(field, "hex digits must be lowercase")
    return None


def check_consumers(consumers: Sequence[Consumer]) -> list[Problem]:
    """Cross-document rules: a key hash belongs to one consumer; the registry holds a bounded number."""
    problems: list[Problem] = []
    if len(consumers) > MAX_CONSUMERS:
        problems.append(
            Problem(
                consumers[MAX_CONSUMERS].source, "", f"more than {MAX_CONSUMERS} consumers in the registry"
            )
        )
    owners: dict[str, Consumer] = {}
    for consumer in consumers:
        for index, key in enumerate(consumer.api_keys):
            other = owners.setdefault(key.sha256, consumer)
            if other is not consumer:
                problems.append(
                    Problem(
                        consumer.source,
                        join(join("apiKeys", index), "sha256"),
                        f"the same key hash as consumer {other.scope}/{other.name} ({other.source}): "
                        "one key identifies one consumer",
                    )
                )
    return problems


def split(items: Iterable[McpServer | Consumer]) -> tuple[list[McpServer], list[Consumer]]:
    servers: list[McpServer] = []
    consumers: list[Consumer] = []
    for item in items:
        (consumers if isinstance(item, Consumer) else servers).append(item)  # type: ignore[arg-type]
    return servers, consumers


# -- the `auth:` block of an McpServer -----------------------------------------------------------


def parse_auth(r: Reader, value: Any) -> ServerAuth | None:
    """`auth:`: `required`, `apiKeys` (here) and `jwt` / `oauth` (the JWT module's hooks)."""
    data = r.mapping(value, "auth")
    if data is None:
        return None
    r.only(data, "auth", _AUTH_FIELDS)
    required = True
    if "required" in data:
        required = r.boolean(data, "required", "auth")
    api_keys = _api_key_auth(r, data["apiKeys"]) if "apiKeys" in data else None
    jwt = parse_jwt(r, data["jwt"]) if "jwt" in data else ()
    oauth = parse_oauth(r, data["oauth"]) if "oauth" in data else None
    if "apiKeys" not in data and "jwt" not in data:
        r.fail("auth", "no way to authenticate: add apiKeys ({} for the defaults) or jwt (a list of issuers)")
    check_oauth(r, jwt, oauth)
    return ServerAuth(required=required, api_keys=api_keys, jwt=jwt, oauth=oauth)


def _api_key_auth(r: Reader, value: Any) -> ApiKeyAuth | None:
    if value is None:
        value = {}
    data = r.mapping(value, "auth.apiKeys")
    if data is None:
        return None
    r.only(data, "auth.apiKeys", {"header"})
    header = (
        r.string(data, "header", "auth.apiKeys", default=DEFAULT_API_KEY_HEADER) or DEFAULT_API_KEY_HEADER
    )
    problem = header_name_problem(header)
    if problem is None and header.lower() in ("cookie", "mcp-session-id", "mcp-protocol-version", "origin"):
        problem = "read by the gateway for MCP itself"
    if problem is not None:
        r.fail("auth.apiKeys.header", f"{header!r}: {problem}")
        return None
    return ApiKeyAuth(header=header.lower())
