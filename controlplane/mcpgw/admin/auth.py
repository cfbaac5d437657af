"""Who may use the admin API: a bearer token for writes, loopback-only open reads, namespace tokens.

The token is compared in constant time and never logged or echoed. Reads are open only when
the API listens on loopback (the same trust boundary as Envoy's own admin port); on any other
address every `/v1` request, `/status` and `/metrics` need the token (`/healthz` stays open; a
scrape token may admit `/metrics` alone), and starting there without one, or without TLS, is
refused. Namespace tokens (`mcpgw.admin.scopes`) give one namespace each, whatever the address.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from mcpgw.admin.scopes import NamespaceTokens

TOKEN_ENV = "MCPGW_ADMIN_TOKEN"


class AdminConfigError(RuntimeError):
    """The admin API cannot start safely with this configuration."""


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A hostname may resolve to anything (and change): treat it as reachable from outside.
        return False


def load_token(
    token_file: Path | None = None, environ: Mapping[str, str] | None = None, *, explicit: str | None = None
) -> str | None:
    """The admin token: `explicit`, else the file's content, else $MCPGW_ADMIN_TOKEN, else None.

    Raises AdminConfigError for an unreadable or empty file: a typo in the path must not
    silently start a gateway whose writes are disabled (or, worse, open).
    """
    if explicit:
        return explicit
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise AdminConfigError(
                f"cannot read admin token file {token_file}: {error.__class__.__name__}"
            ) from error
        if not token:
            raise AdminConfigError(f"admin token file {token_file} is empty")
        return token
    token = (environ if environ is not None else os.environ).get(TOKEN_ENV, "").strip()
    return token or None


def check_bind(host: str, token: str | None, tls: bool = False, namespace_tokens: bool = False) -> None:
    """Refuse a non-loopback admin address without a token (an open registry) or without TLS
    (the token, the registry's documents and the session-key list would cross the network in
    clear). A TLS-terminating proxy on the same host can still front an API bound to loopback."""
    if is_loopback(host):
        return
    if token is None and not namespace_tokens:
        raise AdminConfigError(
            f"refusing to serve the admin API on non-loopback address {host!r} without a token; "
            f"set ${TOKEN_ENV} or --admin-token-file, or bind 127.0.0.1"
        )
    if not tls:
        raise AdminConfigError(
            f"refusing to serve the admin API on non-loopback address {host!r} without TLS: the token "
            "would cross the network in clear; set --admin-tls-cert and --admin-tls-key, or bind 127.0.0.1"
        )


@dataclass(frozen=True)
class Access:
    """What an authorized request may use: everything, or one namespace (a namespace token)."""

    namespace: str | None = None


FULL_ACCESS = Access()


class Authorizer:
    """Decides per request; the tokens themselves stay inside this object.

    `scrape_token` (optional) admits `GET /metrics` only: Prometheus then holds no token that
    could edit the registry. The admin token admits /metrics too.
    """

    def __init__(
        self,
        token: str | None,
        open_reads: bool,
        namespace_tokens: NamespaceTokens | None = None,
        scrape_token: str | None = None,
    ) -> None:
        self._token = token.encode() if token else None
        self._scrape_token = scrape_token.encode() if scrape_token else None
        self.open_reads = open_reads
        self._namespace_tokens = namespace_tokens

    def __repr__(self) -> str:  # never show the token in a traceback or a debug dump
        return (
            f"Authorizer(token={'set' if self._token else 'unset'}, open_reads={self.open_reads}, "
            f"namespace_tokens={self._namespace_tokens!r}, "
            f"scrape_token={'set' if self._scrape_token else 'unset'})"
        )

    @property
    def writes_enabled(self) -> bool:
        return self._token is not None or self._namespace_tokens is not None

    def access(self, request: web.Request, write: bool, scrape: bool = False) -> Access | None:
        """The admin token gives full access; a namespace token its namespace; else open reads or None.

        `scrape`: the request is a read of /metrics, which the scrape token also admits.
        """
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        # Compared even without a header, so a missing token costs the same as a wrong one.
        given = presented.strip().encode() if scheme.lower() == "bearer" else b""
        # Both compared whenever configured: the answer's timing does not say which one matched.
        admin = self._token is not None and hmac.compare_digest(given, self._token)
        scraper = self._scrape_token is not None and hmac.compare_digest(given, self._scrape_token)
        if admin or (scrape and not write and scraper):
            return FULL_ACCESS
        if not write and self.open_reads:
            return FULL_ACCESS  # loopback: anyone here may read everything anyway
        namespace = self._namespace_tokens.namespace_of(given.decode()) if self._namespace_tokens else None
        return None if namespace is None else Access(namespace)
