"""Namespace tokens: admin API bearer tokens that may use one namespace only.

A platform team hands each tenant a token for its own namespace; with it the tenant reads and
writes its servers (and everything under `/v1/servers/{ns}/…`, `/v1/namespaces/{ns}`) and
nothing else: not another namespace, not the registry-wide lists, not `/status` (it names every
server, file and node), not the session keys. A scoped write may not `include` another
namespace's tools either — that would serve them, with their backend credentials, from the
tenant's endpoint.

The file holds only SHA-256 digests of the tokens (like consumers' API keys), one list per
namespace, so reading it does not give away a tenant's token:

    # --admin-namespace-tokens FILE
    team-a:
      - 3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea
    team-b:
      - 9b74c9897bac770ffc029102a200c5de2b3c3e1d2d35e5a8e4e0d5a1b0b3cc5f

`printf %s "$TOKEN" | sha256sum` gives the digest of a token.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The registry's own namespace rule, so a scope can name every namespace that can exist.
from mcpgw.registry.validate import _DNS_LABEL as _NAMESPACE

_DIGEST = re.compile(r"[0-9a-f]{64}")
# Bounds on a file an operator writes by hand: far above any real use, far below a problem.
MAX_NAMESPACES = 10_000
MAX_TOKENS_PER_NAMESPACE = 16
MAX_FILE_BYTES = 4 * 1024 * 1024


class ScopesError(RuntimeError):
    """The namespace token file is unusable; the message names the file, the field and why."""


def digest(token: str) -> str:
    """The SHA-256 hex digest a namespace token file stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NamespaceTokens:
    """Token digest → the one namespace that token may use."""

    by_digest: Mapping[str, str]

    def __repr__(self) -> str:  # counts only: digests are not secrets, but they are not for logs
        return f"NamespaceTokens({len(set(self.by_digest.values()))} namespaces)"

    def namespace_of(self, presented: str) -> str | None:
        # A dict lookup on the digest: what it leaks about timing is about the digest, not the token.
        return self.by_digest.get(digest(presented)) if presented else None


def load(path: Path) -> NamespaceTokens:
    """Read and check a namespace token file; ScopesError names the file, the field path and the reason."""
    try:
        text = path.read_bytes()
    except OSError as error:
        reason = error.strerror or error
        raise ScopesError(f"{path}: cannot read the namespace token file: {reason}") from None
    if len(text) > MAX_FILE_BYTES:
        raise ScopesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScopesError(f"{path}: not YAML: {error}") from None
    if not isinstance(data, dict) or not data:
        raise ScopesError(f"{path}: must map each namespace to a list of token SHA-256 digests")
    if len(data) > MAX_NAMESPACES:
        raise ScopesError(f"{path}: more than {MAX_NAMESPACES} namespaces")
    by_digest: dict[str, str] = {}
    for namespace, digests in data.items():
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ScopesError(
                f"{path}: {namespace!r}: a namespace is lowercase letters, digits and '-', at most 63"
            )
        for index, value in _digests(path, namespace, digests):
            if not isinstance(value, str) or not _DIGEST.fullmatch(value):
                raise ScopesError(
                    f"{path}: {namespace}[{index}]: must be the 64 lowercase hex digits of a token's "
                    'SHA-256 (printf %s "$TOKEN" | sha256sum), not the token itself'
                )
            other = by_digest.setdefault(value, namespace)
            if other != namespace:
                raise ScopesError(f"{path}: {namespace}[{index}]: the same token is already {other}'s")
    return NamespaceTokens(by_digest)


def _digests(path: Path, namespace: str, value: Any) -> Iterable[tuple[int, Any]]:
    if not isinstance(value, list) or not value:
        raise ScopesError(f"{path}: {namespace}: must be a non-empty list of token SHA-256 digests")
    if len(value) > MAX_TOKENS_PER_NAMESPACE:
        raise ScopesError(
            f"{path}: {namespace}: at most {MAX_TOKENS_PER_NAMESPACE} tokens (enough to rotate with overlap)"
        )
    return enumerate(value)


def foreign_includes(document: Any, namespace: str) -> list[str]:
    """The servers of other namespaces a document includes tools from (a scoped write may not)."""
    if not isinstance(document, dict) or not isinstance(document.get("include"), list):
        return []
    found = []
    for include in document["include"]:
        server = include.get("server") if isinstance(include, dict) else None
        if isinstance(server, str) and server.partition("/")[0] != namespace:
            found.append(server)
    return found
