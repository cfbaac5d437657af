"""A small synchronous client of the admin API, for the CLI (stdlib only: one request per call).

Errors come back as `AdminError` carrying the HTTP status, the server's message and, for 422,
the problems with their field paths, so the CLI can print them the way `mcpgw validate` does.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

ADMIN_URL_ENV = "MCPGW_ADMIN_URL"
# The CA that signed the admin API's certificate (default: the system's CAs).
ADMIN_TLS_CA_ENV = "MCPGW_ADMIN_TLS_CA"
DEFAULT_ADMIN_URL = "http://127.0.0.1:18001"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect would carry the bearer token to wherever it points


def _opener(context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    # No proxies and no redirects: the token goes to the admin API and nowhere else.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({}), _NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)


_OPENER = _opener(None)


def default_admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


class AdminError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        problems: list[dict[str, str]] | None = None,
        etag: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status  # 0: the API could not be reached
        self.message = message
        self.problems = problems or []
        self.etag = etag


@dataclass
class Reply:
    status: int
    body: Any
    etag: str | None
    headers: dict[str, str] = field(default_factory=dict)


def _unquote(etag: str | None) -> str | None:
    if etag is None:
        return None
    etag = etag.removeprefix("W/")
    return etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else etag


def _path(*parts: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in parts)


def split_key(key: str) -> tuple[str, str]:
    namespace, sep, name = key.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"expected NAMESPACE/NAME, got {key!r}")
    return namespace, name


class AdminClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: how to verify an https API (and which client certificate to show); default:
        the system's CAs and the URL's host name."""
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self._opener = _opener(tls) if tls is not None else _OPENER

    def sends_token_in_clear(self) -> bool:
        """True when the token would cross a network unencrypted (http:// to another machine)."""
        from mcpgw.admin.auth import is_loopback

        url = urllib.parse.urlsplit(self.base_url)
        return bool(self._token) and url.scheme == "http" and not is_loopback(url.hostname or "")

    def __repr__(self) -> str:  # the token must not show up in tracebacks
        return f"AdminClient({self.base_url!r})"

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return self._reply(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            reply = self._reply(error.code, error.read(), dict(error.headers))
            payload = reply.body if isinstance(reply.body, dict) else {}
            raise AdminError(
                error.code,
                str(payload.get("error") or f"HTTP {error.code}"),
                payload.get("problems"),
                payload.get("etag") or reply.etag,
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise AdminError(0, f"cannot reach the admin API at {self.base_url}: {reason}") from None

    @staticmethod
    def _reply(status: int, raw: bytes, headers: dict[str, str]) -> Reply:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return Reply(status, body, _unquote(headers.get("ETag")), headers)

    # -- servers ---------------------------------------------------------------------------

    def list_servers(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/servers").body["servers"])

    def get_server(self, key: str) -> tuple[dict[str, Any], str]:
        reply = self.request("GET", "/v1/servers/" + _path(*split_key(key)))
        return reply.body, reply.etag or ""

    def create_server(self, document: Any) -> Reply:
        return self.request("POST", "/v1/servers", document)

    def replace_server(self, key: str, document: Any, if_match: str | None = None) -> Reply:
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        return self.request("PUT", "/v1/servers/" + _path(*split_key(key)), document, headers)

    def delete_server(self, key: str, if_match: str | None = None) -> None:
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        self.request("DELETE", "/v1/servers/" + _path(*split_key(key)), headers=headers)

    # -- tools and namespaces --------------------------------------------------------------

    def list_tools(self, key: str) -> list[Any]:
        return list(self.request("GET", "/v1/servers/" + _path(*split_key(key)) + "/tools").body["tools"])

    def delete_tool(self, key: str, tool: str) -> None:
        self.request("DELETE", "/v1/servers/" + _path(*split_key(key), "tools", tool))

    def list_namespaces(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/v1/namespaces").body["namespaces"])

    def delete_namespace(self, namespace: str, cascade: bool = False) -> list[str]:
        query = "?cascade=true" if cascade else ""
        return list(self.request("DELETE", "/v1/namespaces/" + _path(namespace) + query).body["deleted"])

    # -- consumers -------------------------------------------------------------------------

    def list_consumers(self, namespace: str | None = None) -> list[dict[str, Any]]:
        query = "?namespace=" + urllib.parse.quote(namespace, safe="") if namespace else ""
        return list(self.request("GET", "/v1/consumers" + query).body["consumers"])

    def get_consumer(self, scope: str, name: str) -> tuple[dict[str, Any], str]:
        """`scope`: the namespace, or `_global` for a global consumer."""
        reply = self.request("GET", "/v1/consumers/" + _path(scope, name))
        return reply.body, reply.etag or ""

    def create_consumer(self, document: Any) -> Reply:
        return self.request("POST", "/v1/consumers", document)

    def replace_consumer(self, scope: str, name: str, document: Any, if_match: str | None = None) -> Reply:
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        return self.request("PUT", "/v1/consumers/" + _path(scope, name), document, headers)

    def delete_consumer(self, scope: str, name: str, if_match: str | None = None) -> None:
        headers = {"If-Match": f'"{if_match}"'} if if_match else {}
        self.request("DELETE", "/v1/consumers/" + _path(scope, name), headers=headers)

    # -- session keys ----------------------------------------------------------------------

    def list_session_keys(self) -> dict[str, Any]:
        return dict(self.request("GET", "/v1/session-keys").body)

    def rotate_session_keys(self, grace_seconds: int | None = None) -> dict[str, Any]:
        body = {} if grace_seconds is None else {"grace_seconds": grace_seconds}
        return dict(self.request("POST", "/v1/session-keys/rotate", body).body)
